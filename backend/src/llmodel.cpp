// Models: loading, facts, tokens, generation and state, over llama.cpp.
#include "internal.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <vector>

#include "gguf.h"
#include "llama.h"

using namespace llmodel;

struct llmodel_stream;

// The guard state of a model (llmodel_model::state).
enum : int {
    kBusy = 1,         // a call is running on the model
    kFreePending = 2,  // freed during a call: the call frees it as it returns
    kClosePending = 4, // closed from inside one of its own callbacks
};

struct llmodel_model {
    std::atomic<int> state{0};
    std::atomic<std::thread::id> owner{}; // the thread inside the running call
    std::atomic<bool> cancel{false};      // llmodel_cancel: the running call stops early
    bool closed = false;
    llmodel_stream *stream = nullptr; // the open stream, if any: it owns the cache until it ends
    llama_model *model = nullptr;
    llama_context *ctx = nullptr;
    const llama_vocab *vocab = nullptr;
    std::vector<llama_token> tokens; // what the KV cache holds, position by position
    int32_t n_threads = 1;
    int32_t n_batch = 512;
    int32_t n_ctx = 0; // as asked for: llama.cpp may round its own up
    int32_t n_gpu_layers = 0;
    std::string arch, name, chat_template, backend, device, device_description;
    bool has_chat_template = false;
    // a mapped file must stay as it was loaded: what it looked like then
    std::string path;
    bool mapped = false;
    struct stat file_stat {};

    void release() {
        if (ctx) llama_free(ctx);
        if (model) llama_model_free(model);
        ctx = nullptr;
        model = nullptr;
        vocab = nullptr;
        tokens.clear();
        closed = true;
    }
    // Whether the running call must stop now (cancelled, closed or freed meanwhile).
    bool stop_requested() const {
        return cancel.load(std::memory_order_relaxed) ||
               (state.load(std::memory_order_relaxed) & (kFreePending | kClosePending)) != 0;
    }
    ~llmodel_model() { release(); }
};

// Frees a model; a stream still open on it is detached and outlives it.
static void destroy_model(llmodel_model *m);

namespace {

// Holds a handle for one call; a second concurrent call is refused. A close
// or free asked for during the call (from a callback, or a free from another
// thread) is carried out here, as the call returns.
class CallGuard {
public:
    explicit CallGuard(const llmodel_model *m) : m_(const_cast<llmodel_model *>(m)) {
        int idle = 0;
        acquired_ = m_->state.compare_exchange_strong(idle, kBusy, std::memory_order_acquire);
        if (acquired_) {
            m_->owner.store(std::this_thread::get_id(), std::memory_order_relaxed);
            m_->cancel.store(false, std::memory_order_relaxed); // a cancel targets the call it found running
        }
    }
    ~CallGuard() {
        if (!acquired_) return;
        if (m_->state.load(std::memory_order_relaxed) & kClosePending) m_->release(); // set on this thread only
        m_->owner.store(std::thread::id(), std::memory_order_relaxed);
        const int prev = m_->state.fetch_and(~(kBusy | kClosePending), std::memory_order_acq_rel);
        if (prev & kFreePending) destroy_model(m_);
    }
    // The status to return right away, or LLMODEL_OK to go on.
    llmodel_status check() const {
        if (!acquired_) {
            if (m_->state.load(std::memory_order_relaxed) & kFreePending) {
                return fail(LLMODEL_ERR_CLOSED, "the model is being freed");
            }
            return fail(LLMODEL_ERR_BUSY, "another call is in progress on this model "
                                          "(one call at a time per model handle)");
        }
        if (m_->closed) return fail(LLMODEL_ERR_CLOSED, "the model is closed");
        return LLMODEL_OK;
    }
    CallGuard(const CallGuard &) = delete;
    CallGuard &operator=(const CallGuard &) = delete;

private:
    llmodel_model *m_;
    bool acquired_ = false;
};

// Runs an entry point's body; no exception leaves the library.
template <class F> llmodel_status guarded(F &&body) {
    try {
        clear_error();
        return body();
    } catch (const std::bad_alloc &) {
        return fail(LLMODEL_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception &e) {
        return fail(LLMODEL_ERR_INTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
        return fail(LLMODEL_ERR_INTERNAL, "internal error");
    }
}

#define LLMODEL_REQUIRE(cond, msg) \
    do { if (!(cond)) return fail(LLMODEL_ERR_INVALID_ARGUMENT, (msg)); } while (0)

std::string human_bytes(double b) {
    char buf[64];
    if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1024.0 * 1024 * 1024));
    else std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
    return buf;
}

// Memory this process could still get, or 0 if unknown.
uint64_t available_memory() {
#if defined(__linux__)
    std::ifstream f("/proc/meminfo");
    std::string key;
    uint64_t kb;
    std::string unit;
    while (f >> key >> kb) {
        std::getline(f, unit);
        if (key == "MemAvailable:") return kb * 1024;
    }
#endif
    return 0;
}

std::string meta_string(const llama_model *model, const char *key) {
    int32_t n = llama_model_meta_val_str(model, key, nullptr, 0);
    if (n < 0) return "";
    std::string s(static_cast<size_t>(n) + 1, '\0');
    llama_model_meta_val_str(model, key, &s[0], s.size());
    s.resize(static_cast<size_t>(n));
    return s;
}

int32_t meta_int(const llama_model *model, const std::string &key, int32_t fallback) {
    std::string s = meta_string(model, key.c_str());
    if (s.empty()) return fallback;
    try {
        return std::stoi(s);
    } catch (...) {
        return fallback;
    }
}

// Bytes of KV cache a context of n_ctx tokens needs (f16 K and V), roughly.
double kv_cache_bytes(const llama_model *model, const std::string &arch, int32_t n_ctx) {
    const int32_t n_head = std::max(1, llama_model_n_head(model));
    const int32_t n_head_kv = std::max(1, llama_model_n_head_kv(model));
    const int32_t head_dim = meta_int(model, arch + ".attention.key_length", llama_model_n_embd(model) / n_head);
    return 2.0 * 2.0 * n_ctx * llama_model_n_layer(model) * n_head_kv * head_dim;
}

// Length of the longest prefix of s that does not end inside a UTF-8 character.
size_t complete_utf8_prefix(const std::string &s) {
    const size_t n = s.size();
    // Look back at most 3 bytes for the lead byte of a trailing character.
    for (size_t back = 1; back <= 4 && back <= n; ++back) {
        unsigned char c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) continue; // continuation byte
        size_t len = (c & 0x80) == 0 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return len > back ? n - back : n;
    }
    return n; // stray continuation bytes: nothing to wait for
}

llmodel_status validate_generate_params(const llmodel_generate_params &p) {
    LLMODEL_REQUIRE(std::isfinite(p.temp), "temp must be a finite number");
    LLMODEL_REQUIRE(std::isfinite(p.top_p) && p.top_p >= 0.0f, "top_p must be 0 or more");
    LLMODEL_REQUIRE(std::isfinite(p.min_p) && p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p must be between 0 and 1");
    LLMODEL_REQUIRE(std::isfinite(p.repeat_penalty) && p.repeat_penalty > 0.0f, "repeat_penalty must be greater than 0");
    LLMODEL_REQUIRE(p.repeat_last_n >= -1, "repeat_last_n must be -1 or more");
    LLMODEL_REQUIRE(p.n_predict >= -1, "n_predict must be -1 or more");
    LLMODEL_REQUIRE(p.n_batch >= 0, "n_batch must be 0 or more");
    LLMODEL_REQUIRE(p.n_keep >= 0, "n_keep must be 0 or more");
    LLMODEL_REQUIRE(p.top_k >= -1, "top_k must be -1 or more");
    return LLMODEL_OK;
}

struct SamplerDeleter {
    void operator()(llama_sampler *s) const { llama_sampler_free(s); }
};
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;

// Picks each next token. Same arithmetic, same order and same result as
// llama.cpp's penalties sampler followed by greedy or top-k/top-p/min-p/
// temperature/dist, but the repeat penalty touches only the tokens in its
// window instead of looking every vocabulary entry up in a hash map (which
// cost a small model a fifth of its generation speed), and greedy decoding
// is an argmax over the logits, with no candidate array.
class TokenSampler {
public:
    TokenSampler(const llmodel_model *m, const llmodel_generate_params &p)
        : n_vocab_(llama_vocab_n_tokens(m->vocab)), penalty_(p.repeat_penalty), greedy_(p.temp <= 0.0f) {
        // the window never needs to be longer than the context
        const int32_t last_n = p.repeat_last_n < 0 ? m->n_ctx : std::min(p.repeat_last_n, m->n_ctx);
        if (penalty_ != 1.0f && last_n > 0) {
            window_.assign(static_cast<size_t>(last_n), LLAMA_TOKEN_NULL);
            counts_.assign(static_cast<size_t>(n_vocab_), 0);
            // the penalty looks back over the context, the prompt included
            const size_t start = m->tokens.size() > static_cast<size_t>(last_n) ? m->tokens.size() - last_n : 0;
            for (size_t i = start; i < m->tokens.size(); ++i) accept(m->tokens[i]);
        }
        if (!greedy_) {
            llama_sampler_chain_params cp = llama_sampler_chain_default_params();
            cp.no_perf = true;
            chain_.reset(llama_sampler_chain_init(cp));
            if (p.top_k > 0) llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_k(p.top_k));
            if (p.top_p < 1.0f) llama_sampler_chain_add(chain_.get(), llama_sampler_init_top_p(p.top_p, 1));
            if (p.min_p > 0.0f) llama_sampler_chain_add(chain_.get(), llama_sampler_init_min_p(p.min_p, 1));
            llama_sampler_chain_add(chain_.get(), llama_sampler_init_temp(p.temp));
            llama_sampler_chain_add(chain_.get(), llama_sampler_init_dist(p.seed == LLMODEL_SEED_RANDOM ? LLAMA_DEFAULT_SEED : p.seed));
            candidates_.resize(static_cast<size_t>(n_vocab_));
        }
    }

    llama_token sample(llama_context *ctx) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        llama_token tok;
        if (greedy_) {
            // the first of the largest, as llama.cpp's greedy sampler picks
            tok = 0;
            float best = penalized(0, logits[0]);
            for (llama_token i = 1; i < n_vocab_; ++i) {
                const float v = penalized(i, logits[i]);
                if (v > best) {
                    best = v;
                    tok = i;
                }
            }
        } else {
            for (llama_token i = 0; i < n_vocab_; ++i) candidates_[i] = llama_token_data{i, penalized(i, logits[i]), 0.0f};
            llama_token_data_array cur = {candidates_.data(), candidates_.size(), -1, false};
            llama_sampler_apply(chain_.get(), &cur);
            tok = cur.data[cur.selected].id;
            llama_sampler_accept(chain_.get(), tok);
        }
        accept(tok);
        return tok;
    }

private:
    float penalized(llama_token t, float logit) const {
        if (counts_.empty() || counts_[static_cast<size_t>(t)] == 0) return logit;
        return logit <= 0 ? logit * penalty_ : logit / penalty_;
    }

    void accept(llama_token t) {
        if (window_.empty() || t < 0 || t >= n_vocab_) return;
        llama_token &slot = window_[next_];
        if (slot != LLAMA_TOKEN_NULL) --counts_[static_cast<size_t>(slot)];
        slot = t;
        ++counts_[static_cast<size_t>(t)];
        next_ = (next_ + 1) % window_.size();
    }

    const llama_token n_vocab_;
    const float penalty_;
    const bool greedy_;
    std::vector<llama_token> window_; // the last tokens, a ring
    std::vector<int32_t> counts_;     // occurrences of each token in the window
    size_t next_ = 0;
    SamplerPtr chain_;
    std::vector<llama_token_data> candidates_;
};

// Makes room for one more token by dropping the oldest after n_keep.
bool shift_context(llmodel_model *m, int32_t n_keep) {
    llama_memory_t mem = llama_get_memory(m->ctx);
    if (!llama_memory_can_shift(mem)) return false;
    const int32_t n_past = static_cast<int32_t>(m->tokens.size());
    n_keep = std::min(n_keep, n_past - 2);
    if (n_keep < 0) n_keep = 0;
    const int32_t n_discard = (n_past - n_keep) / 2;
    if (n_discard <= 0) return false;
    llama_memory_seq_rm(mem, 0, n_keep, n_keep + n_discard);
    llama_memory_seq_add(mem, 0, n_keep + n_discard, n_past, -n_discard);
    m->tokens.erase(m->tokens.begin() + n_keep, m->tokens.begin() + n_keep + n_discard);
    return true;
}

void forget_all(llmodel_model *m) {
    llama_memory_clear(llama_get_memory(m->ctx), true);
    m->tokens.clear();
}

llmodel_status decode_failed(llmodel_model *m, int32_t ret, const LogCapture &capture) {
    // aborted: llama.cpp took the batch's entries out again, and m->tokens
    // never had them, so what stays cached is still right
    if (ret == 2) return fail(LLMODEL_ERR_CANCELLED, "the call was cancelled");
    forget_all(m); // the cache may be half-written: start the next call clean
    std::string why = last_lines(capture.text());
    if (ret == 1) {
        return fail(LLMODEL_ERR_CONTEXT_OVERFLOW, "no room left in the context for the batch" +
                                                      (why.empty() ? std::string() : " (" + why + ")"));
    }
    return fail(LLMODEL_ERR_BACKEND, "llama_decode failed with code " + std::to_string(ret) +
                                         (why.empty() ? std::string() : ": " + why));
}

} // namespace

// One generation: the prompt evaluated, then one token per step. Both the
// callback API (llmodel_generate) and the pull API (llmodel_stream_*) run it.
struct llmodel_stream {
    llmodel_model *m = nullptr; // NULL once the model is freed
    llmodel_generate_params p{};
    std::unique_ptr<TokenSampler> sampler;
    llmodel_generate_result res{};
    std::string pending;                  // bytes of a character not yet complete
    std::string text;                     // what the last step handed out
    std::vector<char> piece = std::vector<char>(64);
    std::chrono::steady_clock::time_point t1;
    llama_token undecoded = LLAMA_TOKEN_NULL; // handed out, not yet in the cache
    bool finished = false;
};

namespace {

using Clock = std::chrono::steady_clock;

void finish_stream(llmodel_stream &g, llmodel_stop_reason reason) {
    g.finished = true;
    g.res.stop_reason = reason;
    g.res.n_past = static_cast<int32_t>(g.m->tokens.size());
    g.res.generate_ms = std::chrono::duration<double, std::milli>(Clock::now() - g.t1).count();
    if (!g.pending.empty()) g.text = "\xEF\xBF\xBD"; // an incomplete character: U+FFFD
    g.pending.clear();
}

// After the common prefix (keep tokens), a chat whose oldest turns were
// dropped continues with cached tokens further on: finds the shortest gap
// whose removal lines the cache up with the prompt again, takes it out of the
// cache and shifts what follows into place, instead of evaluating it all
// again. Returns the new length of the reused prefix.
size_t reuse_after_gap(llmodel_model *m, const std::vector<llama_token> &prompt, size_t keep) {
    llama_memory_t mem = llama_get_memory(m->ctx);
    const size_t n_cached = m->tokens.size();
    if (keep >= n_cached || keep >= prompt.size() || !llama_memory_can_shift(mem)) return keep;
    // a match must run this far (or to the end of the cache) to be trusted
    const size_t min_run = std::min<size_t>(64, prompt.size() - keep);
    for (size_t gap = 1; keep + gap < n_cached; ++gap) {
        size_t run = 0;
        while (keep + gap + run < n_cached && keep + run < prompt.size() &&
               m->tokens[keep + gap + run] == prompt[keep + run]) {
            ++run;
        }
        if (run == 0 || (run < min_run && keep + gap + run < n_cached)) continue;
        const llama_pos from = static_cast<llama_pos>(keep), to = static_cast<llama_pos>(keep + gap);
        if (!llama_memory_seq_rm(mem, 0, from, to)) return keep;
        llama_memory_seq_add(mem, 0, to, static_cast<llama_pos>(n_cached), -static_cast<llama_pos>(gap));
        m->tokens.erase(m->tokens.begin() + keep, m->tokens.begin() + keep + gap);
        return keep + run;
    }
    return keep;
}

// Evaluates the prompt (reusing the cached prefix) and readies the sampler.
llmodel_status start_stream(llmodel_stream &g, const std::vector<llama_token> &prompt,
                            llmodel_prompt_callback on_prompt, void *user_data) {
    llmodel_model *m = g.m;
    const llmodel_generate_params &p = g.p;
    llmodel_generate_result &res = g.res;
    res.n_prompt = static_cast<int32_t>(prompt.size());
    const int32_t n_ctx = m->n_ctx;
    if (prompt.empty()) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "the prompt is empty");
    if (res.n_prompt > n_ctx) {
        return fail(LLMODEL_ERR_CONTEXT_OVERFLOW, "the prompt has " + std::to_string(prompt.size()) +
                                                      " tokens but the context holds only " +
                                                      std::to_string(n_ctx) + " (load the model with a larger n_ctx)");
    }
    for (llama_token t : prompt) {
        if (t < 0 || t >= llama_vocab_n_tokens(m->vocab)) {
            return fail(LLMODEL_ERR_INVALID_ARGUMENT, "token id " + std::to_string(t) + " is not in the vocabulary");
        }
    }
    LogCapture capture;

    // Reuse the cached prefix; at least one token is evaluated, for its logits.
    size_t keep = 0;
    while (keep < m->tokens.size() && keep < prompt.size() && m->tokens[keep] == prompt[keep]) ++keep;
    if (p.reuse_shifted) keep = reuse_after_gap(m, prompt, keep);
    if (keep == prompt.size()) --keep;
    if (keep < m->tokens.size()) {
        if (!llama_memory_seq_rm(llama_get_memory(m->ctx), 0, static_cast<llama_pos>(keep), -1)) {
            forget_all(m); // this cache cannot drop a suffix (e.g. a recurrent model)
            keep = 0;
        }
        m->tokens.resize(keep);
    }
    res.n_reused = static_cast<int32_t>(keep);

    const auto t0 = Clock::now();
    const int32_t n_batch = (p.n_batch <= 0 || p.n_batch > m->n_batch) ? m->n_batch : p.n_batch;
    const int32_t n_todo = static_cast<int32_t>(prompt.size() - keep);
    for (size_t i = keep; i < prompt.size();) {
        if (m->stop_requested()) {
            res.n_past = static_cast<int32_t>(m->tokens.size());
            return fail(LLMODEL_ERR_CANCELLED, "the call was cancelled");
        }
        const int32_t n = std::min<int32_t>(n_batch, static_cast<int32_t>(prompt.size() - i));
        int32_t ret = llama_decode(m->ctx, llama_batch_get_one(const_cast<llama_token *>(&prompt[i]), n));
        if (ret != 0) {
            res.n_past = static_cast<int32_t>(m->tokens.size());
            return decode_failed(m, ret, capture);
        }
        m->tokens.insert(m->tokens.end(), prompt.begin() + i, prompt.begin() + i + n);
        i += n;
        res.n_evaluated += n;
        if (on_prompt && !on_prompt(res.n_evaluated, n_todo, user_data)) {
            res.n_past = static_cast<int32_t>(m->tokens.size());
            return fail(LLMODEL_ERR_CANCELLED, "prompt processing was cancelled by the callback");
        }
    }
    g.t1 = Clock::now();
    res.prompt_ms = std::chrono::duration<double, std::milli>(g.t1 - t0).count();
    g.sampler.reset(new TokenSampler(m, p));
    return LLMODEL_OK;
}

// Generates one token: its id in *token and its text in g.text (complete
// UTF-8 characters only). At the end *token is LLMODEL_TOKEN_NONE; g.text
// may then still hold a last U+FFFD, and *done says whether anything is left.
llmodel_status step_stream(llmodel_stream &g, llmodel_token *token, bool *done) {
    llmodel_model *m = g.m;
    const llmodel_generate_params &p = g.p;
    llmodel_generate_result &res = g.res;
    g.text.clear();
    *token = LLMODEL_TOKEN_NONE;
    *done = false;
    if (g.finished) {
        *done = true;
        return LLMODEL_OK;
    }
    auto finish = [&](llmodel_stop_reason reason) {
        finish_stream(g, reason);
        *done = g.text.empty();
        return LLMODEL_OK;
    };
    if (p.n_predict >= 0 && res.n_generated >= p.n_predict) return finish(LLMODEL_STOP_LENGTH);
    if (m->stop_requested()) return finish(LLMODEL_STOP_CANCELLED);
    if (g.undecoded != LLAMA_TOKEN_NULL) {
        // the token handed out last time goes into the cache only now, when
        // the caller wants another
        if (static_cast<int32_t>(m->tokens.size()) >= m->n_ctx) {
            if (!p.context_shift || !shift_context(m, p.n_keep)) return finish(LLMODEL_STOP_CONTEXT_FULL);
        }
        LogCapture capture;
        llama_token tok = g.undecoded;
        int32_t ret = llama_decode(m->ctx, llama_batch_get_one(&tok, 1));
        if (ret == 2) return finish(LLMODEL_STOP_CANCELLED); // the token never reached the cache
        if (ret != 0) {
            g.finished = true;
            return decode_failed(m, ret, capture);
        }
        m->tokens.push_back(tok);
        g.undecoded = LLAMA_TOKEN_NULL;
    }
    const llama_token tok = g.sampler->sample(m->ctx);
    if (llama_vocab_is_eog(m->vocab, tok)) return finish(LLMODEL_STOP_EOG);
    int32_t len = llama_token_to_piece(m->vocab, tok, g.piece.data(), static_cast<int32_t>(g.piece.size()), 0, false);
    if (len < 0) {
        g.piece.resize(static_cast<size_t>(-len));
        len = llama_token_to_piece(m->vocab, tok, g.piece.data(), static_cast<int32_t>(g.piece.size()), 0, false);
    }
    g.pending.append(g.piece.data(), static_cast<size_t>(std::max(len, 0)));
    const size_t ready = complete_utf8_prefix(g.pending);
    g.text.assign(g.pending, 0, ready);
    g.pending.erase(0, ready);
    ++res.n_generated;
    g.undecoded = tok;
    *token = tok;
    return LLMODEL_OK;
}

// Ends a stream that is not finished: what the caller did not take is dropped.
void stop_stream(llmodel_stream &g) {
    if (!g.finished && g.m) {
        g.pending.clear();
        finish_stream(g, LLMODEL_STOP_CALLBACK);
    }
}

llmodel_status generate_impl(llmodel_model *m, const std::vector<llama_token> &prompt,
                             const llmodel_generate_params &p, llmodel_prompt_callback on_prompt,
                             llmodel_response_callback on_response, void *user_data,
                             llmodel_generate_result *result) {
    llmodel_stream g;
    g.m = m;
    g.p = p;
    llmodel_status s = start_stream(g, prompt, on_prompt, user_data);
    if (s == LLMODEL_OK) {
        for (;;) {
            llmodel_token tok;
            bool done;
            s = step_stream(g, &tok, &done);
            if (s != LLMODEL_OK || done) break;
            if (on_response && !on_response(tok, g.text.data(), g.text.size(), user_data)) {
                stop_stream(g);
                break;
            }
        }
    }
    if (s == LLMODEL_OK || s == LLMODEL_ERR_CANCELLED) {
        if (!g.finished) g.res.n_past = static_cast<int32_t>(m->tokens.size());
        if (result) *result = g.res;
    }
    return s;
}

llmodel_status tokenize_impl(const llmodel_model *m, const char *text, size_t len, bool add_special,
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

llmodel_status check_model(const llmodel_model *m) {
    LLMODEL_REQUIRE(m, "model handle is NULL");
    return LLMODEL_OK;
}

// The weights of a mapped file are read from the file itself: a file cut
// short while mapped would kill the process with SIGBUS on the next read.
// Checked before each generation (it cannot be excluded, only made unlikely).
llmodel_status check_file_unchanged(const llmodel_model *m) {
    if (!m->mapped) return LLMODEL_OK;
    struct stat now;
    if (stat(m->path.c_str(), &now) != 0 || now.st_size != m->file_stat.st_size ||
        now.st_ino != m->file_stat.st_ino || now.st_mtime != m->file_stat.st_mtime) {
        return fail(LLMODEL_ERR_INVALID_FILE, "the model file " + m->path + " changed on disk since it was loaded "
                                              "(it is memory-mapped, so it must not change): load it again, or load "
                                              "with use_mmap=false to keep a private copy in memory");
    }
    return LLMODEL_OK;
}

// Calls that change the cache wait for an open stream to end.
llmodel_status check_no_stream(const llmodel_model *m) {
    if (m->stream) {
        return fail(LLMODEL_ERR_BUSY, "a stream is open on this model; end it with llmodel_stream_end first");
    }
    return LLMODEL_OK;
}

// What every generation starts with: checks, then the prompt's tokens from
// make_prompt, then body(params, tokens).
template <class MakePrompt, class Body>
llmodel_status begin_generation(llmodel_model *model, const llmodel_generate_params *params,
                                const MakePrompt &make_prompt, const Body &body) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        if (llmodel_status s = check_no_stream(model)) return s;
        if (llmodel_status s = check_file_unchanged(model)) return s;
        const llmodel_generate_params p = params ? *params : llmodel_generate_default_params();
        if (llmodel_status s = validate_generate_params(p)) return s;
        std::vector<llama_token> tokens;
        if (llmodel_status s = make_prompt(p, tokens)) return s;
        return body(p, tokens);
    });
}

// A prompt given as text, tokenized with the params' special-token settings.
auto text_prompt(const llmodel_model *model, const char *prompt, size_t prompt_len) {
    return [=](const llmodel_generate_params &p, std::vector<llama_token> &tokens) -> llmodel_status {
        LLMODEL_REQUIRE(prompt || prompt_len == 0, "prompt is NULL");
        return tokenize_impl(model, prompt ? prompt : "", prompt_len, p.add_special, p.parse_special, tokens);
    };
}

// A prompt given as tokens.
auto token_prompt(const llmodel_token *tokens, size_t n_tokens) {
    return [=](const llmodel_generate_params &, std::vector<llama_token> &prompt) -> llmodel_status {
        LLMODEL_REQUIRE(tokens || n_tokens == 0, "tokens is NULL");
        prompt.assign(tokens, tokens + n_tokens);
        return LLMODEL_OK;
    };
}

template <class MakePrompt>
llmodel_status generate_entry(llmodel_model *model, const llmodel_generate_params *params,
                              const MakePrompt &make_prompt, llmodel_prompt_callback on_prompt,
                              llmodel_response_callback on_response, void *user_data,
                              llmodel_generate_result *result) {
    return begin_generation(model, params, make_prompt,
                            [&](const llmodel_generate_params &p, const std::vector<llama_token> &tokens) {
                                return generate_impl(model, tokens, p, on_prompt, on_response, user_data, result);
                            });
}

template <class MakePrompt>
llmodel_status stream_entry(llmodel_model *model, const llmodel_generate_params *params,
                            const MakePrompt &make_prompt, llmodel_prompt_callback on_prompt, void *user_data,
                            llmodel_stream **out) {
    LLMODEL_REQUIRE(out, "out is NULL");
    *out = nullptr;
    return begin_generation(model, params, make_prompt,
                            [&](const llmodel_generate_params &p, const std::vector<llama_token> &tokens) {
                                auto g = std::make_unique<llmodel_stream>();
                                g->m = model;
                                g->p = p;
                                if (llmodel_status s = start_stream(*g, tokens, on_prompt, user_data)) return s;
                                model->stream = g.get();
                                *out = g.release();
                                return LLMODEL_OK;
                            });
}

} // namespace

static void destroy_model(llmodel_model *m) {
    try {
        if (m->stream) m->stream->m = nullptr; // the stream outlives it, detached
        delete m;
    } catch (...) {
    }
}

extern "C" {

LLMODEL_API llmodel_load_params llmodel_load_default_params(void) {
    llmodel_load_params p;
    p.n_ctx = 2048;
    p.n_batch = 512;
    p.n_threads = 0;
    p.n_gpu_layers = -1;
    p.device = nullptr;
    p.use_mmap = true;
    return p;
}

LLMODEL_API llmodel_generate_params llmodel_generate_default_params(void) {
    llmodel_generate_params p;
    p.temp = 0.7f;
    p.top_k = 40;
    p.top_p = 0.4f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.18f;
    p.repeat_last_n = 64;
    p.seed = LLMODEL_SEED_RANDOM;
    p.n_predict = 200;
    p.n_batch = 0;
    p.context_shift = false;
    p.n_keep = 0;
    p.parse_special = true;
    p.add_special = true;
    p.reuse_shifted = false;
    return p;
}

LLMODEL_API llmodel_status llmodel_model_load(const char *path, const llmodel_load_params *params,
                                              llmodel_model **out) {
    return guarded([&]() -> llmodel_status {
        LLMODEL_REQUIRE(out, "out is NULL");
        *out = nullptr;
        LLMODEL_REQUIRE(path && *path, "model path is NULL or empty");
        const llmodel_load_params p = params ? *params : llmodel_load_default_params();
        LLMODEL_REQUIRE(p.n_ctx >= 0, "n_ctx must be 0 or more");
        LLMODEL_REQUIRE(p.n_batch >= 1, "n_batch must be 1 or more");
        LLMODEL_REQUIRE(p.n_threads >= 0 && p.n_threads <= LLMODEL_MAX_THREADS,
                        "n_threads must be between 0 and " + std::to_string(LLMODEL_MAX_THREADS));
        LLMODEL_REQUIRE(p.n_gpu_layers >= -1, "n_gpu_layers must be -1 or more");

        ensure_backends();
        ModelFileFacts facts;
        if (llmodel_status s = check_model_file(path, &facts)) return s;
        ggml_backend_dev_t gpu = nullptr;
        if (llmodel_status s = select_device(p.device, &gpu)) return s;

        auto m = std::make_unique<llmodel_model>();
        ggml_backend_dev_t devs[2] = {gpu, nullptr};
        llama_model_params mp = llama_model_default_params();
        mp.devices = devs; // {NULL}: the CPU alone
        mp.n_gpu_layers = gpu ? p.n_gpu_layers : 0;
        mp.load_mode = p.use_mmap && facts.mmap_aligned ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
        {
            LogCapture capture;
            m->model = llama_model_load_from_file(path, mp);
            if (!m->model) {
                std::string log = capture.text();
                std::string why = last_lines(log);
                if (log.find("unknown model architecture") != std::string::npos) {
                    size_t q = log.find("unknown model architecture");
                    std::string arch = log.substr(q + std::strlen("unknown model architecture"));
                    arch = arch.substr(0, arch.find('\n'));
                    return fail(LLMODEL_ERR_UNSUPPORTED, "unsupported model architecture" + arch + " in " + path);
                }
                if (log.find("alloc") != std::string::npos || log.find("memory") != std::string::npos) {
                    return fail(LLMODEL_ERR_OUT_OF_MEMORY, std::string("not enough memory to load ") + path +
                                                               (why.empty() ? "" : ": " + why));
                }
                return fail(LLMODEL_ERR_INVALID_FILE, std::string("llama.cpp could not load ") + path +
                                                          (why.empty() ? "" : ": " + why));
            }
        }
        m->path = path;
        m->mapped = mp.load_mode == LLAMA_LOAD_MODE_MMAP && llama_supports_mmap();
        if (m->mapped && stat(path, &m->file_stat) != 0) m->mapped = false;
        m->vocab = llama_model_get_vocab(m->model);
        m->arch = meta_string(m->model, "general.architecture");
        m->name = meta_string(m->model, "general.name");
        if (const char *tmpl = llama_model_chat_template(m->model, nullptr)) {
            m->chat_template = tmpl;
            m->has_chat_template = true;
        }

        const int32_t n_ctx = p.n_ctx > 0 ? p.n_ctx : llama_model_n_ctx_train(m->model);
        const double kv = kv_cache_bytes(m->model, m->arch, n_ctx);
        const uint64_t avail = available_memory();
        if (!gpu && avail > 0 && kv > static_cast<double>(avail)) {
            return fail(LLMODEL_ERR_OUT_OF_MEMORY, "a context of " + std::to_string(n_ctx) + " tokens needs about " +
                                                       human_bytes(kv) + " for its cache but only " +
                                                       human_bytes(static_cast<double>(avail)) +
                                                       " of memory is available; use a smaller n_ctx");
        }
        m->n_threads = p.n_threads > 0 ? p.n_threads : llmodel_physical_cores();
        m->n_batch = p.n_batch;
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = static_cast<uint32_t>(n_ctx);
        cp.n_batch = static_cast<uint32_t>(p.n_batch);
        cp.n_ubatch = static_cast<uint32_t>(std::min(p.n_batch, 512));
        cp.n_seq_max = 1;
        cp.n_threads = m->n_threads;
        cp.n_threads_batch = m->n_threads;
        cp.swa_full = true; // keeps every position, so chat turns can reuse the cache
        cp.no_perf = true;
        {
            LogCapture capture;
            m->ctx = llama_init_from_model(m->model, cp);
            if (!m->ctx) {
                std::string why = last_lines(capture.text());
                return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not create a context of " + std::to_string(n_ctx) +
                                                           " tokens (about " + human_bytes(kv) + " of cache)" +
                                                           (why.empty() ? "" : ": " + why));
            }
        }
        // ggml checks this between the nodes of a graph: a cancel, close or
        // free stops a long prompt step within milliseconds
        llama_set_abort_callback(
            m->ctx, [](void *data) { return static_cast<const llmodel_model *>(data)->stop_requested(); }, m.get());
        m->n_batch = static_cast<int32_t>(llama_n_batch(m->ctx));
        m->n_ctx = std::min(n_ctx, static_cast<int32_t>(llama_n_ctx(m->ctx)));
        const int32_t n_layer = llama_model_n_layer(m->model);
        if (gpu) {
            m->n_gpu_layers = p.n_gpu_layers < 0 ? n_layer + 1 : std::min(p.n_gpu_layers, n_layer + 1);
        }
        if (gpu && m->n_gpu_layers > 0) {
            ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(gpu);
            m->backend = reg ? ggml_backend_reg_name(reg) : "GPU";
            m->device = ggml_backend_dev_name(gpu);
            m->device_description = ggml_backend_dev_description(gpu);
        } else {
            m->backend = "CPU";
            m->device = "CPU";
            ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
            m->device_description = cpu ? ggml_backend_dev_description(cpu) : "CPU";
        }
        *out = m.release();
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_model_close(llmodel_model *model) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) {
            if (s == LLMODEL_ERR_CLOSED && model->closed) return LLMODEL_OK; // closing twice is a no-op
            // from inside one of its own callbacks: the running call stops and closes it as it returns
            if (s == LLMODEL_ERR_BUSY && model->owner.load() == std::this_thread::get_id()) {
                model->state.fetch_or(kClosePending);
                return LLMODEL_OK;
            }
            return s;
        }
        model->release();
        return LLMODEL_OK;
    });
}

LLMODEL_API void llmodel_model_free(llmodel_model *model) {
    if (!model) return;
    // during a call (a callback's, or another thread's): that call stops and frees it as it returns
    if (model->state.fetch_or(kFreePending) & kBusy) return;
    destroy_model(model);
}

LLMODEL_API llmodel_status llmodel_cancel(llmodel_model *model) {
    // only an atomic store: safe from any thread and from a signal handler
    if (!model) return LLMODEL_ERR_INVALID_ARGUMENT;
    model->cancel.store(true, std::memory_order_relaxed);
    return LLMODEL_OK;
}

LLMODEL_API llmodel_status llmodel_model_get_info(const llmodel_model *model, llmodel_model_info *out) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(out, "out is NULL");
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        const llmodel_model *m = model;
        out->architecture = m->arch.c_str();
        out->name = m->name.c_str();
        out->chat_template = m->has_chat_template ? m->chat_template.c_str() : nullptr;
        out->backend = m->backend.c_str();
        out->device = m->device.c_str();
        out->device_description = m->device_description.c_str();
        out->n_ctx = m->n_ctx;
        out->n_ctx_train = llama_model_n_ctx_train(m->model);
        out->n_batch = m->n_batch;
        out->n_vocab = llama_vocab_n_tokens(m->vocab);
        out->n_embd = llama_model_n_embd(m->model);
        out->n_layer = llama_model_n_layer(m->model);
        out->n_gpu_layers = m->n_gpu_layers;
        out->n_params = llama_model_n_params(m->model);
        out->size_bytes = llama_model_size(m->model);
        out->bos = llama_vocab_bos(m->vocab);
        out->eos = llama_vocab_eos(m->vocab);
        out->eot = llama_vocab_eot(m->vocab);
        out->add_bos = llama_vocab_get_add_bos(m->vocab);
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_model_meta(const llmodel_model *model, const char *key, char *buf,
                                              size_t buf_size, size_t *n_out) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(key, "key is NULL");
        LLMODEL_REQUIRE(buf || buf_size == 0, "buf is NULL but buf_size is not 0");
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        int32_t n = llama_model_meta_val_str(model->model, key, nullptr, 0);
        if (n < 0) return fail(LLMODEL_ERR_INVALID_ARGUMENT, std::string("no metadata key ") + key);
        if (n_out) *n_out = static_cast<size_t>(n);
        if (buf_size > 0) llama_model_meta_val_str(model->model, key, buf, buf_size);
        if (static_cast<size_t>(n) >= buf_size) {
            return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "buffer too small for metadata value");
        }
        return LLMODEL_OK;
    });
}

LLMODEL_API bool llmodel_token_is_eog(const llmodel_model *model, llmodel_token token) {
    if (!model) return false;
    CallGuard guard(model);
    if (guard.check() != LLMODEL_OK) return false;
    if (token < 0 || token >= llama_vocab_n_tokens(model->vocab)) return false;
    return llama_vocab_is_eog(model->vocab, token);
}

LLMODEL_API llmodel_status llmodel_tokenize(const llmodel_model *model, const char *text, size_t text_len,
                                            bool add_special, bool parse_special, llmodel_token *tokens,
                                            size_t capacity, size_t *n_out) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(text || text_len == 0, "text is NULL");
        LLMODEL_REQUIRE(tokens || capacity == 0, "tokens is NULL but capacity is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        std::vector<llama_token> out;
        if (llmodel_status s = tokenize_impl(model, text ? text : "", text_len, add_special, parse_special, out)) return s;
        *n_out = out.size();
        if (out.size() > capacity) return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "token buffer too small");
        std::copy(out.begin(), out.end(), tokens);
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_detokenize(const llmodel_model *model, const llmodel_token *tokens,
                                              size_t n_tokens, bool render_special, char *buf, size_t buf_size,
                                              size_t *n_out) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(tokens || n_tokens == 0, "tokens is NULL");
        LLMODEL_REQUIRE(buf || buf_size == 0, "buf is NULL but buf_size is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        LLMODEL_REQUIRE(n_tokens <= INT32_MAX, "too many tokens");
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
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
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(buf || buf_size == 0, "buf is NULL but buf_size is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
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

LLMODEL_API llmodel_status llmodel_generate(llmodel_model *model, const char *prompt, size_t prompt_len,
                                            const llmodel_generate_params *params,
                                            llmodel_prompt_callback on_prompt,
                                            llmodel_response_callback on_response, void *user_data,
                                            llmodel_generate_result *result) {
    return generate_entry(model, params, text_prompt(model, prompt, prompt_len), on_prompt, on_response, user_data,
                          result);
}

LLMODEL_API llmodel_status llmodel_generate_tokens(llmodel_model *model, const llmodel_token *tokens,
                                                   size_t n_tokens, const llmodel_generate_params *params,
                                                   llmodel_prompt_callback on_prompt,
                                                   llmodel_response_callback on_response, void *user_data,
                                                   llmodel_generate_result *result) {
    return generate_entry(model, params, token_prompt(tokens, n_tokens), on_prompt, on_response, user_data, result);
}

LLMODEL_API llmodel_status llmodel_stream_begin(llmodel_model *model, const char *prompt, size_t prompt_len,
                                                const llmodel_generate_params *params,
                                                llmodel_prompt_callback on_prompt, void *user_data,
                                                llmodel_stream **out) {
    return stream_entry(model, params, text_prompt(model, prompt, prompt_len), on_prompt, user_data, out);
}

LLMODEL_API llmodel_status llmodel_stream_begin_tokens(llmodel_model *model, const llmodel_token *tokens,
                                                       size_t n_tokens, const llmodel_generate_params *params,
                                                       llmodel_prompt_callback on_prompt, void *user_data,
                                                       llmodel_stream **out) {
    return stream_entry(model, params, token_prompt(tokens, n_tokens), on_prompt, user_data, out);
}

LLMODEL_API llmodel_status llmodel_stream_next(llmodel_stream *stream, llmodel_token *token, const char **text,
                                               size_t *text_len, bool *done) {
    return guarded([&]() -> llmodel_status {
        LLMODEL_REQUIRE(stream, "stream is NULL");
        LLMODEL_REQUIRE(token && text && text_len && done, "an output pointer is NULL");
        *token = LLMODEL_TOKEN_NONE;
        *text = "";
        *text_len = 0;
        *done = true;
        if (!stream->m) return fail(LLMODEL_ERR_CLOSED, "the stream's model was freed");
        CallGuard guard(stream->m);
        if (llmodel_status s = guard.check()) return s;
        if (stream->m->stream != stream) return fail(LLMODEL_ERR_CLOSED, "the stream has ended");
        llmodel_status s = step_stream(*stream, token, done);
        *text = stream->text.c_str();
        *text_len = stream->text.size();
        return s;
    });
}

LLMODEL_API llmodel_status llmodel_stream_end(llmodel_stream *stream, llmodel_generate_result *result) {
    if (!stream) return LLMODEL_OK;
    std::unique_ptr<llmodel_stream> owned(stream);
    return guarded([&]() -> llmodel_status {
        llmodel_model *m = stream->m;
        if (m) {
            CallGuard guard(m);
            if (llmodel_status s = guard.check()) {
                if (s == LLMODEL_ERR_BUSY || (s == LLMODEL_ERR_CLOSED && !m->closed)) {
                    // still in use (or being freed) by another call: leave it to the caller's retry
                    owned.release();
                    return fail(LLMODEL_ERR_BUSY, "another call is in progress on the stream's model");
                }
            }
            if (!m->closed) stop_stream(*stream);
            if (m->stream == stream) m->stream = nullptr;
        }
        if (result) *result = stream->res;
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_reset(llmodel_model *model) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        if (llmodel_status s = check_no_stream(model)) return s;
        forget_all(model);
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_cached_tokens(const llmodel_model *model, llmodel_token *tokens,
                                                 size_t capacity, size_t *n_out) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(tokens || capacity == 0, "tokens is NULL but capacity is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        *n_out = model->tokens.size();
        if (model->tokens.size() > capacity) return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "token buffer too small");
        std::copy(model->tokens.begin(), model->tokens.end(), tokens);
        return LLMODEL_OK;
    });
}

// Saved state: magic, format version, token count, tokens, llama.cpp state.
static const uint32_t kStateMagic = 0x534d4c4c; // "LLMS"
static const uint32_t kStateVersion = 1;

LLMODEL_API llmodel_status llmodel_state_size(llmodel_model *model, size_t *n_out) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        *n_out = 3 * sizeof(uint32_t) + model->tokens.size() * sizeof(llama_token) + llama_state_get_size(model->ctx);
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_state_save(llmodel_model *model, void *buf, size_t buf_size, size_t *n_out) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(buf || buf_size == 0, "buf is NULL but buf_size is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        const size_t head = 3 * sizeof(uint32_t) + model->tokens.size() * sizeof(llama_token);
        const size_t needed = head + llama_state_get_size(model->ctx);
        *n_out = needed;
        if (buf_size < needed) return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "state buffer too small");
        uint8_t *p = static_cast<uint8_t *>(buf);
        const uint32_t header[3] = {kStateMagic, kStateVersion, static_cast<uint32_t>(model->tokens.size())};
        std::memcpy(p, header, sizeof header);
        std::memcpy(p + sizeof header, model->tokens.data(), model->tokens.size() * sizeof(llama_token));
        size_t n = llama_state_get_data(model->ctx, p + head, buf_size - head);
        if (n == 0) return fail(LLMODEL_ERR_INTERNAL, "llama.cpp could not save the state");
        *n_out = head + n;
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_state_load(llmodel_model *model, const void *buf, size_t buf_size) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(buf, "buf is NULL");
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        if (llmodel_status s = check_no_stream(model)) return s;
        const uint8_t *p = static_cast<const uint8_t *>(buf);
        uint32_t header[3];
        LLMODEL_REQUIRE(buf_size >= sizeof header, "state buffer too short");
        std::memcpy(header, p, sizeof header);
        LLMODEL_REQUIRE(header[0] == kStateMagic && header[1] == kStateVersion, "not a saved llmodel state");
        const size_t head = sizeof header + static_cast<size_t>(header[2]) * sizeof(llama_token);
        LLMODEL_REQUIRE(header[2] <= static_cast<uint32_t>(model->n_ctx) && buf_size > head, "state does not fit this model's context");
        std::vector<llama_token> tokens(header[2]);
        std::memcpy(tokens.data(), p + sizeof header, tokens.size() * sizeof(llama_token));
        LogCapture capture;
        if (llama_state_set_data(model->ctx, p + head, buf_size - head) == 0) {
            forget_all(model);
            return fail(LLMODEL_ERR_INVALID_ARGUMENT, "state does not match this model: " + last_lines(capture.text()));
        }
        model->tokens = std::move(tokens);
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_set_threads(llmodel_model *model, int32_t n_threads) {
    return guarded([&]() -> llmodel_status {
        if (llmodel_status s = check_model(model)) return s;
        LLMODEL_REQUIRE(n_threads >= 1 && n_threads <= LLMODEL_MAX_THREADS,
                        "n_threads must be between 1 and " + std::to_string(LLMODEL_MAX_THREADS));
        CallGuard guard(model);
        if (llmodel_status s = guard.check()) return s;
        llama_set_n_threads(model->ctx, n_threads, n_threads);
        model->n_threads = n_threads;
        return LLMODEL_OK;
    });
}

LLMODEL_API int32_t llmodel_get_threads(const llmodel_model *model) {
    if (!model) return -1;
    CallGuard guard(model);
    if (guard.check() != LLMODEL_OK) return -1;
    return model->n_threads;
}

} // extern "C"
