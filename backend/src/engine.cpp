// The engine: sequences of the shared cache pool, parking, growth, and the
// steps that decode every running conversation together.
//
// A step has a leader: the first of the waiting callers to find no step
// running. It waits a moment for the other running generations to hand in
// their next token (they are usually busy in a callback for a few
// microseconds), takes what is waiting into one batch, decodes it with one
// llama_decode, samples each request's next token, and wakes their callers.
// There is no thread of our own: callers take turns leading.
#include "engine.h"

#include <algorithm>
#include <chrono>

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

size_t used_cells(const Engine &e) {
    size_t n = 0;
    for (const llmodel_conversation *c : e.seq_owner) {
        if (c) n += c->tokens.size();
    }
    return n;
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
        }
    }
    llama_memory_seq_rm(memory(e), c->seq, -1, -1);
    e.seq_owner[static_cast<size_t>(c->seq)] = nullptr;
    c->seq = -1;
}

// Puts c (parked or new) into free sequence seq.
void restore(Engine &e, llmodel_conversation *c, int32_t seq) {
    c->seq = seq;
    e.seq_owner[static_cast<size_t>(seq)] = c;
    if (c->parked.empty() || c->tokens.empty()) {
        c->tokens.clear();
    } else if (llama_state_seq_set_data(e.ctx, c->parked.data(), c->parked.size(), seq) == 0) {
        llama_memory_seq_rm(memory(e), seq, -1, -1); // no room in one piece: evaluated again instead
        c->tokens.clear();
    }
    std::vector<uint8_t>().swap(c->parked);
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

// A bigger pool: every resident conversation is parked, the context made
// anew, and the running ones put back at once (into the empty pool, where
// their caches fit in one piece each).
llmodel_status grow(llmodel_model *m, size_t needed) {
    Engine &e = m->engine;
    size_t want = std::max<size_t>(static_cast<size_t>(e.n_cells) * 2, needed);
    want = std::min<size_t>(want, static_cast<size_t>(e.max_cells));
    std::vector<llmodel_conversation *> running;
    for (llmodel_conversation *c : e.seq_owner) {
        if (!c) continue;
        if (c->running) running.push_back(c);
        park(e, c);
    }
    const int32_t old_cells = e.n_cells;
    llama_free(e.ctx);
    e.ctx = nullptr;
    llmodel_status s = create_engine_context(m, static_cast<int32_t>(want));
    if (s != LLMODEL_OK) {
        if (create_engine_context(m, old_cells) != LLMODEL_OK) {
            return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not make the cache pool bigger, nor remake it");
        }
        clear_error();
        s = fail(LLMODEL_ERR_OUT_OF_MEMORY, "not enough memory to make the cache pool bigger (" +
                                                std::to_string(want) + " cells) for the conversations running at once; "
                                                "load the model with a smaller n_parallel or n_ctx");
    }
    for (llmodel_conversation *c : running) {
        const int32_t seq = free_seq(e);
        if (seq >= 0) restore(e, c, seq);
    }
    return s;
}

// Makes room for `extra` more cells besides the resident caches and the
// caches of keep's parked conversations: parks idle conversations, then
// grows the pool.
llmodel_status make_room(llmodel_model *m, size_t extra, const std::vector<llmodel_conversation *> &keep) {
    Engine &e = m->engine;
    auto needed = [&] {
        size_t n = extra;
        for (const llmodel_conversation *c : keep) {
            if (c->seq < 0) n += c->tokens.size();
        }
        return n;
    };
    while (used_cells(e) + needed() > static_cast<size_t>(e.n_cells)) {
        if (llmodel_conversation *idle = least_recent_idle(e, keep)) {
            park(e, idle);
            continue;
        }
        if (e.n_cells >= e.max_cells) break; // cannot happen: n_parallel caches of n_ctx fit
        if (llmodel_status s = grow(m, used_cells(e) + needed())) return s;
    }
    return LLMODEL_OK;
}

// Gives c a sequence (restoring its parked cache); false when every
// sequence belongs to a running conversation or to keep.
bool acquire_seq(llmodel_model *m, llmodel_conversation *c, const std::vector<llmodel_conversation *> &keep) {
    Engine &e = m->engine;
    if (c->seq >= 0) return true;
    int32_t seq = free_seq(e);
    if (seq < 0) {
        std::vector<llmodel_conversation *> spare(keep);
        spare.push_back(c);
        llmodel_conversation *idle = least_recent_idle(e, spare);
        if (!idle) return false;
        seq = idle->seq;
        park(e, idle);
    }
    restore(e, c, seq);
    return true;
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
    size_t n_new = 0;
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
        n_new += r->n_taken;
    }
    if (live.empty()) return;
    LogCapture capture;
    if (llmodel_status s = make_room(m, n_new, convs)) {
        std::string why = llmodel_last_error();
        for (Request *r : live) fail_request(r, s, why);
        return;
    }
    std::vector<Request *> batch;
    int32_t n_tokens = 0;
    for (Request *r : live) {
        llmodel_conversation *c = r->c;
        if (!acquire_seq(m, c, convs)) { // cannot happen: running conversations hold their sequences
            fail_request(r, LLMODEL_ERR_INTERNAL, "no sequence free for a running conversation");
            continue;
        }
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

llmodel_status create_engine_context(llmodel_model *m, int32_t n_cells) {
    Engine &e = m->engine;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = static_cast<uint32_t>(n_cells);
    cp.n_batch = static_cast<uint32_t>(e.n_batch);
    cp.n_ubatch = static_cast<uint32_t>(std::min(e.n_batch, 512));
    cp.n_seq_max = static_cast<uint32_t>(e.n_seq);
    cp.kv_unified = true; // one pool: a conversation may use as many cells as it needs
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
        return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not create a context of " + std::to_string(n_cells) + " cells" +
                                                   (why.empty() ? "" : ": " + why));
    }
    e.ctx = ctx;
    e.n_cells = static_cast<int32_t>(llama_n_ctx(ctx));
    e.n_batch = static_cast<int32_t>(llama_n_batch(ctx));
    if (e.seq_owner.size() != static_cast<size_t>(e.n_seq)) e.seq_owner.assign(static_cast<size_t>(e.n_seq), nullptr);
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
            if (c->seq < 0) {
                s = make_room(m, 0, {c});
                placed = s == LLMODEL_OK && acquire_seq(m, c, {});
            } else {
                placed = true;
            }
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
                ++e.n_active;
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
    --e.n_active;
    e.active.erase(std::remove(e.active.begin(), e.active.end(), r), e.active.end());
    e.cv.notify_all();
}

void run_step(Request &r) {
    Engine &e = r.c->m->engine;
    std::unique_lock<std::mutex> lk(e.mu);
    r.finished_step = false;
    r.missed = false;
    e.pending.push_back(&r);
    e.cv.notify_all();
    while (!r.finished_step) {
        if (e.leading) {
            e.cv.wait(lk);
            continue;
        }
        e.leading = true;
        // wait briefly for the other running generations' next tokens
        const double window_ms = std::min(2.0, std::max(0.05, 0.1 * e.last_step_ms));
        const auto deadline = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(window_ms * 1000));
        for (;;) {
            size_t expected = 0;
            for (const Request *a : e.active) expected += a->missed ? 0 : 1;
            if (e.pending.size() >= expected) break;
            if (e.cv.wait_until(lk, deadline) == std::cv_status::timeout) {
                for (Request *a : e.active) {
                    if (std::find(e.pending.begin(), e.pending.end(), a) == e.pending.end()) a->missed = true;
                }
                break;
            }
        }
        e.cv.wait(lk, [&] { return !e.held; });
        e.held = true;
        std::vector<Request *> chosen = choose(e, &r);
        lk.unlock();
        const auto t0 = Clock::now();
        try {
            decode_step(r.c->m, chosen);
        } catch (const std::bad_alloc &) {
            for (Request *q : chosen) fail_request(q, LLMODEL_ERR_OUT_OF_MEMORY, "out of memory");
        } catch (const std::exception &ex) {
            for (Request *q : chosen) fail_request(q, LLMODEL_ERR_INTERNAL, std::string("internal error: ") + ex.what());
        }
        const auto t1 = Clock::now();
        lk.lock();
        e.last_step_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
        e.held = false;
        e.leading = false;
        for (Request *q : chosen) q->finished_step = true;
        e.cv.notify_all();
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

bool save_sequence(llmodel_conversation *c, std::vector<uint8_t> &out) {
    Engine &e = c->m->engine;
    if (c->tokens.empty()) {
        out.clear();
        return true;
    }
    if (c->seq < 0) {
        out = c->parked;
        return !out.empty();
    }
    const size_t n = llama_state_seq_get_size(e.ctx, c->seq);
    out.resize(n);
    const size_t got = n ? llama_state_seq_get_data(e.ctx, out.data(), n, c->seq) : 0;
    out.resize(got);
    return got > 0;
}

bool load_sequence(llmodel_conversation *c, const uint8_t *data, size_t size, std::vector<llama_token> tokens) {
    Engine &e = c->m->engine;
    forget_conversation(c);
    if (tokens.empty()) return true;
    if (c->seq < 0) { // checked as it is restored; a state that does not fit is then evaluated again
        c->parked.assign(data, data + size);
        c->tokens = std::move(tokens);
        return true;
    }
    if (llama_state_seq_set_data(e.ctx, data, size, c->seq) == 0) {
        llama_memory_seq_rm(memory(e), c->seq, -1, -1);
        return false;
    }
    c->tokens = std::move(tokens);
    return true;
}

} // namespace llmodel
