// The engine: the sequences (a cache of n_ctx cells each), parking, growth,
// and the steps that decode every running conversation together.
//
// Every step runs on the model's engine thread: it waits a moment for the
// running generations to hand in their next token (their callers are
// usually busy in a callback for a few microseconds), takes what is waiting
// into one batch, decodes it with one llama_decode, samples each request's
// next token, and wakes their callers, whose callbacks run on their own
// threads. One thread calls into ggml, so one thread team computes (with
// OpenMP each calling thread has a team of its own, and teams spinning side
// by side starve each other of cores).
#include "engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "sampler.h"

namespace llmodel {

using Clock = std::chrono::steady_clock;

namespace {

// ggml asks this between graph nodes: a step stops early only when every
// request in it wants to stop (the others must not be disturbed).
bool abort_step(void *data) {
    const auto *m = static_cast<const llmodel_model *>(data);
    if (m->closing.load(std::memory_order_relaxed)) return true;
    const std::vector<Request *> *batch = m->engine.stepping;
    if (!batch || batch->empty()) return false;
    for (const Request *r : *batch) {
        if (!stop_requested(r->c, r->epoch)) return false;
    }
    return true;
}

llama_memory_t memory(const Engine &e) { return llama_get_memory(e.ctx); }

// llama.cpp's saved state of one sequence, after an 8-byte head (a magic
// number and the sequence), names the number of sequences of its context and
// has a (mostly empty) part for each: [n][0]*k[part][0]*rest for sequence k.
// Rewritten for a context of to_n sequences as [to_n][part][0]*(to_n-1),
// which llama.cpp reads into whatever sequence it is given.
// Empty when the state is not of that form (a model with two caches, like
// one with sliding-window layers, writes two such sections).
std::vector<uint8_t> restream(const std::vector<uint8_t> &blob, int32_t from_n, int32_t from_seq, int32_t to_n) {
    const size_t u = sizeof(uint32_t), head = 2 * u;
    const size_t lead = head + u + u * static_cast<size_t>(from_seq);
    const size_t trail = u * static_cast<size_t>(from_n - from_seq - 1);
    if (blob.size() <= lead + trail) return {};
    uint32_t v;
    std::memcpy(&v, blob.data() + head, u);
    if (v != static_cast<uint32_t>(from_n)) return {};
    for (size_t off = head + u; off < lead; off += u) {
        std::memcpy(&v, blob.data() + off, u);
        if (v != 0) return {};
    }
    for (size_t off = blob.size() - trail; off < blob.size(); off += u) {
        std::memcpy(&v, blob.data() + off, u);
        if (v != 0) return {};
    }
    std::vector<uint8_t> out(head + u + (blob.size() - lead - trail) + u * static_cast<size_t>(to_n - 1), 0);
    std::memcpy(out.data(), blob.data(), head);
    v = static_cast<uint32_t>(to_n);
    std::memcpy(out.data() + head, &v, u);
    std::memcpy(out.data() + head + u, blob.data() + lead, blob.size() - lead - trail);
    return out;
}

// Copies c's cache to host memory and gives up its sequence.
void park(Engine &e, llmodel_conversation *c) {
    if (c->seq < 0) return;
    c->parked.clear();
    if (!c->tokens.empty()) {
        const size_t n = llama_state_seq_get_size(e.ctx, c->seq);
        c->parked.resize(n);
        const size_t got = n ? llama_state_seq_get_data(e.ctx, c->parked.data(), n, c->seq) : 0;
        if (got == 0) {
            c->parked.clear();
            c->tokens.clear(); // could not be kept: evaluated again when it runs next
        } else {
            c->parked.resize(got);
            c->parked_n_seq = e.n_seq;
            c->parked_seq = c->seq;
        }
    }
    llama_memory_seq_rm(memory(e), c->seq, -1, -1);
    e.seq_owner[static_cast<size_t>(c->seq)] = nullptr;
    c->seq = -1;
}

// Puts c (parked or new) into free sequence seq. A cache that cannot be
// read back (parked by a context with another number of sequences, of a
// model whose state cannot be rewritten for it) is evaluated again instead.
void restore(Engine &e, llmodel_conversation *c, int32_t seq) {
    c->seq = seq;
    e.seq_owner[static_cast<size_t>(seq)] = c;
    if (!c->parked.empty() && c->parked_n_seq != e.n_seq) {
        c->parked = restream(c->parked, c->parked_n_seq, c->parked_seq, e.n_seq);
    }
    if (c->parked.empty() || c->tokens.empty()) {
        c->tokens.clear();
    } else if (llama_state_seq_set_data(e.ctx, c->parked.data(), c->parked.size(), seq) == 0) {
        llama_memory_seq_rm(memory(e), seq, -1, -1);
        c->tokens.clear();
    }
    std::vector<uint8_t>().swap(c->parked);
}

// Evaluates c's tokens again into its (empty) sequence: how a running
// conversation gets its cache back in a context made anew.
bool replay(Engine &e, llmodel_conversation *c) {
    const std::vector<llama_token> tokens = std::move(c->tokens);
    c->tokens.clear();
    llama_batch b = llama_batch_init(e.n_batch, 0, 1);
    bool ok = true;
    for (size_t i = 0; ok && i < tokens.size();) {
        const size_t n = std::min(tokens.size() - i, static_cast<size_t>(e.n_batch));
        b.n_tokens = 0;
        for (size_t k = 0; k < n; ++k) {
            const int32_t j = b.n_tokens++;
            b.token[j] = tokens[i + k];
            b.pos[j] = static_cast<llama_pos>(i + k);
            b.n_seq_id[j] = 1;
            b.seq_id[j][0] = c->seq;
            b.logits[j] = false;
        }
        ok = llama_decode(e.ctx, b) == 0;
        i += n;
    }
    llama_batch_free(b);
    if (ok) {
        c->tokens = tokens;
    } else {
        llama_memory_seq_rm(memory(e), c->seq, -1, -1);
    }
    return ok;
}

bool contains(const std::vector<llmodel_conversation *> &v, const llmodel_conversation *c) {
    return std::find(v.begin(), v.end(), c) != v.end();
}

// The resident conversation idle the longest, not running and not in keep.
llmodel_conversation *least_recent_idle(const Engine &e, const std::vector<llmodel_conversation *> &keep) {
    llmodel_conversation *best = nullptr;
    for (llmodel_conversation *c : e.seq_owner) {
        if (c && !c->running && !contains(keep, c) && (!best || c->last_used < best->last_used)) best = c;
    }
    return best;
}

int32_t free_seq(const Engine &e) {
    for (size_t i = 0; i < e.seq_owner.size(); ++i) {
        if (!e.seq_owner[i]) return static_cast<int32_t>(i);
    }
    return -1;
}

// More sequences: the context is made anew with twice the sequences (up to
// n_parallel); idle conversations are parked (and evaluate their tokens
// again when they next run), running ones evaluate theirs again at once.
llmodel_status grow(llmodel_model *m) {
    Engine &e = m->engine;
    const int32_t want = std::min(e.max_seq, e.n_seq * 2);
    std::vector<llmodel_conversation *> running;
    for (llmodel_conversation *c : e.seq_owner) {
        if (!c) continue;
        if (c->running) {
            running.push_back(c);
            e.seq_owner[static_cast<size_t>(c->seq)] = nullptr;
            c->seq = -1;
        } else {
            park(e, c);
        }
    }
    const int32_t old_seq = e.n_seq;
    llama_free(e.ctx);
    e.ctx = nullptr;
    llmodel_status s = create_engine_context(m, want);
    if (s != LLMODEL_OK) {
        if (create_engine_context(m, old_seq) != LLMODEL_OK) {
            return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not make room for more conversations, nor remake the cache");
        }
        s = fail(LLMODEL_ERR_OUT_OF_MEMORY, "not enough memory for the caches of " + std::to_string(want) +
                                                " conversations running at once; load the model with a smaller "
                                                "n_parallel or n_ctx");
    }
    for (llmodel_conversation *c : running) {
        const int32_t seq = free_seq(e);
        if (seq < 0) break; // cannot happen: there are more sequences than before
        c->seq = seq;
        e.seq_owner[static_cast<size_t>(seq)] = c;
        if (!replay(e, c) && s == LLMODEL_OK) {
            s = fail(LLMODEL_ERR_BACKEND, "could not evaluate a running conversation again in the larger cache");
        }
    }
    return s;
}

// Gives c a sequence (restoring its parked cache): a free one, else the one
// of the conversation idle the longest (not running, not in keep), else a
// new one (the cache grows). LLMODEL_ERR_BUSY when every one of n_parallel
// sequences belongs to a running conversation.
llmodel_status acquire_seq(llmodel_model *m, llmodel_conversation *c, const std::vector<llmodel_conversation *> &keep) {
    Engine &e = m->engine;
    if (c->seq >= 0) return LLMODEL_OK;
    int32_t seq = free_seq(e);
    if (seq < 0) {
        std::vector<llmodel_conversation *> spare(keep);
        spare.push_back(c);
        if (llmodel_conversation *idle = least_recent_idle(e, spare)) {
            seq = idle->seq;
            park(e, idle);
        } else if (e.n_seq < e.max_seq) {
            if (llmodel_status s = grow(m)) return s;
            if (c->seq >= 0) return LLMODEL_OK; // it was running: put back by grow
            seq = free_seq(e);
        }
    }
    if (seq < 0) return LLMODEL_ERR_BUSY;
    restore(e, c, seq);
    return LLMODEL_OK;
}

// Drops the oldest tokens after n_keep to make room (a context shift).
bool shift(Engine &e, llmodel_conversation *c, int32_t n_keep) {
    llama_memory_t mem = memory(e);
    if (!llama_memory_can_shift(mem)) return false;
    const int32_t n_past = static_cast<int32_t>(c->tokens.size());
    n_keep = std::max(0, std::min(n_keep, n_past - 2));
    const int32_t n_discard = (n_past - n_keep) / 2;
    if (n_discard <= 0) return false;
    llama_memory_seq_rm(mem, c->seq, n_keep, n_keep + n_discard);
    llama_memory_seq_add(mem, c->seq, n_keep + n_discard, n_past, -n_discard);
    c->tokens.erase(c->tokens.begin() + n_keep, c->tokens.begin() + n_keep + n_discard);
    return true;
}

// After the common prefix (keep tokens), a chat whose oldest turns were
// dropped continues with cached tokens further on: finds the shortest gap
// whose removal lines the cache up with the prompt again, takes it out and
// shifts what follows into place instead of evaluating it all again.
// Returns the new length of the reused prefix.
size_t reuse_after_gap(Engine &e, llmodel_conversation *c, const std::vector<llama_token> &prompt, size_t keep) {
    llama_memory_t mem = memory(e);
    const size_t n_cached = c->tokens.size();
    if (keep >= n_cached || keep >= prompt.size() || !llama_memory_can_shift(mem)) return keep;
    // a match must run this far (or to the end of the cache) to be trusted
    const size_t min_run = std::min<size_t>(64, prompt.size() - keep);
    for (size_t gap = 1; keep + gap < n_cached; ++gap) {
        size_t run = 0;
        while (keep + gap + run < n_cached && keep + run < prompt.size() &&
               c->tokens[keep + gap + run] == prompt[keep + run]) {
            ++run;
        }
        if (run == 0 || (run < min_run && keep + gap + run < n_cached)) continue;
        const llama_pos from = static_cast<llama_pos>(keep), to = static_cast<llama_pos>(keep + gap);
        if (!llama_memory_seq_rm(mem, c->seq, from, to)) return keep;
        llama_memory_seq_add(mem, c->seq, to, static_cast<llama_pos>(n_cached), -static_cast<llama_pos>(gap));
        c->tokens.erase(c->tokens.begin() + keep, c->tokens.begin() + keep + gap);
        return keep + run;
    }
    return keep;
}

void fail_request(Request *r, llmodel_status status, std::string why) {
    r->outcome = Request::kFailed;
    r->status = status;
    r->error = std::move(why);
}

// One step over the chosen requests (the engine held by the leader).
void decode_step(llmodel_model *m, const std::vector<Request *> &chosen) {
    Engine &e = m->engine;
    std::vector<Request *> live;
    std::vector<llmodel_conversation *> convs;
    for (Request *r : chosen) {
        r->outcome = Request::kDone;
        r->status = LLMODEL_OK;
        r->error.clear();
        r->sampled = LLAMA_TOKEN_NULL;
        if (stop_requested(r->c, r->epoch)) {
            r->outcome = Request::kCancelled;
            r->n_taken = 0;
            continue;
        }
        live.push_back(r);
        convs.push_back(r->c);
    }
    if (live.empty()) return;
    LogCapture capture;
    std::vector<Request *> batch;
    int32_t n_tokens = 0;
    // a running conversation parked to let the cache grow comes back first
    for (Request *r : live) {
        llmodel_conversation *c = r->c;
        if (llmodel_status s = acquire_seq(m, c, convs)) { // running conversations always have a place
            fail_request(r, s == LLMODEL_ERR_BUSY ? LLMODEL_ERR_INTERNAL : s,
                         s == LLMODEL_ERR_BUSY ? "no sequence free for a running conversation" : llmodel_last_error());
            continue;
        }
    }
    // in sequence order: llama.cpp puts consecutive sequences into one ubatch
    std::sort(live.begin(), live.end(), [](const Request *a, const Request *b) { return a->c->seq < b->c->seq; });
    for (Request *r : live) {
        llmodel_conversation *c = r->c;
        if (r->outcome != Request::kDone) continue;
        if (c->tokens.size() + r->n_taken > static_cast<size_t>(m->n_ctx)) {
            if (!r->context_shift || !shift(e, c, r->n_keep)) {
                r->outcome = Request::kContextFull;
                r->n_taken = 0;
                continue;
            }
        }
        batch.push_back(r);
        n_tokens += static_cast<int32_t>(r->n_taken);
    }
    if (batch.empty()) return;

    llama_batch b = llama_batch_init(n_tokens, 0, 1);
    std::vector<int32_t> last_index;
    for (Request *r : batch) {
        const llama_pos pos0 = static_cast<llama_pos>(r->c->tokens.size());
        for (size_t i = 0; i < r->n_taken; ++i) {
            const int32_t k = b.n_tokens++;
            b.token[k] = r->todo[i];
            b.pos[k] = pos0 + static_cast<llama_pos>(i);
            b.n_seq_id[k] = 1;
            b.seq_id[k][0] = r->c->seq;
            b.logits[k] = false;
        }
        const bool sample = r->sampler && r->n_taken == r->n_todo;
        if (sample) b.logits[b.n_tokens - 1] = true;
        last_index.push_back(sample ? b.n_tokens - 1 : -1);
    }
    e.stepping = &batch;
    int32_t ret = llama_decode(e.ctx, b);
    e.stepping = nullptr;
    llama_batch_free(b);
    if (ret == 2) { // aborted: every request in it wanted to stop; nothing entered the cache
        for (Request *r : batch) {
            r->outcome = Request::kCancelled;
            r->n_taken = 0;
        }
        return;
    }
    if (ret != 0) {
        std::string why = last_lines(capture.text());
        for (Request *r : batch) {
            forget_conversation(r->c); // the cache may be half-written: start its next call clean
            r->n_taken = 0;
            if (ret == 1) {
                fail_request(r, LLMODEL_ERR_CONTEXT_OVERFLOW,
                             "no room left in the cache pool for the batch" + (why.empty() ? "" : " (" + why + ")"));
            } else {
                fail_request(r, LLMODEL_ERR_BACKEND, "llama_decode failed with code " + std::to_string(ret) +
                                                         (why.empty() ? "" : ": " + why));
            }
        }
        return;
    }
    for (size_t k = 0; k < batch.size(); ++k) {
        Request *r = batch[k];
        r->c->tokens.insert(r->c->tokens.end(), r->todo, r->todo + r->n_taken);
        if (last_index[k] >= 0) r->sampled = r->sampler->sample(llama_get_logits_ith(e.ctx, last_index[k]));
    }
}

// The requests for the next step, taken out of pending: the leader's own
// first, then every generated token, then prompt chunks while the step's
// token budget lasts.
std::vector<Request *> choose(Engine &e, Request *own) {
    std::vector<Request *> chosen;
    int32_t budget = e.n_batch;
    auto take = [&](Request *r) {
        const size_t cap = r->max_chunk > 0 ? std::min<size_t>(static_cast<size_t>(r->max_chunk), r->n_todo) : r->n_todo;
        r->n_taken = std::min<size_t>(cap, static_cast<size_t>(std::max(budget, 1)));
        budget -= static_cast<int32_t>(r->n_taken);
        chosen.push_back(r);
    };
    take(own);
    for (Request *r : e.pending) {
        if (r != own && r->n_todo == 1 && budget > 0) take(r);
    }
    for (Request *r : e.pending) {
        if (budget <= 0) break;
        if (r != own && r->n_todo > 1) take(r);
    }
    e.pending.erase(std::remove_if(e.pending.begin(), e.pending.end(),
                                   [&](Request *r) { return std::find(chosen.begin(), chosen.end(), r) != chosen.end(); }),
                    e.pending.end());
    return chosen;
}

} // namespace

llmodel_status create_engine_context(llmodel_model *m, int32_t n_seq) {
    Engine &e = m->engine;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(m->n_ctx) * static_cast<uint32_t>(n_seq);
    cp.n_batch = static_cast<uint32_t>(e.n_batch);
    cp.n_ubatch = static_cast<uint32_t>(std::min(e.n_batch, 512));
    cp.n_seq_max = static_cast<uint32_t>(n_seq);
    // a cache of its own for each sequence: a conversation's attention covers
    // only its own tokens, so its replies do not depend on the others
    cp.kv_unified = false;
    cp.n_threads = m->n_threads;
    cp.n_threads_batch = m->n_threads;
    cp.swa_full = true; // keeps every position, so chat turns can reuse the cache
    cp.no_perf = true;
    // a cancel, close or free stops a long prompt step within milliseconds
    cp.abort_callback = abort_step;
    cp.abort_callback_data = m;
    LogCapture capture;
    llama_context *ctx = llama_init_from_model(m->model, cp);
    if (!ctx) {
        std::string why = last_lines(capture.text());
        return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not create a context for " + std::to_string(n_seq) +
                                                   " conversations of " + std::to_string(m->n_ctx) + " tokens" +
                                                   (why.empty() ? "" : ": " + why));
    }
    e.ctx = ctx;
    e.n_seq = n_seq;
    e.n_batch = static_cast<int32_t>(llama_n_batch(ctx));
    e.seq_owner.assign(static_cast<size_t>(n_seq), nullptr);
    return LLMODEL_OK;
}

EngineHold::EngineHold(llmodel_model *m) : e_(m->engine) {
    std::unique_lock<std::mutex> lk(e_.mu);
    e_.cv.wait(lk, [&] { return !e_.held; });
    e_.held = true;
}

EngineHold::~EngineHold() {
    std::lock_guard<std::mutex> lk(e_.mu);
    e_.held = false;
    e_.cv.notify_all();
}

llmodel_status begin_generation(llmodel_conversation *c, const std::vector<llama_token> &prompt,
                                bool reuse_shifted, size_t *n_reused, Request *r) {
    llmodel_model *m = c->m;
    Engine &e = m->engine;
    std::unique_lock<std::mutex> lk(e.mu);
    for (;;) {
        e.cv.wait(lk, [&] { return !e.held; });
        e.held = true;
        lk.unlock();
        llmodel_status s = LLMODEL_OK;
        bool placed = false;
        try {
            s = acquire_seq(m, c, {});
            placed = s == LLMODEL_OK;
            if (s == LLMODEL_ERR_BUSY) s = LLMODEL_OK; // every sequence runs a generation: wait
            if (placed) {
                size_t keep = 0;
                while (keep < c->tokens.size() && keep < prompt.size() && c->tokens[keep] == prompt[keep]) ++keep;
                if (reuse_shifted) keep = reuse_after_gap(e, c, prompt, keep);
                if (keep == prompt.size()) --keep; // at least one token is evaluated, for its logits
                if (keep < c->tokens.size()) {
                    if (!llama_memory_seq_rm(memory(e), c->seq, static_cast<llama_pos>(keep), -1)) {
                        llama_memory_seq_rm(memory(e), c->seq, -1, -1); // cannot drop a suffix (recurrent)
                        keep = 0;
                    }
                    c->tokens.resize(keep);
                }
                *n_reused = keep;
                c->running = true;
            }
        } catch (...) {
            lk.lock();
            e.held = false;
            e.cv.notify_all();
            throw;
        }
        lk.lock();
        e.held = false;
        if (s != LLMODEL_OK || placed) {
            if (placed) {
                r->missed = false;
                e.active.push_back(r);
            }
            e.cv.notify_all();
            return s;
        }
        // every sequence runs a generation: wait until one ends
        e.cv.notify_all();
        e.cv.wait(lk);
        if (stop_requested(c, r->epoch)) return fail(LLMODEL_ERR_CANCELLED, "the call was cancelled");
    }
}

void end_generation(llmodel_conversation *c, Request *r) {
    Engine &e = c->m->engine;
    std::lock_guard<std::mutex> lk(e.mu);
    if (!c->running) return;
    c->running = false;
    c->last_used = ++e.clock;
    e.active.erase(std::remove(e.active.begin(), e.active.end(), r), e.active.end());
    e.cv.notify_all();
}

namespace {

// One decode step for the chosen requests, by a thread that set e.held
// (lk locked on entry and on return): the engine thread, or a lone
// generation's own thread.
void step_holding(llmodel_model *m, std::unique_lock<std::mutex> &lk, const std::vector<Request *> &chosen) {
    Engine &e = m->engine;
    lk.unlock();
    const auto t0 = Clock::now();
    try {
        decode_step(m, chosen);
    } catch (const std::bad_alloc &) {
        for (Request *q : chosen) fail_request(q, LLMODEL_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception &ex) {
        for (Request *q : chosen) fail_request(q, LLMODEL_ERR_INTERNAL, std::string("internal error: ") + ex.what());
    }
    const auto t1 = Clock::now();
    lk.lock();
    e.last_step_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    e.held = false;
    for (Request *q : chosen) q->finished_step = true;
    e.cv.notify_all();
}

// The engine thread's loop (see the top of this file).
void engine_loop(llmodel_model *m) {
    Engine &e = m->engine;
    std::unique_lock<std::mutex> lk(e.mu);
    for (;;) {
        e.cv.wait(lk, [&] { return e.stop || !e.pending.empty(); });
        if (e.stop) return;
        // wait briefly for the other running generations' next tokens
        const double window_ms = std::min(2.0, std::max(0.05, 0.1 * e.last_step_ms));
        const auto deadline = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(window_ms * 1000));
        for (;;) {
            size_t expected = 0;
            for (const Request *a : e.active) expected += a->missed ? 0 : 1;
            if (e.pending.size() >= expected || e.stop) break;
            if (e.cv.wait_until(lk, deadline) == std::cv_status::timeout) {
                for (Request *a : e.active) {
                    if (std::find(e.pending.begin(), e.pending.end(), a) == e.pending.end()) a->missed = true;
                }
                break;
            }
        }
        e.cv.wait(lk, [&] { return !e.held; });
        if (e.pending.empty()) continue;
        e.held = true;
        std::vector<Request *> chosen = choose(e, e.pending.front());
        step_holding(m, lk, chosen);
    }
}

} // namespace

void run_step(Request &r) {
    llmodel_model *m = r.c->m;
    Engine &e = m->engine;
    std::unique_lock<std::mutex> lk(e.mu);
    if (!e.thread.joinable() && !e.stop) e.thread = std::thread(engine_loop, m);
    r.finished_step = false;
    r.missed = false;
    e.pending.push_back(&r);
    if (!e.stop && !e.held && e.pending.size() == 1 && e.active.size() == 1 && e.active.front() == &r) {
        // the only generation running: its own thread decodes, sparing two
        // thread hand-offs per token (0.2 ms, 15% of a small model's token
        // on a GPU); the engine thread takes over once another one starts
        e.held = true;
        std::vector<Request *> chosen = choose(e, &r);
        step_holding(m, lk, chosen);
        return;
    }
    e.cv.notify_all();
    e.cv.wait(lk, [&] { return r.finished_step || e.stop; });
    if (!r.finished_step) { // the engine stopped: the model is being released
        e.pending.erase(std::remove(e.pending.begin(), e.pending.end(), &r), e.pending.end());
        r.outcome = Request::kCancelled;
        r.n_taken = 0;
    }
}

void stop_engine_thread(llmodel_model *m) {
    Engine &e = m->engine;
    {
        std::lock_guard<std::mutex> lk(e.mu);
        e.stop = true;
        e.cv.notify_all();
    }
    if (e.thread.joinable()) {
        if (e.thread.get_id() == std::this_thread::get_id()) {
            e.thread.detach(); // cannot happen: the engine thread never releases the model
        } else {
            e.thread.join();
        }
    }
}

void forget_conversation(llmodel_conversation *c) {
    Engine &e = c->m->engine;
    if (c->seq >= 0 && e.ctx) llama_memory_seq_rm(memory(e), c->seq, -1, -1);
    c->tokens.clear();
    std::vector<uint8_t>().swap(c->parked);
}

void drop_conversation(llmodel_conversation *c) {
    Engine &e = c->m->engine;
    forget_conversation(c);
    if (c->seq >= 0) e.seq_owner[static_cast<size_t>(c->seq)] = nullptr;
    c->seq = -1;
}

bool save_sequence(llmodel_conversation *c, std::vector<uint8_t> &out, int32_t *out_n_seq) {
    Engine &e = c->m->engine;
    out.clear();
    *out_n_seq = 1;
    if (c->tokens.empty()) return true;
    std::vector<uint8_t> raw;
    int32_t n_seq = e.n_seq, seq = c->seq;
    if (c->seq < 0) {
        raw = c->parked;
        n_seq = c->parked_n_seq;
        seq = c->parked_seq;
    } else {
        const size_t n = llama_state_seq_get_size(e.ctx, c->seq);
        raw.resize(n);
        raw.resize(n ? llama_state_seq_get_data(e.ctx, raw.data(), n, c->seq) : 0);
    }
    if (raw.empty()) return false;
    // saved as for a context of one sequence, whatever this one has now,
    // when the state can be rewritten so; else as it is
    out = n_seq == 1 ? raw : restream(raw, n_seq, seq, 1);
    if (out.empty()) {
        out = std::move(raw);
        *out_n_seq = n_seq;
    }
    return true;
}

bool load_sequence(llmodel_conversation *c, const uint8_t *data, size_t size, int32_t n_seq,
                   std::vector<llama_token> tokens) {
    Engine &e = c->m->engine;
    forget_conversation(c);
    if (tokens.empty()) return true;
    std::vector<uint8_t> state(data, data + size);
    if (n_seq != e.n_seq) state = n_seq == 1 ? restream(state, 1, 0, e.n_seq) : std::vector<uint8_t>();
    if (state.empty()) {
        fail(LLMODEL_ERR_INVALID_ARGUMENT, "this state was saved while the model had caches for " +
                                               std::to_string(n_seq) + " conversations at once and this model's "
                                               "cache cannot be rewritten for " + std::to_string(e.n_seq));
        return false;
    }
    if (c->seq < 0) { // checked as it is restored; a state that does not fit is then evaluated again
        c->parked = std::move(state);
        c->parked_n_seq = e.n_seq;
        c->parked_seq = 0; // read into whatever sequence it is given
        c->tokens = std::move(tokens);
        return true;
    }
    if (llama_state_seq_set_data(e.ctx, state.data(), state.size(), c->seq) == 0) {
        llama_memory_seq_rm(memory(e), c->seq, -1, -1);
        return false;
    }
    c->tokens = std::move(tokens);
    return true;
}

} // namespace llmodel
