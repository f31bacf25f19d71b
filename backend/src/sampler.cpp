// The token sampler's stages (see sampler.h).
#include "sampler.h"

#include <algorithm>

namespace llmodel {

TokenSampler::TokenSampler(const llama_vocab *vocab, int32_t n_ctx, const llmodel_generate_params &p,
                           const std::vector<llama_token> &history)
    : n_vocab_(llama_vocab_n_tokens(vocab)), repeat_penalty_(p.repeat_penalty),
      frequency_penalty_(p.frequency_penalty), presence_penalty_(p.presence_penalty), greedy_(p.temp <= 0.0f) {
    // the window never needs to be longer than the context
    const int32_t last_n = p.repeat_last_n < 0 ? n_ctx : std::min(p.repeat_last_n, n_ctx);
    const bool any_penalty = repeat_penalty_ != 1.0f || frequency_penalty_ != 0.0f || presence_penalty_ != 0.0f;
    if (any_penalty && last_n > 0) {
        window_.assign(static_cast<size_t>(last_n), LLAMA_TOKEN_NULL);
        counts_.assign(static_cast<size_t>(n_vocab_), 0);
        // the penalties look back over the context, the prompt included
        const size_t start = history.size() > static_cast<size_t>(last_n) ? history.size() - last_n : 0;
        for (size_t i = start; i < history.size(); ++i) accept(history[i]);
    }
    if (p.logit_bias && p.n_logit_bias > 0) {
        bias_.assign(static_cast<size_t>(n_vocab_), 0.0f);
        for (size_t i = 0; i < p.n_logit_bias; ++i) bias_[static_cast<size_t>(p.logit_bias[i].token)] += p.logit_bias[i].bias;
    }
    if (!greedy_) {
        llama_sampler_chain_params cp = llama_sampler_chain_default_params();
        cp.no_perf = true;
        chain_.reset(llama_sampler_chain_init(cp));
        if (p.top_k > 0) llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_k(p.top_k));
        if (p.top_p < 1.0f) llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_p(p.top_p, 1));
        if (p.min_p > 0.0f) llama_sampler_chain_add(chain_.get(), llama_sampler_init_min_p(p.min_p, 1));
        llama_sampler_chain_add(chain_.get(), llama_sampler_init_temp(p.temp));
        llama_sampler_chain_add(chain_.get(),
                                llama_sampler_init_dist(p.seed == LLMODEL_SEED_RANDOM ? LLAMA_DEFAULT_SEED : p.seed));
        candidates_.resize(static_cast<size_t>(n_vocab_));
    }
}

float TokenSampler::adjusted(llama_token t, float logit) const {
    const size_t i = static_cast<size_t>(t);
    if (penalized()) {
        if (const int32_t count = counts_[i]) {
            if (repeat_penalty_ != 1.0f) logit = logit <= 0 ? logit * repeat_penalty_ : logit / repeat_penalty_;
            logit -= static_cast<float>(count) * frequency_penalty_ + presence_penalty_;
        }
    }
    if (!bias_.empty()) logit += bias_[i];
    return logit;
}

llama_token TokenSampler::choose_greedy(const float *logits) const {
    // the first of the largest, as llama.cpp's greedy sampler picks
    llama_token tok = 0;
    if (!penalized() && bias_.empty()) {
        float best = logits[0];
        for (llama_token i = 1; i < n_vocab_; ++i) {
            if (logits[i] > best) {
                best = logits[i];
                tok = i;
            }
        }
        return tok;
    }
    float best = adjusted(0, logits[0]);
    for (llama_token i = 1; i < n_vocab_; ++i) {
        const float v = adjusted(i, logits[i]);
        if (v > best) {
            best = v;
            tok = i;
        }
    }
    return tok;
}

llama_token TokenSampler::sample(const float *logits) {
    llama_token tok;
    if (greedy_) {
        tok = choose_greedy(logits);
    } else {
        for (llama_token i = 0; i < n_vocab_; ++i) candidates_[i] = llama_token_data{i, adjusted(i, logits[i]), 0.0f};
        llama_token_data_array cur = {candidates_.data(), candidates_.size(), -1, false};
        // the constraint stage goes here, before truncation
        llama_sampler_apply(chain_.get(), &cur);
        tok = cur.data[cur.selected].id;
        llama_sampler_accept(chain_.get(), tok);
    }
    accept(tok);
    return tok;
}

void TokenSampler::accept(llama_token t) {
    if (window_.empty() || t < 0 || t >= n_vocab_) return;
    llama_token &slot = window_[next_];
    if (slot != LLAMA_TOKEN_NULL) --counts_[static_cast<size_t>(slot)];
    slot = t;
    ++counts_[static_cast<size_t>(t)];
    next_ = (next_ + 1) % window_.size();
}

} // namespace llmodel
