// A conversation's state: forgetting it, its cached tokens, saving and
// restoring it; and the model's thread count.
#include "engine.h"
#include "generate.h"
#include "model.h"

#include <cstring>
#include <string>
#include <vector>

using namespace llmodel;

namespace {

// Saved state: magic, format version, token count, the sequences of the
// context the llama.cpp state is for, tokens, the llama.cpp state of the
// conversation's sequence.
const uint32_t kStateMagic = 0x534d4c4c; // "LLMS"
const uint32_t kStateVersion = 2;        // 1 (ABI 3) held the whole context

llmodel_status reset(llmodel_conversation *c) {
    return conversation_entry(c, [&]() -> llmodel_status {
        if (llmodel_status s = check_no_stream(c)) return s;
        EngineHold hold(c->m);
        forget_conversation(c);
        return LLMODEL_OK;
    });
}

llmodel_status cached_tokens(llmodel_conversation *c, llmodel_token *tokens, size_t capacity, size_t *n_out) {
    return conversation_entry(c, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(tokens || capacity == 0, "tokens is NULL but capacity is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        EngineHold hold(c->m);
        *n_out = c->tokens.size();
        if (c->tokens.size() > capacity) return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "token buffer too small");
        std::copy(c->tokens.begin(), c->tokens.end(), tokens);
        return LLMODEL_OK;
    });
}

// The saved form of c's state (engine held).
llmodel_status saved_state(llmodel_conversation *c, std::vector<uint8_t> &out) {
    std::vector<uint8_t> seq;
    int32_t n_seq = 1;
    if (!save_sequence(c, seq, &n_seq)) return fail(LLMODEL_ERR_INTERNAL, "llama.cpp could not save the conversation's cache");
    const uint32_t header[4] = {kStateMagic, kStateVersion, static_cast<uint32_t>(c->tokens.size()),
                                static_cast<uint32_t>(n_seq)};
    out.resize(sizeof header + c->tokens.size() * sizeof(llama_token) + seq.size());
    std::memcpy(out.data(), header, sizeof header);
    std::memcpy(out.data() + sizeof header, c->tokens.data(), c->tokens.size() * sizeof(llama_token));
    if (!seq.empty()) std::memcpy(out.data() + sizeof header + c->tokens.size() * sizeof(llama_token), seq.data(), seq.size());
    return LLMODEL_OK;
}

llmodel_status state_size(llmodel_conversation *c, size_t *n_out) {
    return conversation_entry(c, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        EngineHold hold(c->m);
        std::vector<uint8_t> state;
        if (llmodel_status s = saved_state(c, state)) return s;
        *n_out = state.size();
        return LLMODEL_OK;
    });
}

llmodel_status state_save(llmodel_conversation *c, void *buf, size_t buf_size, size_t *n_out) {
    return conversation_entry(c, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(buf || buf_size == 0, "buf is NULL but buf_size is not 0");
        LLMODEL_REQUIRE(n_out, "n_out is NULL");
        EngineHold hold(c->m);
        std::vector<uint8_t> state;
        if (llmodel_status s = saved_state(c, state)) return s;
        *n_out = state.size();
        if (buf_size < state.size()) return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "state buffer too small");
        std::memcpy(buf, state.data(), state.size());
        return LLMODEL_OK;
    });
}

llmodel_status state_load(llmodel_conversation *c, const void *buf, size_t buf_size) {
    return conversation_entry(c, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(buf, "buf is NULL");
        if (llmodel_status s = check_no_stream(c)) return s;
        const uint8_t *p = static_cast<const uint8_t *>(buf);
        uint32_t header[4];
        LLMODEL_REQUIRE(buf_size >= sizeof header, "state buffer too short");
        std::memcpy(header, p, sizeof header);
        LLMODEL_REQUIRE(header[0] == kStateMagic && header[1] == kStateVersion, "not a saved llmodel state");
        LLMODEL_REQUIRE(header[3] >= 1 && header[3] <= LLMODEL_MAX_PARALLEL, "not a saved llmodel state");
        const size_t head = sizeof header + static_cast<size_t>(header[2]) * sizeof(llama_token);
        LLMODEL_REQUIRE(header[2] <= static_cast<uint32_t>(c->m->n_ctx) && buf_size >= head &&
                            (header[2] == 0 || buf_size > head),
                        "state does not fit this model's context");
        std::vector<llama_token> tokens(header[2]);
        std::memcpy(tokens.data(), p + sizeof header, tokens.size() * sizeof(llama_token));
        const int32_t n_vocab = llama_vocab_n_tokens(c->m->vocab);
        for (llama_token t : tokens) LLMODEL_REQUIRE(t >= 0 && t < n_vocab, "state holds a token not in this model's vocabulary");
        EngineHold hold(c->m);
        LogCapture capture;
        clear_error();
        if (!load_sequence(c, p + head, buf_size - head, static_cast<int32_t>(header[3]), std::move(tokens))) {
            if (*llmodel_last_error()) return LLMODEL_ERR_INVALID_ARGUMENT;
            return fail(LLMODEL_ERR_INVALID_ARGUMENT, "state does not match this model: " + last_lines(capture.text()));
        }
        return LLMODEL_OK;
    });
}

} // namespace

extern "C" {

LLMODEL_API llmodel_status llmodel_conversation_reset(llmodel_conversation *conv) { return reset(conv); }

LLMODEL_API llmodel_status llmodel_conversation_cached_tokens(llmodel_conversation *conv, llmodel_token *tokens,
                                                              size_t capacity, size_t *n_out) {
    return cached_tokens(conv, tokens, capacity, n_out);
}

LLMODEL_API llmodel_status llmodel_conversation_state_size(llmodel_conversation *conv, size_t *n_out) {
    return state_size(conv, n_out);
}

LLMODEL_API llmodel_status llmodel_conversation_state_save(llmodel_conversation *conv, void *buf, size_t buf_size,
                                                           size_t *n_out) {
    return state_save(conv, buf, buf_size, n_out);
}

LLMODEL_API llmodel_status llmodel_conversation_state_load(llmodel_conversation *conv, const void *buf,
                                                           size_t buf_size) {
    return state_load(conv, buf, buf_size);
}

#define LLMODEL_DEFAULT_CONV(model) \
    if (!(model)) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "model handle is NULL")

LLMODEL_API llmodel_status llmodel_reset(llmodel_model *model) {
    LLMODEL_DEFAULT_CONV(model);
    return reset(model->default_conv);
}

LLMODEL_API llmodel_status llmodel_cached_tokens(const llmodel_model *model, llmodel_token *tokens, size_t capacity,
                                                 size_t *n_out) {
    LLMODEL_DEFAULT_CONV(model);
    return cached_tokens(model->default_conv, tokens, capacity, n_out);
}

LLMODEL_API llmodel_status llmodel_state_size(llmodel_model *model, size_t *n_out) {
    LLMODEL_DEFAULT_CONV(model);
    return state_size(model->default_conv, n_out);
}

LLMODEL_API llmodel_status llmodel_state_save(llmodel_model *model, void *buf, size_t buf_size, size_t *n_out) {
    LLMODEL_DEFAULT_CONV(model);
    return state_save(model->default_conv, buf, buf_size, n_out);
}

LLMODEL_API llmodel_status llmodel_state_load(llmodel_model *model, const void *buf, size_t buf_size) {
    LLMODEL_DEFAULT_CONV(model);
    return state_load(model->default_conv, buf, buf_size);
}

LLMODEL_API llmodel_status llmodel_set_threads(llmodel_model *model, int32_t n_threads) {
    return model_entry(model, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(n_threads >= 1 && n_threads <= LLMODEL_MAX_THREADS,
                        "n_threads must be between 1 and " + std::to_string(LLMODEL_MAX_THREADS));
        EngineHold hold(model);
        llama_set_n_threads(model->engine.ctx, n_threads, n_threads);
        model->n_threads = n_threads;
        return LLMODEL_OK;
    });
}

LLMODEL_API int32_t llmodel_get_threads(const llmodel_model *model) {
    if (!model) return -1;
    ModelCall call(model);
    if (call.check() != LLMODEL_OK) return -1;
    return model->n_threads;
}

} // extern "C"
