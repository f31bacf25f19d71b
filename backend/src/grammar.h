// Checking a GBNF grammar before llama.cpp sees it.
#pragma once

#include <string>
#include <vector>

#include "llama.h"

namespace llmodel {

// Checks a grammar in llama.cpp's GBNF syntax, read exactly as llama.cpp's
// parser reads it, for everything that would make llama.cpp fail or worse:
// a syntax error (its parser prints those to stderr), an undefined rule, no
// rule named root, a `<token>` that is not one token of vocab, repetitions
// beyond llama.cpp's limits or too large once expanded, and left recursion,
// including the kinds llama.cpp's own check misses (a nullable rule reached
// through another rule, an unbounded repetition of something that can be
// empty), on which its matcher would recurse without end. Returns "" for a
// usable grammar, else the reason with its line and column. named_tokens:
// the tokens the grammar matches by id or by <text> (not !<...>).
std::string check_grammar(const std::string &text, const std::string &root, const llama_vocab *vocab,
                          std::vector<llama_token> *named_tokens = nullptr);

} // namespace llmodel
