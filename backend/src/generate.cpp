// Generations on a conversation: the prompt evaluated (its cached prefix
// reused), then a token per step, through the engine's batched steps. Both
// the callback API (llmodel_generate) and the pull API (llmodel_stream_*)
// run the same stream object.
#include "generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "engine.h"
#include "grammar.h"
#include "sampler.h"
#include "tokens.h"

using namespace llmodel;

struct llmodel_stream {
    llmodel_conversation *c = nullptr; // NULL once the conversation is gone
    llmodel_generate_params p{};
    std::vector<llmodel_logit_bias> bias; // a copy: the caller's array may not outlive the call
    std::unique_ptr<TokenSampler> sampler;
    std::unique_ptr<llama_sampler, SamplerChainDeleter> grammar; // checked and built; the sampler takes it
    std::vector<llama_token> grammar_tokens;                     // the tokens the grammar names
    Request req;
    bool begun = false;                   // the engine counts it as running
    llmodel_generate_result res{};
    std::string pending;                  // bytes of a character not yet complete
    std::string text;                     // what the last step handed out
    std::vector<char> piece = std::vector<char>(64);
    std::chrono::steady_clock::time_point t1;
    llama_token undecoded = LLAMA_TOKEN_NULL; // handed out, not yet in the cache
    llama_token sampled = LLAMA_TOKEN_NULL;   // sampled, not yet handed out
    bool finished = false;
};

namespace llmodel {

llmodel_status check_no_stream(const llmodel_conversation *c) {
    if (c->stream) {
        return fail(LLMODEL_ERR_BUSY, "a stream is open on this conversation; end it with llmodel_stream_end first");
    }
    return LLMODEL_OK;
}

void detach_stream(llmodel_stream *g) {
    if (g->c && g->begun) end_generation(g->c, &g->req);
    g->begun = false;
    if (g->c && g->c->stream == g) g->c->stream = nullptr;
    g->c = nullptr;
}

} // namespace llmodel

namespace {

using Clock = std::chrono::steady_clock;

llmodel_status validate_generate_params(const llmodel_generate_params &p, const llama_vocab *vocab) {
    LLMODEL_REQUIRE(std::isfinite(p.temp), "temp must be a finite number");
    LLMODEL_REQUIRE(std::isfinite(p.top_p) && p.top_p >= 0.0f, "top_p must be 0 or more");
    LLMODEL_REQUIRE(std::isfinite(p.min_p) && p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p must be between 0 and 1");
    LLMODEL_REQUIRE(std::isfinite(p.repeat_penalty) && p.repeat_penalty > 0.0f, "repeat_penalty must be greater than 0");
    LLMODEL_REQUIRE(std::isfinite(p.frequency_penalty), "frequency_penalty must be a finite number");
    LLMODEL_REQUIRE(std::isfinite(p.presence_penalty), "presence_penalty must be a finite number");
    LLMODEL_REQUIRE(p.repeat_last_n >= -1, "repeat_last_n must be -1 or more");
    LLMODEL_REQUIRE(p.n_predict >= -1, "n_predict must be -1 or more");
    LLMODEL_REQUIRE(p.n_batch >= 0, "n_batch must be 0 or more");
    LLMODEL_REQUIRE(p.n_keep >= 0, "n_keep must be 0 or more");
    LLMODEL_REQUIRE(p.top_k >= -1, "top_k must be -1 or more");
    LLMODEL_REQUIRE(p.logit_bias || p.n_logit_bias == 0, "logit_bias is NULL but n_logit_bias is not 0");
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    for (size_t i = 0; i < p.n_logit_bias; ++i) {
        const llmodel_logit_bias &b = p.logit_bias[i];
        if (b.token < 0 || b.token >= n_vocab) {
            return fail(LLMODEL_ERR_INVALID_ARGUMENT, "logit_bias names token " + std::to_string(b.token) +
                                                          ", which is not in the vocabulary");
        }
        LLMODEL_REQUIRE(!std::isnan(b.bias) && b.bias != INFINITY, "a logit bias must be a number or -INFINITY");
    }
    return LLMODEL_OK;
}

// Length of the longest prefix of s that does not end inside a UTF-8 character.
size_t complete_utf8_prefix(const std::string &s) {
    const size_t n = s.size();
    for (size_t back = 1; back <= 4 && back <= n; ++back) {
        unsigned char c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) continue; // continuation byte
        size_t len = (c & 0x80) == 0 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return len > back ? n - back : n;
    }
    return n; // stray continuation bytes: nothing to wait for
}

void end_engine_part(llmodel_stream &g) {
    if (g.begun && g.c) end_generation(g.c, &g.req);
    g.begun = false;
}

void finish_stream(llmodel_stream &g, llmodel_stop_reason reason) {
    g.finished = true;
    g.res.stop_reason = reason;
    g.res.n_past = static_cast<int32_t>(g.c->tokens.size());
    g.res.generate_ms = std::chrono::duration<double, std::milli>(Clock::now() - g.t1).count();
    if (!g.pending.empty()) g.text = "\xEF\xBF\xBD"; // an incomplete character: U+FFFD
    g.pending.clear();
    end_engine_part(g);
}

// The status of a request that did not go through; its message recorded.
llmodel_status request_failure(const Request &r) {
    if (r.outcome == Request::kCancelled) return fail(LLMODEL_ERR_CANCELLED, "the call was cancelled");
    return fail(r.status, r.error);
}

// Evaluates the prompt (reusing the cached prefix) and samples the first token.
llmodel_status start_stream(llmodel_stream &g, const std::vector<llama_token> &prompt,
                            llmodel_prompt_callback on_prompt, void *user_data) {
    llmodel_conversation *c = g.c;
    llmodel_model *m = c->m;
    llmodel_generate_result &res = g.res;
    res.n_prompt = static_cast<int32_t>(prompt.size());
    if (prompt.empty()) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "the prompt is empty");
    if (res.n_prompt > m->n_ctx) {
        return fail(LLMODEL_ERR_CONTEXT_OVERFLOW, "the prompt has " + std::to_string(prompt.size()) +
                                                      " tokens but the context holds only " +
                                                      std::to_string(m->n_ctx) + " (load the model with a larger n_ctx)");
    }
    const int32_t n_vocab = llama_vocab_n_tokens(m->vocab);
    for (llama_token t : prompt) {
        if (t < 0 || t >= n_vocab) {
            return fail(LLMODEL_ERR_INVALID_ARGUMENT, "token id " + std::to_string(t) + " is not in the vocabulary");
        }
    }
    if (!g.bias.empty()) g.p.logit_bias = g.bias.data();
    c->cancel.store(false, std::memory_order_relaxed); // a cancel targets the generation it found running
    Request &r = g.req;
    r.c = c;
    r.epoch = m->cancel_epoch.load(std::memory_order_relaxed);
    r.context_shift = g.p.context_shift;
    r.n_keep = g.p.n_keep;
    r.max_chunk = g.p.n_batch;
    size_t keep = 0;
    if (llmodel_status s = begin_generation(c, prompt, g.p.reuse_shifted, &keep, &r)) return s;
    g.begun = true;
    res.n_reused = static_cast<int32_t>(keep);
    g.sampler.reset(new TokenSampler(m->vocab, m->n_ctx, g.p, prompt, g.grammar.release(), g.grammar_tokens));
    r.sampler = g.sampler.get();

    const auto t0 = Clock::now();
    const int32_t n_todo = static_cast<int32_t>(prompt.size() - keep);
    size_t i = keep;
    while (i < prompt.size()) {
        r.todo = &prompt[i];
        r.n_todo = prompt.size() - i;
        run_step(r);
        i += r.n_taken;
        res.n_evaluated += static_cast<int32_t>(r.n_taken);
        res.n_past = static_cast<int32_t>(c->tokens.size());
        if (r.outcome != Request::kDone) return request_failure(r);
        if (on_prompt && !on_prompt(res.n_evaluated, n_todo, user_data)) {
            return fail(LLMODEL_ERR_CANCELLED, "prompt processing was cancelled by the callback");
        }
    }
    g.sampled = r.sampled;
    g.t1 = Clock::now();
    res.prompt_ms = std::chrono::duration<double, std::milli>(g.t1 - t0).count();
    return LLMODEL_OK;
}

// Generates one token: its id in *token and its text in g.text (complete
// UTF-8 characters only). At the end *token is LLMODEL_TOKEN_NONE; g.text
// may then still hold a last U+FFFD, and *done says whether anything is left.
llmodel_status step_stream(llmodel_stream &g, llmodel_token *token, bool *done) {
    llmodel_conversation *c = g.c;
    const llama_vocab *vocab = c->m->vocab;
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
    if (g.p.n_predict >= 0 && res.n_generated >= g.p.n_predict) return finish(LLMODEL_STOP_LENGTH);
    if (stop_requested(c, g.req.epoch)) return finish(LLMODEL_STOP_CANCELLED);
    if (g.sampled == LLAMA_TOKEN_NULL) {
        // the token handed out last time goes into the cache only now, when
        // the caller wants another
        Request &r = g.req;
        r.todo = &g.undecoded;
        r.n_todo = 1;
        run_step(r);
        switch (r.outcome) {
        case Request::kDone: break;
        case Request::kContextFull: return finish(LLMODEL_STOP_CONTEXT_FULL);
        case Request::kCancelled: return finish(LLMODEL_STOP_CANCELLED);
        case Request::kFailed:
            g.finished = true;
            end_engine_part(g);
            return request_failure(r);
        }
        g.undecoded = LLAMA_TOKEN_NULL;
        g.sampled = r.sampled;
    }
    const llama_token tok = g.sampled;
    g.sampled = LLAMA_TOKEN_NULL;
    if (tok == kNoAllowedToken) return finish(LLMODEL_STOP_NO_ALLOWED_TOKEN);
    if (llama_vocab_is_eog(vocab, tok)) return finish(LLMODEL_STOP_EOG);
    int32_t len = llama_token_to_piece(vocab, tok, g.piece.data(), static_cast<int32_t>(g.piece.size()), 0, false);
    if (len < 0) {
        g.piece.resize(static_cast<size_t>(-len));
        len = llama_token_to_piece(vocab, tok, g.piece.data(), static_cast<int32_t>(g.piece.size()), 0, false);
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
    if (!g.finished && g.c) {
        g.pending.clear();
        finish_stream(g, LLMODEL_STOP_CALLBACK);
    }
    end_engine_part(g);
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

// A prompt: text (tokenized with the params' special-token settings) or tokens.
struct Prompt {
    const char *text = nullptr;
    size_t text_len = 0;
    const llmodel_token *tokens = nullptr;
    size_t n_tokens = 0;
    bool is_text = false;

    llmodel_status get(const llmodel_model *m, const llmodel_generate_params &p, std::vector<llama_token> &out) const {
        if (is_text) {
            LLMODEL_REQUIRE(text || text_len == 0, "prompt is NULL");
            return tokenize_text(m, text ? text : "", text_len, p.add_special, p.parse_special, out);
        }
        LLMODEL_REQUIRE(tokens || n_tokens == 0, "tokens is NULL");
        out.assign(tokens, tokens + n_tokens);
        return LLMODEL_OK;
    }
};

Prompt text_prompt(const char *text, size_t len) {
    Prompt p;
    p.text = text;
    p.text_len = len;
    p.is_text = true;
    return p;
}

Prompt token_prompt(const llmodel_token *tokens, size_t n) {
    Prompt p;
    p.tokens = tokens;
    p.n_tokens = n;
    return p;
}

// Checks a grammar (llama.cpp's parser prints its errors to stderr, and some
// grammars it accepts crash it) and builds its sampler into g.
llmodel_status build_grammar(const llmodel_model *m, const char *text, const char *root, llmodel_stream &g) {
    const std::string start = root && root[0] ? root : "root";
    std::string why = check_grammar(text, start, m->vocab, &g.grammar_tokens);
    if (!why.empty()) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "the grammar is not valid: " + why);
    LogCapture capture;
    g.grammar.reset(llama_sampler_init_grammar(m->vocab, text, start.c_str()));
    if (!g.grammar) {
        why = last_lines(capture.text());
        return fail(LLMODEL_ERR_INVALID_ARGUMENT, "llama.cpp refused the grammar" + (why.empty() ? "" : ": " + why));
    }
    return LLMODEL_OK;
}

// What every generation starts with: the conversation's entry checks, the
// parameters, the prompt's tokens, then the stream begun on them.
llmodel_status open_stream(llmodel_conversation *c, const llmodel_generate_params *params, const Prompt &prompt,
                           llmodel_prompt_callback on_prompt, void *user_data, llmodel_stream &g) {
    if (llmodel_status s = check_no_stream(c)) return s;
    if (llmodel_status s = check_file_unchanged(c->m)) return s;
    g.c = c;
    g.p = params ? *params : llmodel_generate_default_params();
    if (llmodel_status s = validate_generate_params(g.p, c->m->vocab)) return s;
    if (g.p.n_logit_bias) g.bias.assign(g.p.logit_bias, g.p.logit_bias + g.p.n_logit_bias);
    if (g.p.grammar && g.p.grammar[0]) {
        if (llmodel_status s = build_grammar(c->m, g.p.grammar, g.p.grammar_root, g)) return s;
    }
    g.p.grammar = g.p.grammar_root = nullptr; // the caller's strings may not outlive the call
    std::vector<llama_token> tokens;
    if (llmodel_status s = prompt.get(c->m, g.p, tokens)) return s;
    return start_stream(g, tokens, on_prompt, user_data);
}

llmodel_status generate(llmodel_conversation *c, const llmodel_generate_params *params, const Prompt &prompt,
                        llmodel_prompt_callback on_prompt, llmodel_response_callback on_response, void *user_data,
                        llmodel_generate_result *result) {
    return conversation_entry(c, [&]() -> llmodel_status {
        llmodel_stream g;
        // whatever happens, the engine stops counting this generation as running
        struct EndOnExit {
            llmodel_stream &g;
            ~EndOnExit() { end_engine_part(g); }
        } end_on_exit{g};
        llmodel_status s = open_stream(c, params, prompt, on_prompt, user_data, g);
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
            if (!g.finished && g.c) g.res.n_past = static_cast<int32_t>(c->tokens.size());
            if (result) *result = g.res;
        }
        return s;
    });
}

llmodel_status stream_begin(llmodel_conversation *c, const llmodel_generate_params *params, const Prompt &prompt,
                            llmodel_prompt_callback on_prompt, void *user_data, llmodel_stream **out) {
    if (out) *out = nullptr;
    return conversation_entry(c, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(out, "out is NULL");
        auto g = std::make_unique<llmodel_stream>();
        if (llmodel_status s = open_stream(c, params, prompt, on_prompt, user_data, *g)) {
            end_engine_part(*g);
            return s;
        }
        c->stream = g.get();
        *out = g.release();
        return LLMODEL_OK;
    });
}

llmodel_conversation *default_of(llmodel_model *m) { return m ? m->default_conv : nullptr; }

} // namespace

extern "C" {

LLMODEL_API llmodel_status llmodel_grammar_check(const llmodel_model *model, const char *grammar, const char *root) {
    return model_entry(model, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(grammar, "grammar is NULL");
        const std::string why = check_grammar(grammar, root && root[0] ? root : "root", model->vocab);
        if (!why.empty()) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "the grammar is not valid: " + why);
        return LLMODEL_OK;
    });
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
    p.context_shift = true;
    p.n_keep = 0;
    p.parse_special = true;
    p.add_special = true;
    p.reuse_shifted = false;
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.0f;
    p.logit_bias = nullptr;
    p.n_logit_bias = 0;
    p.grammar = nullptr;
    p.grammar_root = nullptr;
    return p;
}

LLMODEL_API llmodel_status llmodel_conversation_generate(llmodel_conversation *conv, const char *prompt,
                                                         size_t prompt_len, const llmodel_generate_params *params,
                                                         llmodel_prompt_callback on_prompt,
                                                         llmodel_response_callback on_response, void *user_data,
                                                         llmodel_generate_result *result) {
    return generate(conv, params, text_prompt(prompt, prompt_len), on_prompt, on_response, user_data, result);
}

LLMODEL_API llmodel_status llmodel_conversation_generate_tokens(llmodel_conversation *conv,
                                                                const llmodel_token *tokens, size_t n_tokens,
                                                                const llmodel_generate_params *params,
                                                                llmodel_prompt_callback on_prompt,
                                                                llmodel_response_callback on_response,
                                                                void *user_data, llmodel_generate_result *result) {
    return generate(conv, params, token_prompt(tokens, n_tokens), on_prompt, on_response, user_data, result);
}

LLMODEL_API llmodel_status llmodel_conversation_stream_begin(llmodel_conversation *conv, const char *prompt,
                                                             size_t prompt_len,
                                                             const llmodel_generate_params *params,
                                                             llmodel_prompt_callback on_prompt, void *user_data,
                                                             llmodel_stream **out) {
    return stream_begin(conv, params, text_prompt(prompt, prompt_len), on_prompt, user_data, out);
}

LLMODEL_API llmodel_status llmodel_conversation_stream_begin_tokens(llmodel_conversation *conv,
                                                                    const llmodel_token *tokens, size_t n_tokens,
                                                                    const llmodel_generate_params *params,
                                                                    llmodel_prompt_callback on_prompt,
                                                                    void *user_data, llmodel_stream **out) {
    return stream_begin(conv, params, token_prompt(tokens, n_tokens), on_prompt, user_data, out);
}

LLMODEL_API llmodel_status llmodel_generate(llmodel_model *model, const char *prompt, size_t prompt_len,
                                            const llmodel_generate_params *params,
                                            llmodel_prompt_callback on_prompt,
                                            llmodel_response_callback on_response, void *user_data,
                                            llmodel_generate_result *result) {
    if (!model) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "model handle is NULL");
    return generate(default_of(model), params, text_prompt(prompt, prompt_len), on_prompt, on_response, user_data,
                    result);
}

LLMODEL_API llmodel_status llmodel_generate_tokens(llmodel_model *model, const llmodel_token *tokens,
                                                   size_t n_tokens, const llmodel_generate_params *params,
                                                   llmodel_prompt_callback on_prompt,
                                                   llmodel_response_callback on_response, void *user_data,
                                                   llmodel_generate_result *result) {
    if (!model) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "model handle is NULL");
    return generate(default_of(model), params, token_prompt(tokens, n_tokens), on_prompt, on_response, user_data,
                    result);
}

LLMODEL_API llmodel_status llmodel_stream_begin(llmodel_model *model, const char *prompt, size_t prompt_len,
                                                const llmodel_generate_params *params,
                                                llmodel_prompt_callback on_prompt, void *user_data,
                                                llmodel_stream **out) {
    if (out) *out = nullptr;
    if (!model) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "model handle is NULL");
    return stream_begin(default_of(model), params, text_prompt(prompt, prompt_len), on_prompt, user_data, out);
}

LLMODEL_API llmodel_status llmodel_stream_begin_tokens(llmodel_model *model, const llmodel_token *tokens,
                                                       size_t n_tokens, const llmodel_generate_params *params,
                                                       llmodel_prompt_callback on_prompt, void *user_data,
                                                       llmodel_stream **out) {
    if (out) *out = nullptr;
    if (!model) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "model handle is NULL");
    return stream_begin(default_of(model), params, token_prompt(tokens, n_tokens), on_prompt, user_data, out);
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
        if (!stream->c) return fail(LLMODEL_ERR_CLOSED, "the stream's conversation or model was freed");
        return conversation_entry(stream->c, [&]() -> llmodel_status {
            if (stream->c->stream != stream) return fail(LLMODEL_ERR_CLOSED, "the stream has ended");
            llmodel_status s = step_stream(*stream, token, done);
            *text = stream->text.c_str();
            *text_len = stream->text.size();
            return s;
        });
    });
}

LLMODEL_API llmodel_status llmodel_stream_end(llmodel_stream *stream, llmodel_generate_result *result) {
    if (!stream) return LLMODEL_OK;
    std::unique_ptr<llmodel_stream> owned(stream);
    return guarded([&]() -> llmodel_status {
        llmodel_conversation *c = stream->c;
        if (c) {
            ConversationCall call(c);
            llmodel_status s = call.check();
            if (s == LLMODEL_ERR_BUSY || (s == LLMODEL_ERR_CLOSED && (c->state.load() & kFreePending))) {
                // still in use (or being freed) by another call: leave it to the caller's retry
                owned.release();
                return fail(LLMODEL_ERR_BUSY, "another call is in progress on the stream's conversation");
            }
            if (s == LLMODEL_OK) stop_stream(*stream);
            detach_stream(stream);
        }
        if (result) *result = stream->res;
        return LLMODEL_OK;
    });
}

} // extern "C"
