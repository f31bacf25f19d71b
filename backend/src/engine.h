// The engine: the sequences and their caches, parking, and the batched steps.
#pragma once

#include "model.h"

#include <cstdint>
#include <string>
#include <vector>

namespace llmodel {

class TokenSampler;

// One conversation's part in the coming steps: tokens to evaluate (a
// prompt's rest, or the one token generated last), and, after the last of
// them, a token to sample. Filled by its caller, carried out by a step's
// leader (on whatever thread that is), read back by its caller.
struct Request {
    llmodel_conversation *c = nullptr;
    uint32_t epoch = 0;           // the model's cancel epoch when the generation began
    const llama_token *todo = nullptr;
    size_t n_todo = 0;
    int32_t max_chunk = 0;        // the most of todo per step (params.n_batch)
    TokenSampler *sampler = nullptr; // samples after the last of todo; NULL: no sampling
    bool context_shift = false;   // full context: drop old tokens, or stop
    int32_t n_keep = 0;

    // results of the last step it took part in
    enum Outcome { kDone, kContextFull, kCancelled, kFailed } outcome = kDone;
    size_t n_taken = 0;           // of todo, now in the cache
    llama_token sampled = LLAMA_TOKEN_NULL;
    llmodel_status status = LLMODEL_OK;
    std::string error;

    bool finished_step = false;   // scheduler: the step is over
    bool missed = false;          // scheduler: it was not there for a step; not waited for
};

// Creates the model's engine context with n_seq sequences of n_ctx cells.
llmodel_status create_engine_context(llmodel_model *m, int32_t n_seq);

// Holds the engine (its context and the conversations' engine-side fields)
// for one operation that is not a step: waits for a running step to end.
class EngineHold {
public:
    explicit EngineHold(llmodel_model *m);
    ~EngineHold();
    EngineHold(const EngineHold &) = delete;
    EngineHold &operator=(const EngineHold &) = delete;

private:
    Engine &e_;
};

// Starts a generation on c (prompt: its tokens): gives c a sequence (its
// parked cache restored; waiting for one while every sequence runs a
// generation), keeps the longest cached prefix (and, with reuse_shifted, the
// cache after a dropped span) and drops the rest. *n_reused gets the tokens
// kept. From then on c counts as running until end_generation.
// r is the request the generation's steps will use.
llmodel_status begin_generation(llmodel_conversation *c, const std::vector<llama_token> &prompt,
                                bool reuse_shifted, size_t *n_reused, Request *r);

// Ends what begin_generation started.
void end_generation(llmodel_conversation *c, Request *r);

// Hands r to the engine thread for its next step and returns when that
// step is over; r's outcome says how it went.
void run_step(Request &r);

// Stops the engine thread, if it runs, and waits for it (the model is being released).
void stop_engine_thread(llmodel_model *m);

// Forgets c's cache (engine held).
void forget_conversation(llmodel_conversation *c);

// Gives up c's sequence and parked cache (engine held), when c goes away.
void drop_conversation(llmodel_conversation *c);

// Copies c's cache into out (the llama.cpp sequence state; engine held).
// *out_n_seq: the sequences of the context the state is for (1 when it
// could be rewritten so: then it loads into any).
bool save_sequence(llmodel_conversation *c, std::vector<uint8_t> &out, int32_t *out_n_seq);

// Replaces c's cache by a saved one (engine held); false if it does not fit.
// n_seq: as save_sequence gave it. False, with the message recorded when it is ours, if it does not load.
bool load_sequence(llmodel_conversation *c, const uint8_t *data, size_t size, int32_t n_seq,
                   std::vector<llama_token> tokens);

} // namespace llmodel
