// Embedders: a context of their own over the model's weights that returns
// one pooled vector per text, several texts per step.
#include "embed.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "llama.h"

struct llmodel_embedder {
    llmodel_model *m = nullptr;
    std::atomic<int> state{0}; // kBusy | kFreePending
    llama_context *ctx = nullptr; // NULL once the model is released
    llmodel_embedder_params p{};
    int32_t n_embd = 0;
    int32_t n_ctx = 0;
    int32_t n_batch = 0; // tokens of one ubatch: a whole text always fits
    int32_t step = 0;    // tokens of several texts packed into one step
    llmodel_pooling pooling = LLMODEL_POOLING_MEAN;
    bool causal = true;
    bool encoder_only = false;
};

using namespace llmodel;

namespace llmodel {

void release_embedder(llmodel_embedder *em) {
    if (em->ctx) llama_free(em->ctx);
    em->ctx = nullptr;
}

} // namespace llmodel

namespace {

void destroy_embedder(llmodel_embedder *em) {
    llmodel_model *m = em->m;
    {
        std::lock_guard<std::mutex> lk(m->life_mu);
        release_embedder(em);
        m->embedders.erase(std::remove(m->embedders.begin(), m->embedders.end(), em), m->embedders.end());
    }
    delete em;
    unref_model(m);
}

// One call at a time per embedder; a free during the call is done as it returns.
class EmbedderCall {
public:
    explicit EmbedderCall(llmodel_embedder *em) : em_(em) {
        int idle = 0;
        acquired_ = em_->state.compare_exchange_strong(idle, kBusy, std::memory_order_acquire);
        if (acquired_) model_.reset(new ModelCall(em_->m));
    }
    ~EmbedderCall() {
        if (!acquired_) return;
        const int prev = em_->state.fetch_and(~kBusy, std::memory_order_acq_rel);
        std::unique_ptr<ModelCall> model = std::move(model_);
        if (prev & kFreePending) destroy_embedder(em_);
    }
    llmodel_status check() const {
        if (!acquired_) {
            if (em_->state.load() & kFreePending) return fail(LLMODEL_ERR_CLOSED, "the embedder is being freed");
            return fail(LLMODEL_ERR_BUSY, "another call is in progress on this embedder");
        }
        if (llmodel_status s = model_->check()) return s;
        if (!em_->ctx) return fail(LLMODEL_ERR_CLOSED, "the model is closed");
        return LLMODEL_OK;
    }

private:
    llmodel_embedder *em_;
    bool acquired_ = false;
    std::unique_ptr<ModelCall> model_;
};

int32_t meta_int(const llama_model *model, const std::string &key, int32_t fallback) {
    char buf[64];
    if (llama_model_meta_val_str(model, key.c_str(), buf, sizeof buf) < 0) return fallback;
    char *end = nullptr;
    long v = std::strtol(buf, &end, 10);
    return end && end != buf ? static_cast<int32_t>(v) : fallback;
}

bool meta_bool(const llama_model *model, const std::string &key, bool fallback) {
    char buf[16];
    if (llama_model_meta_val_str(model, key.c_str(), buf, sizeof buf) < 0) return fallback;
    return std::strcmp(buf, "true") == 0 || std::strcmp(buf, "1") == 0;
}

} // namespace

extern "C" {

LLMODEL_API llmodel_embedder_params llmodel_embedder_default_params(void) {
    llmodel_embedder_params p;
    p.pooling = LLMODEL_POOLING_MODEL;
    p.n_ctx = 0;
    p.n_batch = 0;
    p.n_seq_max = 8;
    p.normalize = true;
    return p;
}

LLMODEL_API llmodel_status llmodel_embedder_new(llmodel_model *model, const llmodel_embedder_params *params,
                                                llmodel_embedder **out) {
    if (out) *out = nullptr;
    return model_entry(model, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(out, "out is NULL");
        const llmodel_embedder_params p = params ? *params : llmodel_embedder_default_params();
        LLMODEL_REQUIRE(p.pooling == LLMODEL_POOLING_MODEL || p.pooling == LLMODEL_POOLING_MEAN ||
                            p.pooling == LLMODEL_POOLING_CLS || p.pooling == LLMODEL_POOLING_LAST,
                        "pooling must be one of LLMODEL_POOLING_MODEL, _MEAN, _CLS, _LAST");
        LLMODEL_REQUIRE(p.n_ctx >= 0, "n_ctx must be 0 or more");
        LLMODEL_REQUIRE(p.n_batch >= 0, "n_batch must be 0 or more");
        LLMODEL_REQUIRE(p.n_seq_max >= 1 && p.n_seq_max <= LLMODEL_MAX_PARALLEL,
                        "n_seq_max must be between 1 and " + std::to_string(LLMODEL_MAX_PARALLEL));
        const llama_model *lm = model->model;
        auto em = std::make_unique<llmodel_embedder>();
        em->m = model;
        em->p = p;
        em->n_embd = llama_model_n_embd(lm);
        em->n_ctx = p.n_ctx > 0 ? p.n_ctx : std::min(llama_model_n_ctx_train(lm), 8192);
        em->causal = meta_bool(lm, model->arch + ".attention.causal", true);
        em->encoder_only = llama_model_has_encoder(lm) && !llama_model_has_decoder(lm);
        em->step = p.n_batch > 0 ? p.n_batch : em->n_ctx;
        em->n_batch = std::max(em->step, em->n_ctx);
        if (p.pooling != LLMODEL_POOLING_MODEL) {
            em->pooling = static_cast<llmodel_pooling>(p.pooling);
        } else {
            const int32_t from_model = meta_int(lm, model->arch + ".pooling_type", LLAMA_POOLING_TYPE_UNSPECIFIED);
            if (from_model == LLAMA_POOLING_TYPE_RANK) {
                return fail(LLMODEL_ERR_UNSUPPORTED, "this is a reranking model (rank pooling), not an embedding model");
            }
            em->pooling = (from_model == LLAMA_POOLING_TYPE_CLS || from_model == LLAMA_POOLING_TYPE_LAST)
                              ? static_cast<llmodel_pooling>(from_model)
                              : LLMODEL_POOLING_MEAN;
        }
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = static_cast<uint32_t>(std::max(em->n_batch, em->n_ctx));
        cp.n_batch = static_cast<uint32_t>(em->n_batch);
        cp.n_ubatch = static_cast<uint32_t>(em->n_batch); // a text is never split between ubatches
        cp.n_seq_max = static_cast<uint32_t>(p.n_seq_max);
        cp.kv_unified = true;
        cp.n_threads = model->n_threads;
        cp.n_threads_batch = model->n_threads;
        cp.embeddings = true;
        cp.pooling_type = static_cast<enum llama_pooling_type>(em->pooling);
        cp.no_perf = true;
        cp.abort_callback = [](void *data) {
            const auto *m = static_cast<const llmodel_model *>(data);
            return m->closing.load(std::memory_order_relaxed);
        };
        cp.abort_callback_data = model;
        LogCapture capture;
        em->ctx = llama_init_from_model(model->model, cp);
        if (!em->ctx) {
            std::string why = last_lines(capture.text());
            return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not create an embedding context" + (why.empty() ? "" : ": " + why));
        }
        {
            std::lock_guard<std::mutex> lk(model->life_mu);
            model->embedders.push_back(em.get());
        }
        model->refs.fetch_add(1, std::memory_order_relaxed);
        *out = em.release();
        return LLMODEL_OK;
    });
}

LLMODEL_API void llmodel_embedder_free(llmodel_embedder *embedder) {
    if (!embedder) return;
    try {
        if (embedder->state.fetch_or(kFreePending) & kBusy) return;
        destroy_embedder(embedder);
    } catch (...) {
    }
}

LLMODEL_API llmodel_status llmodel_embedder_get_info(llmodel_embedder *embedder, llmodel_embedder_info *out) {
    return guarded([&]() -> llmodel_status {
        LLMODEL_REQUIRE(embedder, "embedder handle is NULL");
        LLMODEL_REQUIRE(out, "out is NULL");
        EmbedderCall call(embedder);
        if (llmodel_status s = call.check()) return s;
        out->n_embd = embedder->n_embd;
        out->n_ctx = embedder->n_ctx;
        out->pooling = embedder->pooling;
        out->causal = embedder->causal;
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_embed_tokens(llmodel_embedder *embedder, const llmodel_token *const *texts,
                                                const size_t *n_tokens, size_t n_texts, float *out,
                                                size_t out_capacity, llmodel_prompt_callback on_progress,
                                                void *user_data) {
    return guarded([&]() -> llmodel_status {
        LLMODEL_REQUIRE(embedder, "embedder handle is NULL");
        LLMODEL_REQUIRE(n_texts == 0 || (texts && n_tokens), "texts or n_tokens is NULL");
        EmbedderCall call(embedder);
        if (llmodel_status s = call.check()) return s;
        llmodel_embedder *em = embedder;
        llmodel_model *m = em->m;
        const size_t n_embd = static_cast<size_t>(em->n_embd);
        LLMODEL_REQUIRE(n_texts <= out_capacity / n_embd, "out has room for " + std::to_string(out_capacity / n_embd) +
                                                              " vectors, not " + std::to_string(n_texts));
        LLMODEL_REQUIRE(out || n_texts == 0, "out is NULL");
        const int32_t n_vocab = llama_vocab_n_tokens(m->vocab);
        for (size_t i = 0; i < n_texts; ++i) {
            if (n_tokens[i] == 0) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "text " + std::to_string(i) + " is empty");
            LLMODEL_REQUIRE(texts[i], "texts[" + std::to_string(i) + "] is NULL");
            if (n_tokens[i] > static_cast<size_t>(em->n_ctx)) {
                return fail(LLMODEL_ERR_CONTEXT_OVERFLOW, "text " + std::to_string(i) + " has " +
                                                              std::to_string(n_tokens[i]) + " tokens but the embedder "
                                                              "takes at most " + std::to_string(em->n_ctx));
            }
            for (size_t k = 0; k < n_tokens[i]; ++k) {
                if (texts[i][k] < 0 || texts[i][k] >= n_vocab) {
                    return fail(LLMODEL_ERR_INVALID_ARGUMENT, "token id " + std::to_string(texts[i][k]) +
                                                                  " is not in the vocabulary");
                }
            }
        }
        const uint32_t epoch = m->cancel_epoch.load(std::memory_order_relaxed);
        llama_batch b = llama_batch_init(em->n_batch, 0, 1);
        struct BatchFree {
            llama_batch &b;
            ~BatchFree() { llama_batch_free(b); }
        } batch_free{b};
        LogCapture capture;
        size_t next = 0;
        while (next < n_texts) {
            if (m->cancel_epoch.load(std::memory_order_relaxed) != epoch) {
                return fail(LLMODEL_ERR_CANCELLED, "the call was cancelled");
            }
            // pack texts into one step
            size_t first = next;
            b.n_tokens = 0;
            // (a text longer than a step's budget takes a step of its own)
            while (next < n_texts && static_cast<int32_t>(next - first) < em->p.n_seq_max &&
                   (b.n_tokens == 0 || b.n_tokens + static_cast<int32_t>(n_tokens[next]) <= em->step)) {
                const llama_seq_id seq = static_cast<llama_seq_id>(next - first);
                for (size_t k = 0; k < n_tokens[next]; ++k) {
                    const int32_t j = b.n_tokens++;
                    b.token[j] = texts[next][k];
                    b.pos[j] = static_cast<llama_pos>(k);
                    b.n_seq_id[j] = 1;
                    b.seq_id[j][0] = seq;
                    b.logits[j] = true;
                }
                ++next;
            }
            if (!em->encoder_only) llama_memory_clear(llama_get_memory(em->ctx), true);
            const int32_t ret = em->encoder_only ? llama_encode(em->ctx, b) : llama_decode(em->ctx, b);
            if (ret != 0) {
                if (m->closing.load()) return fail(LLMODEL_ERR_CLOSED, "the model was closed");
                std::string why = last_lines(capture.text());
                return fail(LLMODEL_ERR_BACKEND, "embedding failed with code " + std::to_string(ret) +
                                                     (why.empty() ? "" : ": " + why));
            }
            for (size_t i = first; i < next; ++i) {
                const float *v = llama_get_embeddings_seq(em->ctx, static_cast<llama_seq_id>(i - first));
                if (!v) return fail(LLMODEL_ERR_INTERNAL, "llama.cpp returned no pooled embedding");
                float *dst = out + i * n_embd;
                double norm = 0.0;
                for (size_t k = 0; k < n_embd; ++k) norm += static_cast<double>(v[k]) * v[k];
                const float scale = em->p.normalize && norm > 0.0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 1.0f;
                for (size_t k = 0; k < n_embd; ++k) dst[k] = v[k] * scale;
            }
            if (on_progress && !on_progress(static_cast<int32_t>(next), static_cast<int32_t>(n_texts), user_data)) {
                if (next < n_texts) return fail(LLMODEL_ERR_CANCELLED, "embedding was cancelled by the callback");
            }
        }
        return LLMODEL_OK;
    });
}

} // extern "C"
