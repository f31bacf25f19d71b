// The model, its conversations and embedders, and the guards every entry
// point goes through. Shared by the llmodel sources; not public.
#pragma once

#include "internal.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <vector>

#include "llama.h"

namespace llmodel {
struct Request;
class TokenSampler;
} // namespace llmodel

// One conversation: a sequence in the model's cache pool (or parked in host
// memory), its token history and its call rule. Its engine-side fields
// (tokens, seq, parked, last_used) change only while the engine is held
// (Engine::hold), its guard fields only atomically.
struct llmodel_conversation {
    llmodel_model *m = nullptr;
    bool is_default = false; // the model's own: owned by it, holds no reference
    std::atomic<int> state{0}; // kBusy | kFreePending
    std::atomic<bool> cancel{false};
    std::atomic<std::thread::id> owner{};
    llmodel_stream *stream = nullptr; // the open stream, if any

    std::vector<llama_token> tokens; // what its cache holds, position by position
    int32_t seq = -1;                // its sequence in the pool, or -1
    std::vector<uint8_t> parked;     // its cache while it holds no sequence
    int32_t parked_n_seq = 0;        // the sequences of the context it was parked from
    int32_t parked_seq = 0;          // and the one it held
    uint64_t last_used = 0;          // for choosing whom to park
    bool running = false;            // a generation is in flight: it keeps its sequence
};

namespace llmodel {

// The guard state of a conversation or embedder.
enum : int {
    kBusy = 1,        // a call is running on it
    kFreePending = 2, // freed during a call: the call frees it as it returns
};

// The engine: the one llama_context whose KV cache holds the sequences
// (one cache of n_ctx cells each), and the scheduler that batches the
// conversations' steps.
// Whoever holds it (EngineHold) may touch the context; the engine thread
// holds it for each step.
struct Engine {
    llama_context *ctx = nullptr;
    int32_t n_seq = 1;       // sequences (each a cache of n_ctx) now
    int32_t max_seq = 1;     // the most it may grow to (n_parallel)
    int32_t n_batch = 512;   // tokens per step
    std::vector<llmodel_conversation *> seq_owner; // who holds each sequence

    std::mutex mu;
    std::condition_variable cv;
    bool held = false;       // someone is using the context
    bool stop = false;       // the engine thread must end
    std::thread thread;      // runs the steps (started with the first)
    std::vector<Request *> pending; // requests waiting for the next step
    std::vector<Request *> active;  // the generations in flight (expected in each step)
    uint64_t clock = 0;
    double last_step_ms = 0;
    const std::vector<Request *> *stepping = nullptr; // the batch being decoded
};

} // namespace llmodel

struct llmodel_model {
    // lifetime: the handle, each conversation and embedder, and each running
    // call hold a reference; the memory goes with the last
    std::atomic<int> refs{1};
    std::atomic<int> calls{0};
    std::atomic<bool> closing{false};   // closed or freed: running calls stop
    std::atomic<uint32_t> cancel_epoch{0}; // llmodel_cancel: calls begun before it stop
    std::mutex life_mu;
    std::condition_variable life_cv;
    bool released = false; // the weights and context are gone (under life_mu)

    llama_model *model = nullptr;
    const llama_vocab *vocab = nullptr;
    llmodel::Engine engine;
    llmodel_conversation *default_conv = nullptr;
    std::vector<llmodel_embedder *> embedders; // under life_mu
    int32_t n_threads = 1;
    int32_t n_ctx = 0; // of one conversation, as asked for
    int32_t n_gpu_layers = 0;
    std::string arch, name, chat_template, backend, device, device_description;
    bool has_chat_template = false;
    // a mapped file must stay as it was loaded: what it looked like then
    std::string path;
    bool mapped = false;
    struct stat file_stat {};
};

namespace llmodel {

// Frees the weights, the context and what conversations hold in it (once).
void release_model(llmodel_model *m);
// Drops one reference; the last one deletes the model.
void unref_model(llmodel_model *m);
// Deletes a conversation (engine side first), dropping its model reference.
void destroy_conversation(llmodel_conversation *c);

// A call on the model: counts as running (close waits for it, free leaves
// the memory to it). check() is LLMODEL_ERR_CLOSED once it is closing.
class ModelCall {
public:
    explicit ModelCall(const llmodel_model *m);
    ~ModelCall();
    llmodel_status check() const;
    ModelCall(const ModelCall &) = delete;
    ModelCall &operator=(const ModelCall &) = delete;

private:
    llmodel_model *m_;
};

// Whether the calling thread is inside a call on m (close must not wait then).
bool in_call_on(const llmodel_model *m);

// A call on a conversation: one at a time; a free asked for during it is
// carried out as it returns. Also a ModelCall on its model.
class ConversationCall {
public:
    explicit ConversationCall(llmodel_conversation *c);
    ~ConversationCall();
    llmodel_status check() const;
    ConversationCall(const ConversationCall &) = delete;
    ConversationCall &operator=(const ConversationCall &) = delete;

private:
    llmodel_conversation *c_;
    bool acquired_ = false;
    std::unique_ptr<ModelCall> model_;
};

// Runs an entry point's body; no exception leaves the library.
template <class F> llmodel_status guarded(F &&body) noexcept {
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

// The preamble of a model-level entry point: no exception leaves, the
// handle is checked and counted as in a call, then body() runs.
template <class F> llmodel_status model_entry(const llmodel_model *m, F &&body) noexcept {
    return guarded([&]() -> llmodel_status {
        if (!m) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "model handle is NULL");
        ModelCall call(m);
        if (llmodel_status s = call.check()) return s;
        return body();
    });
}

// The same for a conversation's entry points.
template <class F> llmodel_status conversation_entry(llmodel_conversation *c, F &&body) noexcept {
    return guarded([&]() -> llmodel_status {
        if (!c) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "conversation handle is NULL");
        ConversationCall call(c);
        if (llmodel_status s = call.check()) return s;
        return body();
    });
}

#define LLMODEL_REQUIRE(cond, msg) \
    do { if (!(cond)) return ::llmodel::fail(LLMODEL_ERR_INVALID_ARGUMENT, (msg)); } while (0)

// Whether the call running on c must stop now (cancelled, closed, freed).
bool stop_requested(const llmodel_conversation *c, uint32_t epoch);

} // namespace llmodel
