// The model's lifetime and the guards of every call: close, free, cancel,
// and the creation and freeing of conversations.
#include "model.h"

#include <algorithm>

#include "embed.h"
#include "engine.h"
#include "generate.h"

namespace llmodel {

namespace {
// The models the calling thread is inside a call on (callbacks nest calls).
thread_local std::vector<const llmodel_model *> t_in_calls;
} // namespace

bool in_call_on(const llmodel_model *m) {
    return std::find(t_in_calls.begin(), t_in_calls.end(), m) != t_in_calls.end();
}

void release_model(llmodel_model *m) {
    std::lock_guard<std::mutex> lk(m->life_mu);
    if (m->released) return;
    m->released = true;
    stop_engine_thread(m); // no call is running: it is idle
    for (llmodel_embedder *em : m->embedders) release_embedder(em);
    Engine &e = m->engine;
    for (llmodel_conversation *&c : e.seq_owner) {
        if (c) c->seq = -1;
        c = nullptr;
    }
    if (e.ctx) llama_free(e.ctx);
    e.ctx = nullptr;
    if (m->model) llama_model_free(m->model);
    m->model = nullptr;
    m->vocab = nullptr;
    if (m->default_conv) {
        m->default_conv->tokens.clear();
        std::vector<uint8_t>().swap(m->default_conv->parked);
    }
    m->life_cv.notify_all();
}

void unref_model(llmodel_model *m) {
    if (m->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    release_model(m);
    if (llmodel_conversation *c = m->default_conv) {
        if (c->stream) detach_stream(c->stream);
        delete c;
    }
    delete m;
}

void destroy_conversation(llmodel_conversation *c) {
    llmodel_model *m = c->m;
    if (c->stream) detach_stream(c->stream); // an open stream outlives it, ended
    {
        ModelCall call(m);
        if (call.check() == LLMODEL_OK) {
            EngineHold hold(m);
            drop_conversation(c);
        }
    }
    delete c;
    unref_model(m);
}

ModelCall::ModelCall(const llmodel_model *m) : m_(const_cast<llmodel_model *>(m)) {
    m_->refs.fetch_add(1, std::memory_order_relaxed);
    m_->calls.fetch_add(1, std::memory_order_acq_rel);
    t_in_calls.push_back(m_);
}

ModelCall::~ModelCall() {
    t_in_calls.pop_back();
    if (m_->calls.fetch_sub(1, std::memory_order_acq_rel) == 1 && m_->closing.load()) {
        release_model(m_); // the last call out of a closed model releases it
    } else if (m_->closing.load()) {
        std::lock_guard<std::mutex> lk(m_->life_mu);
        m_->life_cv.notify_all();
    }
    unref_model(m_);
}

llmodel_status ModelCall::check() const {
    if (m_->closing.load()) return fail(LLMODEL_ERR_CLOSED, "the model is closed");
    return LLMODEL_OK;
}

ConversationCall::ConversationCall(llmodel_conversation *c) : c_(c) {
    int idle = 0;
    acquired_ = c_->state.compare_exchange_strong(idle, kBusy, std::memory_order_acquire);
    if (acquired_) {
        c_->owner.store(std::this_thread::get_id(), std::memory_order_relaxed);
        model_.reset(new ModelCall(c_->m));
    }
}

ConversationCall::~ConversationCall() {
    if (!acquired_) return;
    c_->owner.store(std::thread::id(), std::memory_order_relaxed);
    const int prev = c_->state.fetch_and(~kBusy, std::memory_order_acq_rel);
    std::unique_ptr<ModelCall> model = std::move(model_); // keeps the model alive past the conversation
    if (prev & kFreePending) destroy_conversation(c_);
}

llmodel_status ConversationCall::check() const {
    if (!acquired_) {
        if (c_->state.load(std::memory_order_relaxed) & kFreePending) {
            return fail(LLMODEL_ERR_CLOSED, "the conversation is being freed");
        }
        return fail(LLMODEL_ERR_BUSY, "another call is in progress on this conversation "
                                      "(one call at a time per conversation)");
    }
    return model_->check();
}

bool stop_requested(const llmodel_conversation *c, uint32_t epoch) {
    const llmodel_model *m = c->m;
    return c->cancel.load(std::memory_order_relaxed) || m->closing.load(std::memory_order_relaxed) ||
           m->cancel_epoch.load(std::memory_order_relaxed) != epoch ||
           (c->state.load(std::memory_order_relaxed) & kFreePending) != 0;
}

} // namespace llmodel

using namespace llmodel;

extern "C" {

LLMODEL_API llmodel_status llmodel_model_close(llmodel_model *model) {
    return guarded([&]() -> llmodel_status {
        LLMODEL_REQUIRE(model, "model handle is NULL");
        model->closing.store(true);
        std::unique_lock<std::mutex> lk(model->life_mu);
        if (model->released) return LLMODEL_OK; // closing twice is a no-op
        if (model->calls.load() == 0) {
            lk.unlock();
            release_model(model);
            return LLMODEL_OK;
        }
        // from inside one of the calls: the last of them releases it as it returns
        if (in_call_on(model)) return LLMODEL_OK;
        // the others stop within a step; then it is released by the last (or here)
        model->life_cv.wait(lk, [&] { return model->released || model->calls.load() == 0; });
        lk.unlock();
        release_model(model);
        return LLMODEL_OK;
    });
}

LLMODEL_API void llmodel_model_free(llmodel_model *model) {
    if (!model) return;
    try {
        model->closing.store(true);
        if (model->calls.load() == 0) release_model(model);
        unref_model(model); // a running call's own reference keeps it until that call returns
    } catch (...) {
    }
}

LLMODEL_API llmodel_status llmodel_cancel(llmodel_model *model) {
    // only an atomic increment: safe from any thread and from a signal handler
    if (!model) return LLMODEL_ERR_INVALID_ARGUMENT;
    model->cancel_epoch.fetch_add(1, std::memory_order_relaxed);
    return LLMODEL_OK;
}

LLMODEL_API llmodel_status llmodel_conversation_cancel(llmodel_conversation *conv) {
    if (!conv) return LLMODEL_ERR_INVALID_ARGUMENT;
    conv->cancel.store(true, std::memory_order_relaxed);
    return LLMODEL_OK;
}

LLMODEL_API llmodel_status llmodel_conversation_new(llmodel_model *model, llmodel_conversation **out) {
    if (out) *out = nullptr;
    return model_entry(model, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(out, "out is NULL");
        auto c = std::make_unique<llmodel_conversation>();
        c->m = model;
        model->refs.fetch_add(1, std::memory_order_relaxed);
        *out = c.release();
        return LLMODEL_OK;
    });
}

LLMODEL_API void llmodel_conversation_free(llmodel_conversation *conv) {
    if (!conv || conv->is_default) return;
    try {
        // during a call (a callback's, or another thread's): that call stops and frees it as it returns
        if (conv->state.fetch_or(kFreePending) & kBusy) return;
        destroy_conversation(conv);
    } catch (...) {
    }
}

} // extern "C"
