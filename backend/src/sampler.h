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

// The stages, in order: penalties (repeat, frequency, presence) over a
// window of the last tokens, the logit bias, a constraint (none yet: a
// grammar goes here), truncation (top-k, top-p, min-p), temperature, and the
// choice (greedy, or a draw from the seeded distribution).
//
// The arithmetic and its order are llama.cpp's own samplers' (penalties,
// then greedy or top-k/top-p/min-p/temp/dist), so the same seed picks the
// same tokens, but the penalties touch only the tokens in their window
// instead of looking every vocabulary entry up in a hash map (which cost a
// small model a fifth of its generation speed), and greedy choice without
// penalties or bias is a plain argmax over the logits, with no candidate
// array.
class TokenSampler {
public:
    // history: the tokens before the first one sampled (the prompt), whose
    // tail fills the penalty window.
    TokenSampler(const llama_vocab *vocab, int32_t n_ctx, const llmodel_generate_params &p,
                 const std::vector<llama_token> &history);

    // Picks the next token from logits (n_vocab floats) and remembers it.
    llama_token sample(const float *logits);

private:
    bool penalized() const { return !counts_.empty(); }
    float adjusted(llama_token t, float logit) const; // penalties, then bias
    void accept(llama_token t);
    llama_token choose_greedy(const float *logits) const;

    const llama_token n_vocab_;
    const float repeat_penalty_, frequency_penalty_, presence_penalty_;
    const bool greedy_;
    std::vector<llama_token> window_; // the last tokens, a ring
    std::vector<int32_t> counts_;     // occurrences of each token in the window
    size_t next_ = 0;
    std::vector<float> bias_;         // per token; empty: no bias
    std::unique_ptr<llama_sampler, SamplerChainDeleter> chain_; // truncation, temperature, draw
    std::vector<llama_token_data> candidates_;
};

} // namespace llmodel
