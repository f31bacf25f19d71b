// Choosing each next token: a pipeline of stages over one row of logits.
#pragma once

#include "llmodel.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "llama.h"

namespace llmodel {

struct SamplerChainDeleter {
    void operator()(llama_sampler *s) const { llama_sampler_free(s); }
};

// What sample() returns when the constraint allows no token at all.
constexpr llama_token kNoAllowedToken = -2;

// The stages, in order: penalties (repeat, frequency, presence) over a
// window of the last tokens, the logit bias, the constraint (a grammar),
// truncation (top-k, top-p, min-p), temperature, and the choice (greedy, or a
// draw from the seeded distribution).
//
// The arithmetic and its order are llama.cpp's own samplers' (penalties,
// then greedy or top-k/top-p/min-p/temp/dist), so the same seed picks the
// same tokens, but the penalties touch only the tokens in their window
// instead of looking every vocabulary entry up in a hash map (which cost a
// small model a fifth of its generation speed), and greedy choice without
// penalties or bias is a plain argmax over the logits, with no candidate
// array.
//
// The grammar costs little when the model writes what it allows: the token
// chosen without it is checked alone, and only when the grammar rejects it
// are the candidates filtered and the choice made again (llama.cpp's own
// sampler does the same; the result has the same distribution as filtering
// first). The filtering itself goes through the candidates from the most
// likely down and stops once it has as many allowed tokens as the
// truncation keeps (one for greedy, top_k), or once the tokens not yet read
// cannot change what top-p or min-p keep (or, with neither, could hold no
// more than a thousandth of the probability mass of those found), so it
// rarely reads the whole vocabulary (which costs ~10 ms).
class TokenSampler {
public:
    // history: the tokens before the first one sampled (the prompt), whose
    // tail fills the penalty window.
    // grammar: a grammar sampler (owned), or NULL; named_tokens: the tokens
    // it names (control tokens it does not name are banned while it is on:
    // their text would never reach the output).
    TokenSampler(const llama_vocab *vocab, int32_t n_ctx, const llmodel_generate_params &p,
                 const std::vector<llama_token> &history, llama_sampler *grammar = nullptr,
                 const std::vector<llama_token> &named_tokens = {});

    // Picks the next token from logits (n_vocab floats) and remembers it;
    // kNoAllowedToken when the constraint allows none.
    llama_token sample(const float *logits);

private:
    bool penalized() const { return !counts_.empty(); }
    float adjusted(llama_token t, float logit) const; // penalties, then bias
    void accept(llama_token t);
    llama_token choose_greedy(const float *logits) const;
    bool allowed(llama_token t);
    void fill_candidates(const float *logits);
    size_t constrain(size_t needed);
    bool unread_irrelevant(size_t kept, float cut, size_t unread) const;
    void group_by_first_byte();
    llama_token sample_constrained(const float *logits);

    const llama_vocab *vocab_;
    const llama_token n_vocab_;
    const float repeat_penalty_, frequency_penalty_, presence_penalty_;
    const bool greedy_;
    std::vector<llama_token> window_; // the last tokens, a ring
    std::vector<int32_t> counts_;     // occurrences of each token in the window
    size_t next_ = 0;
    std::vector<float> bias_;         // per token; empty: no bias
    // per token: 1 where a penalty or a bias applies (greedy's fast scan);
    // empty when neither is in use
    std::vector<uint8_t> touched_;
    std::unique_ptr<llama_sampler, SamplerChainDeleter> chain_; // truncation, temperature, draw
    std::unique_ptr<llama_sampler, SamplerChainDeleter> grammar_;
    const int32_t top_k_;
    const float temp_, top_p_, min_p_;
    std::vector<llama_token_data> candidates_;
    std::vector<llama_token_data> scratch_;    // the candidates a grammar test reads
    bool by_first_byte_ = false;               // skip groups whose first byte the grammar rejects
    bool grouped_ = false;
    std::vector<int16_t> first_byte_;          // per token; -1: tested alone
    std::vector<llama_token> probe_;           // per byte: a token of that byte alone, or NULL
};

} // namespace llmodel
