// Text to tokens and back.
#pragma once

#include "model.h"

#include <vector>

namespace llmodel {

// Tokenizes text with the model's tokenizer into out.
llmodel_status tokenize_text(const llmodel_model *m, const char *text, size_t len, bool add_special,
                             bool parse_special, std::vector<llama_token> &out);

} // namespace llmodel
