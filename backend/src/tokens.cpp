// Text to tokens and back: the model's tokenizer, usable from any thread
// at any time (it only reads the vocabulary).
#include "tokens.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace llmodel {

llmodel_status tokenize_text(const llmodel_model *m, const char *text, size_t len, bool add_special,
                             bool parse_special, std::vector<llama_token> &out) {
    LLMODEL_REQUIRE(len <= INT32_MAX / 2, "text is too long");
    out.resize(len + 8);
    int32_t n = llama_tokenize(m->vocab, text, static_cast<int32_t>(len), out.data(), static_cast<int32_t>(out.size()),
                               add_special, parse_special);
    if (n < 0) {
        out.resize(static_cast<size_t>(-n));
        n = llama_tokenize(m->vocab, text, static_cast<int32_t>(len), out.data(), static_cast<int32_t>(out.size()),
                           add_special, parse_special);
    }
    if (n < 0) return fail(LLMODEL_ERR_INTERNAL, "tokenization failed");
    out.resize(static_cast<size_t>(n));
    return LLMODEL_OK;
}

} // namespace llmodel

using namespace llmodel;

extern "C" {

LLMODEL_API bool llmodel_token_is_eog(const llmodel_model *model, llmodel_token token) {
    if (!model) return false;
    ModelCall call(model);
    if (call.check() != LLMODEL_OK) return false;
    if (token < 0 || token >= llama_vocab_n_tokens(model->vocab)) return false;
    return llama_vocab_is_eog(model->vocab, token);
}

LLMODEL_API llmodel_status llmodel_tokenize(const llmodel_model *model, const char *text, size_t text_len,
                                            bool add_special, bool parse_special, llmodel_token *tokens,
                                            size_t capacity, size_t *n_out) {
    return model_entry(model, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(text || text_len == 0, "text is NULL");
        LLMODEL_REQUIRE(tokens || capacity == 0, "tokens is NULL but capacity is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        std::vector<llama_token> out;
        if (llmodel_status s = tokenize_text(model, text ? text : "", text_len, add_special, parse_special, out)) return s;
        *n_out = out.size();
        if (out.size() > capacity) return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "token buffer too small");
        std::copy(out.begin(), out.end(), tokens);
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_detokenize(const llmodel_model *model, const llmodel_token *tokens,
                                              size_t n_tokens, bool render_special, char *buf, size_t buf_size,
                                              size_t *n_out) {
    return model_entry(model, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(tokens || n_tokens == 0, "tokens is NULL");
        LLMODEL_REQUIRE(buf || buf_size == 0, "buf is NULL but buf_size is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        LLMODEL_REQUIRE(n_tokens <= INT32_MAX, "too many tokens");
        const int32_t n_vocab = llama_vocab_n_tokens(model->vocab);
        for (size_t i = 0; i < n_tokens; ++i) {
            if (tokens[i] < 0 || tokens[i] >= n_vocab) {
                return fail(LLMODEL_ERR_INVALID_ARGUMENT, "token id " + std::to_string(tokens[i]) + " is not in the vocabulary");
            }
        }
        std::string text(n_tokens * 8 + 16, '\0');
        int32_t n = llama_detokenize(model->vocab, tokens, static_cast<int32_t>(n_tokens), &text[0],
                                     static_cast<int32_t>(text.size()), false, render_special);
        if (n < 0) {
            text.resize(static_cast<size_t>(-n));
            n = llama_detokenize(model->vocab, tokens, static_cast<int32_t>(n_tokens), &text[0],
                                 static_cast<int32_t>(text.size()), false, render_special);
        }
        if (n < 0) return fail(LLMODEL_ERR_INTERNAL, "detokenization failed");
        *n_out = static_cast<size_t>(n);
        if (static_cast<size_t>(n) > buf_size) return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "text buffer too small");
        std::memcpy(buf, text.data(), static_cast<size_t>(n));
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_token_to_piece(const llmodel_model *model, llmodel_token token,
                                                  bool render_special, char *buf, size_t buf_size, size_t *n_out) {
    return model_entry(model, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(buf || buf_size == 0, "buf is NULL but buf_size is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        if (token < 0 || token >= llama_vocab_n_tokens(model->vocab)) {
            return fail(LLMODEL_ERR_INVALID_ARGUMENT, "token id " + std::to_string(token) + " is not in the vocabulary");
        }
        char tmp[256];
        int32_t n = llama_token_to_piece(model->vocab, token, tmp, sizeof tmp, 0, render_special);
        if (n < 0) return fail(LLMODEL_ERR_INTERNAL, "token piece longer than 256 bytes");
        *n_out = static_cast<size_t>(n);
        if (static_cast<size_t>(n) > buf_size) return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "piece buffer too small");
        std::memcpy(buf, tmp, static_cast<size_t>(n));
        return LLMODEL_OK;
    });
}

} // extern "C"
