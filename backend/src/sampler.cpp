// The token sampler's stages (see sampler.h).
#include "sampler.h"

#include <algorithm>
#include <cmath>

namespace llmodel {

TokenSampler::TokenSampler(const llama_vocab *vocab, int32_t n_ctx, const llmodel_generate_params &p,
                           const std::vector<llama_token> &history, llama_sampler *grammar,
                           const std::vector<llama_token> &named_tokens)
    : vocab_(vocab), n_vocab_(llama_vocab_n_tokens(vocab)), repeat_penalty_(p.repeat_penalty),
      frequency_penalty_(p.frequency_penalty), presence_penalty_(p.presence_penalty), greedy_(p.temp <= 0.0f),
      grammar_(grammar), top_k_(p.top_k), temp_(p.temp), top_p_(p.top_p), min_p_(p.min_p) {
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
    if (grammar_) {
        // a control token's text would match the grammar but never reach
        // the output (it is not rendered), so only those it names may occur
        if (bias_.empty()) bias_.assign(static_cast<size_t>(n_vocab_), 0.0f);
        for (llama_token t = 0; t < n_vocab_; ++t) {
            if ((llama_vocab_get_attr(vocab, t) & LLAMA_TOKEN_ATTR_CONTROL) && !llama_vocab_is_eog(vocab, t) &&
                std::find(named_tokens.begin(), named_tokens.end(), t) == named_tokens.end()) {
                bias_[static_cast<size_t>(t)] = -INFINITY;
            }
        }
        candidates_.resize(static_cast<size_t>(n_vocab_));
        // a grammar that names tokens matches them by id, not by their text:
        // the first-byte test below would not hold for them
        by_first_byte_ = named_tokens.empty();
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
    if (penalized() || !bias_.empty()) {
        touched_.assign(static_cast<size_t>(n_vocab_), 0);
        for (size_t i = 0; i < touched_.size(); ++i) {
            touched_[i] = (penalized() && counts_[i]) || (!bias_.empty() && bias_[i] != 0.0f);
        }
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
    // only the few tokens a penalty or bias touches need the adjustment
    const uint8_t *touched = touched_.data();
    float best = touched[0] ? adjusted(0, logits[0]) : logits[0];
    for (llama_token i = 1; i < n_vocab_; ++i) {
        const float v = touched[i] ? adjusted(i, logits[i]) : logits[i];
        if (v > best) {
            best = v;
            tok = i;
        }
    }
    return tok;
}

bool TokenSampler::allowed(llama_token t) {
    llama_token_data one{t, 0.0f, 0.0f};
    llama_token_data_array cur = {&one, 1, -1, false};
    llama_sampler_apply(grammar_.get(), &cur);
    return one.logit != -INFINITY;
}

void TokenSampler::fill_candidates(const float *logits) {
    if (touched_.empty()) {
        for (llama_token i = 0; i < n_vocab_; ++i) candidates_[i] = llama_token_data{i, logits[i], 0.0f};
        return;
    }
    const uint8_t *touched = touched_.data();
    for (llama_token i = 0; i < n_vocab_; ++i) {
        candidates_[i] = llama_token_data{i, touched[i] ? adjusted(i, logits[i]) : logits[i], 0.0f};
    }
}

// Whether the tokens not yet read can change what the truncation keeps of
// the allowed tokens found (kept of them, in order, at the front of
// candidates_; every unread token has a logit of at most `cut`, and at most
// `unread` of them can pass top-k). Top-p keeps the shortest prefix whose
// probability reaches top_p, at temperature 1, over a total that the unread
// tokens can only raise: when that prefix is the same with their largest
// possible share as with none, they cannot matter (exact). Without top-p,
// min-p drops every unread token when cut is below min_p times the best; and
// without either, they may be left out when they could hold at most a
// thousandth of the probability mass (at temp, or 1 where lower).
bool TokenSampler::unread_irrelevant(size_t kept, float cut, size_t unread) const {
    const float best = candidates_[0].logit;
    if (top_p_ < 1.0f) {
        double mass = 0.0;
        for (size_t i = 0; i < kept; ++i) mass += std::exp(static_cast<double>(candidates_[i].logit - best));
        const double rest = static_cast<double>(unread) * std::exp(static_cast<double>(cut - best));
        double cum = 0.0;
        size_t low = 0, high = 0; // the prefixes top-p keeps with no unread share, and with the largest
        for (size_t i = 0; i < kept && !high; ++i) {
            cum += std::exp(static_cast<double>(candidates_[i].logit - best));
            if (!low && cum >= top_p_ * mass) low = i + 1;
            if (cum >= top_p_ * (mass + rest)) high = i + 1;
        }
        return high != 0 && high == low;
    }
    if (min_p_ > 0.0f) return std::exp(static_cast<double>(cut - best)) < min_p_;
    const double t = std::max(temp_, 1.0f);
    double mass = 0.0;
    for (size_t i = 0; i < kept; ++i) mass += std::exp((candidates_[i].logit - best) / t);
    return static_cast<double>(unread) * std::exp((cut - best) / t) <= 1e-3 * mass;
}

// Keeps, at the front of candidates_, the allowed tokens among the most
// likely, in order, and returns their number: at least `needed` of them
// (what top-k keeps; one for greedy) where that many exist, or fewer once the
// tokens not yet read cannot change the choice (unread_irrelevant); every
// token left out is less likely than every token kept. Reading the
// candidates in growing chunks from the most likely down spares most of the
// vocabulary the grammar's test, which costs about 0.2 us a token.
// Groups the vocabulary by the first byte of each token's text, with a
// token whose text is that byte alone where there is one: when the grammar
// rejects that one-byte token, it rejects every token of the group (it reads
// text a byte sequence at a time), so one test stands for the whole group.
void TokenSampler::group_by_first_byte() {
    first_byte_.assign(static_cast<size_t>(n_vocab_), -1);
    probe_.assign(256, LLAMA_TOKEN_NULL);
    char buf[256];
    for (llama_token t = 0; t < n_vocab_; ++t) {
        if (llama_vocab_is_eog(vocab_, t) || (llama_vocab_get_attr(vocab_, t) & LLAMA_TOKEN_ATTR_CONTROL)) continue;
        const int32_t len = llama_token_to_piece(vocab_, t, buf, sizeof buf, 0, true);
        if (len <= 0) continue; // empty, or longer than any test needs: checked alone
        const auto b = static_cast<unsigned char>(buf[0]);
        first_byte_[static_cast<size_t>(t)] = b;
        if (len == 1 && probe_[b] == LLAMA_TOKEN_NULL) probe_[b] = t;
    }
    grouped_ = true;
}

// Keeps, at the front of candidates_, the allowed tokens among the most
// likely, in order, and returns their number: at least `needed` of them
// (what top-k keeps; one for greedy) where that many exist, or fewer once the
// tokens not yet read cannot change the choice (unread_irrelevant); every
// token left out is less likely than every token kept. Reading the
// candidates in growing chunks from the most likely down, and skipping the
// groups whose first byte the grammar rejects, spares most of the
// vocabulary the grammar's test, which costs about 0.2 us a token.
size_t TokenSampler::constrain(size_t needed) {
    auto more_likely = [](const llama_token_data &a, const llama_token_data &b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    bool rejected[256] = {};
    if (by_first_byte_) {
        if (!grouped_) group_by_first_byte();
        scratch_.clear();
        for (llama_token t : probe_) {
            if (t != LLAMA_TOKEN_NULL) scratch_.push_back(llama_token_data{t, 0.0f, 0.0f});
        }
        llama_token_data_array cur = {scratch_.data(), scratch_.size(), -1, false};
        llama_sampler_apply(grammar_.get(), &cur);
        for (size_t i = 0; i < scratch_.size(); ++i) {
            if (scratch_[i].logit == -INFINITY) rejected[first_byte_[static_cast<size_t>(scratch_[i].id)]] = true;
        }
    }
    const size_t n = candidates_.size();
    size_t kept = 0, begin = 0, chunk = std::max<size_t>(256, needed * 4);
    while (begin < n && kept < needed) {
        const size_t end = std::min(n, begin + chunk);
        // the next most likely `chunk`, in order (selection is linear; a heap over the vocabulary is not)
        if (end < n) std::nth_element(candidates_.begin() + begin, candidates_.begin() + end - 1, candidates_.end(), more_likely);
        std::sort(candidates_.begin() + begin, candidates_.begin() + end, more_likely);
        const float cut = candidates_[end - 1].logit; // no token not yet read is more likely
        scratch_.clear();
        for (size_t i = begin; i < end; ++i) {
            const llama_token_data &c = candidates_[i];
            if (c.logit == -INFINITY) continue;
            if (by_first_byte_) {
                const int16_t b = first_byte_[static_cast<size_t>(c.id)];
                if (b >= 0 && rejected[b]) continue;
            }
            scratch_.push_back(c);
        }
        llama_token_data_array cur = {scratch_.data(), scratch_.size(), -1, true};
        if (!scratch_.empty()) llama_sampler_apply(grammar_.get(), &cur);
        for (const llama_token_data &c : scratch_) {
            if (c.logit != -INFINITY) candidates_[kept++] = c;
        }
        begin = end;
        if (kept > 0 && kept < needed && begin < n && unread_irrelevant(kept, cut, std::min(n - begin, needed - kept))) break;
        chunk *= 8; // a grammar that allows few tokens: read on in larger steps
    }
    return kept;
}

llama_token TokenSampler::sample_constrained(const float *logits) {
    fill_candidates(logits);
    const size_t needed = greedy_ ? 1 : top_k_ > 0 ? static_cast<size_t>(top_k_) : candidates_.size();
    const size_t kept = constrain(needed);
    if (kept == 0) return kNoAllowedToken;
    if (greedy_) return candidates_[0].id;
    llama_token_data_array cur = {candidates_.data(), kept, -1, true};
    llama_sampler_apply(chain_.get(), &cur);
    return cur.data[cur.selected].id;
}

llama_token TokenSampler::sample(const float *logits) {
    llama_token tok;
    if (greedy_) {
        tok = choose_greedy(logits);
        if (grammar_ && (adjusted(tok, logits[tok]) == -INFINITY || !allowed(tok))) tok = sample_constrained(logits);
    } else {
        fill_candidates(logits);
        llama_token_data_array cur = {candidates_.data(), candidates_.size(), -1, false};
        llama_sampler_apply(chain_.get(), &cur);
        tok = cur.data[cur.selected].id;
        if (grammar_ && (cur.data[cur.selected].logit == -INFINITY || !allowed(tok))) tok = sample_constrained(logits);
        if (tok != kNoAllowedToken) llama_sampler_accept(chain_.get(), tok);
    }
    if (tok == kNoAllowedToken) return tok;
    if (grammar_) llama_sampler_accept(grammar_.get(), tok); // allowed, so it cannot fail
    accept(tok);
    return tok;
}

void TokenSampler::accept(llama_token t) {
    if (window_.empty() || t < 0 || t >= n_vocab_) return;
    llama_token &slot = window_[next_];
    if (slot != LLAMA_TOKEN_NULL && --counts_[static_cast<size_t>(slot)] == 0 && !touched_.empty()) {
        touched_[static_cast<size_t>(slot)] = !bias_.empty() && bias_[static_cast<size_t>(slot)] != 0.0f;
    }
    slot = t;
    ++counts_[static_cast<size_t>(t)];
    if (!touched_.empty()) touched_[static_cast<size_t>(t)] = 1;
    next_ = (next_ + 1) % window_.size();
}

} // namespace llmodel
