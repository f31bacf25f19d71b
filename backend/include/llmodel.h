/*
 * llmodel.h: a plain C interface to local language models (GGUF files),
 * run by llama.cpp/ggml.
 *
 * This header is a stable contract for any language binding. It uses only C99
 * and compiles as C and as C++.
 *
 * Conventions
 * -----------
 * - Handles are opaque. A model is created by llmodel_model_load() and
 *   destroyed by llmodel_model_free(). llmodel_model_close() releases the
 *   weights and the context early; the handle stays valid and every later call
 *   on it fails with LLMODEL_ERR_CLOSED. Conversations and embedders are
 *   created on a model and freed with their own *_free function.
 * - Functions that can fail return an llmodel_status. On failure a message
 *   that says what went wrong is kept for the calling thread and can be read
 *   with llmodel_last_error() until that thread's next llmodel call.
 * - Every entry point checks its arguments (NULL pointers, sizes, closed
 *   handles) and reports LLMODEL_ERR_INVALID_ARGUMENT or LLMODEL_ERR_CLOSED
 *   instead of crashing. No C++ exception ever leaves the library.
 * - Parameter structs come with a *_default_params() function. Start from the
 *   defaults and change only the fields you need: new fields may be added at
 *   the end in later versions (LLMODEL_ABI_VERSION changes when they are).
 * - Strings are UTF-8. Text arguments take an explicit byte length, so they
 *   need not be NUL-terminated; strings returned by the library are.
 *
 * Models, conversations, embedders
 * --------------------------------
 * A model (llmodel_model) holds the weights, loaded once, and one engine
 * context with one KV cache of n_ctx cells per sequence. A conversation
 * (llmodel_conversation) holds a sequence while it needs one: its own cache
 * (so each turn evaluates only its new tokens, and its attention covers only
 * its own tokens: what it generates does not depend on the other
 * conversations), its own sampler state and its own call rule. Any number of
 * conversations may exist; one that is idle when another needs its sequence
 * is "parked": its cache is copied to host memory and copied back when it
 * runs again, so it never evaluates its tokens twice. The context starts
 * with one sequence and grows (by doubling, up to
 * llmodel_load_params.n_parallel) only when that many conversations run at
 * the same time; memory is the weights once plus the caches in use.
 *
 * Conversations that generate at the same time are decoded together: each
 * engine step is one llama_decode over every running conversation's next
 * token (and the next chunk of any prompt being read), so a conversation
 * that starts later joins the running batch at the next step and one that
 * ends leaves it. Each conversation's tokens are sampled from its own logits
 * by its own sampler. (The engine's batched matrix kernels may round a
 * prompt read together with others differently; see README for how often a
 * greedy reply then differs.)
 *
 * The model-level generation functions (llmodel_generate, llmodel_stream_*,
 * llmodel_reset, llmodel_cached_tokens, llmodel_state_*) act on the model's
 * own default conversation, which exists as long as the model does.
 *
 * An embedder (llmodel_embedder) is a separate context over the same weights
 * that returns one pooled vector per text.
 *
 * Threads
 * -------
 * - One call at a time per conversation (and per embedder). A call on a
 *   conversation while another thread is inside a call on it fails at once
 *   with LLMODEL_ERR_BUSY (nothing is changed). Different conversations of
 *   one model may be used from different threads at the same time: that is
 *   how their generations are batched.
 * - Calls on the model itself that do not generate (tokenize, detokenize,
 *   facts, metadata, llmodel_conversation_new, ...) may be made from any
 *   thread at any time, also while conversations generate.
 * - llmodel_cancel() and llmodel_conversation_cancel() may be called at any
 *   time, from any thread or a signal handler.
 * - llmodel_model_close() stops every call running on the model's
 *   conversations and embedders; called from a thread that is not inside one
 *   of them it waits until they have returned (they stop within one engine
 *   step) and releases the model; called from one of their callbacks, the
 *   model is released as the last of them returns. llmodel_model_free()
 *   never waits: it does the same, and the handle's memory goes when the last
 *   running call has returned and the last conversation and embedder are
 *   freed. After either, calls on the model, its conversations and its
 *   embedders fail with LLMODEL_ERR_CLOSED; conversations and embedders must
 *   still be freed (llmodel_conversation_free works after the model is gone).
 * - A stream (llmodel_stream_begin) counts as a call on its conversation for
 *   each llmodel_stream_next and llmodel_stream_end; while it is open, calls
 *   that change that conversation's cache (generate, a second stream, reset,
 *   state_load) fail with LLMODEL_ERR_BUSY. Other conversations are free.
 * - Callbacks run on the thread that made the call. A callback must not call
 *   back into the library with the conversation it runs for (that fails
 *   with LLMODEL_ERR_BUSY), except to cancel it, close or free the model,
 *   or free the conversation (which stops the call and frees it as the call
 *   returns); other conversations and model-level calls are fine.
 * - llmodel_set_log_callback() should be called before any other function;
 *   the log callback may be called from any thread.
 */
#ifndef LLMODEL_H
#define LLMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(LLMODEL_BUILDING)
#    define LLMODEL_API __declspec(dllexport)
#  else
#    define LLMODEL_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define LLMODEL_API __attribute__((visibility("default")))
#else
#  define LLMODEL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct or a signature in this header changes, or
 * functions are added (2: the llmodel_stream_* functions; 3: llmodel_cancel,
 * LLMODEL_STOP_CANCELLED, llmodel_generate_params.reuse_shifted; 4:
 * conversations, batched decoding, embedders, n_parallel, logit bias and
 * presence/frequency penalties; 5: llmodel_load_params.f32_weights; 6:
 * grammars: llmodel_generate_params.grammar/grammar_root,
 * llmodel_grammar_check, LLMODEL_STOP_NO_ALLOWED_TOKEN). */
#define LLMODEL_ABI_VERSION 6

/* The most threads a model may be given (llmodel_load_params.n_threads,
 * llmodel_set_threads). */
#define LLMODEL_MAX_THREADS 512

/* The most conversations a model may decode together (llmodel_load_params.n_parallel). */
#define LLMODEL_MAX_PARALLEL 64

/* ------------------------------------------------------------------ types */

typedef struct llmodel_model llmodel_model; /* opaque */
typedef struct llmodel_conversation llmodel_conversation; /* opaque: one conversation on a model */
typedef struct llmodel_stream llmodel_stream; /* opaque: one generation, driven by the caller */
typedef struct llmodel_embedder llmodel_embedder; /* opaque: an embedding context on a model */
typedef int32_t llmodel_token;

#define LLMODEL_TOKEN_NONE ((llmodel_token)-1)
#define LLMODEL_SEED_RANDOM UINT32_MAX

typedef enum llmodel_status {
    LLMODEL_OK = 0,
    LLMODEL_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer, a bad size or value */
    LLMODEL_ERR_FILE_NOT_FOUND = 2,   /* the model file does not exist */
    LLMODEL_ERR_INVALID_FILE = 3,     /* empty, not GGUF, truncated, unreadable */
    LLMODEL_ERR_UNSUPPORTED = 4,      /* e.g. an architecture llama.cpp does not know */
    LLMODEL_ERR_OUT_OF_MEMORY = 5,    /* weights or context could not be allocated */
    LLMODEL_ERR_CONTEXT_OVERFLOW = 6, /* the prompt does not fit in the context */
    LLMODEL_ERR_BUSY = 7,             /* another call is running on this handle */
    LLMODEL_ERR_CLOSED = 8,           /* the handle was closed */
    LLMODEL_ERR_CANCELLED = 9,        /* the prompt callback returned false, or a cancel */
    LLMODEL_ERR_BUFFER_TOO_SMALL = 10,/* the needed size was stored in *n_out */
    LLMODEL_ERR_NO_DEVICE = 11,       /* the requested device does not exist */
    LLMODEL_ERR_BACKEND = 12,         /* llama.cpp/ggml failed while computing */
    LLMODEL_ERR_INTERNAL = 13         /* a bug: please report it */
} llmodel_status;

/* Why a generation ended (llmodel_generate_result.stop_reason). */
typedef enum llmodel_stop_reason {
    LLMODEL_STOP_NONE = 0,         /* no token was asked for (n_predict == 0) */
    LLMODEL_STOP_EOG = 1,          /* the model produced an end-of-generation token */
    LLMODEL_STOP_LENGTH = 2,       /* n_predict tokens were produced */
    LLMODEL_STOP_CALLBACK = 3,     /* the response callback returned false */
    LLMODEL_STOP_CONTEXT_FULL = 4, /* the context is full and shifting was not allowed */
    LLMODEL_STOP_CANCELLED = 5,    /* a cancel, or the model or conversation was closed or freed meanwhile */
    LLMODEL_STOP_NO_ALLOWED_TOKEN = 6 /* the grammar, with the logit bias, allowed no token at all */
} llmodel_stop_reason;

typedef enum llmodel_log_level {
    LLMODEL_LOG_DEBUG = 1,
    LLMODEL_LOG_INFO = 2,
    LLMODEL_LOG_WARN = 3,
    LLMODEL_LOG_ERROR = 4
} llmodel_log_level;

/* ---------------------------------------------------- library and errors */

/* The library's version, e.g. "0.1.0". Never NULL. */
LLMODEL_API const char *llmodel_version(void);

/* LLMODEL_ABI_VERSION as compiled into the library; compare with the header's. */
LLMODEL_API int32_t llmodel_abi_version(void);

/* The message of the calling thread's last failure ("" when there was none).
 * Valid until the thread's next llmodel call. Never NULL. */
LLMODEL_API const char *llmodel_last_error(void);

/* A short constant name for a status, e.g. "LLMODEL_ERR_BUSY". Never NULL. */
LLMODEL_API const char *llmodel_status_name(llmodel_status status);

/* Receives llama.cpp's and ggml's log lines (text usually ends in '\n'). */
typedef void (*llmodel_log_callback)(llmodel_log_level level, const char *text, void *user_data);

/* Installs a log callback; NULL (the default) discards every log line, so the
 * library prints nothing by itself. */
LLMODEL_API void llmodel_set_log_callback(llmodel_log_callback callback, void *user_data);

/* The folder the compute backends (libggml-cpu-*, libggml-vulkan, ...) are
 * loaded from: the folder of this library, or $LLMODEL_BACKEND_DIR when set.
 * Backends are loaded once, on first need. Never NULL. */
LLMODEL_API const char *llmodel_backend_dir(void);

/* The CPU backend variant in use, e.g. "haswell", "skylakex", "sse42", or
 * "native" for a build with only the build machine's variant, "" if no CPU
 * backend could be loaded. Loads the backends if needed. Never NULL. */
LLMODEL_API const char *llmodel_cpu_variant(void);

/* Number of physical CPU cores available to this process (at least 1). */
LLMODEL_API int32_t llmodel_physical_cores(void);

/* ---------------------------------------------------------------- devices */

typedef struct llmodel_device_info {
    const char *backend;     /* "CPU", "Vulkan", "CUDA", "Metal", ... */
    const char *name;        /* unique, e.g. "CPU", "Vulkan0", "CUDA0" */
    const char *description; /* human readable, e.g. the GPU's product name */
    const char *vendor;      /* "NVIDIA", "AMD", "Intel", "Apple", or "" */
    bool is_gpu;             /* a discrete or integrated GPU */
    uint64_t memory_total;   /* bytes, 0 if unknown */
    uint64_t memory_free;    /* bytes, 0 if unknown */
} llmodel_device_info;

/* Number of compute devices found (the CPU included). Loads the backends if needed. */
LLMODEL_API size_t llmodel_device_count(void);

/* Fills *out for device i (0 <= i < llmodel_device_count()). The strings
 * stay valid for the life of the process. */
LLMODEL_API llmodel_status llmodel_device_get(size_t index, llmodel_device_info *out);

/* ------------------------------------------------------------ loading */

typedef struct llmodel_load_params {
    int32_t n_ctx;        /* context length in tokens; 0: the model's training context */
    int32_t n_batch;      /* most tokens evaluated in one step while reading a prompt */
    int32_t n_threads;    /* 0: the number of physical cores; at most LLMODEL_MAX_THREADS */
    int32_t n_gpu_layers; /* layers to offload to a GPU device; -1: all */
    /* Which device to run on: NULL, "" or "cpu" for the CPU; "gpu" for the
     * best GPU; a backend ("cuda", "vulkan", "metal"), a vendor ("nvidia",
     * "amd", "intel", "apple"), or a device name from llmodel_device_get(). */
    const char *device;
    bool use_mmap;        /* map the file instead of reading it into memory: faster
                             to load and shared between processes, but the file
                             must not change while the model is loaded (a file
                             cut short while mapped kills the process with
                             SIGBUS). Generation checks the file's size, inode
                             and mtime first and fails with
                             LLMODEL_ERR_INVALID_FILE when it changed. */
    int32_t n_parallel;   /* the most conversations that hold a cache and are
                             decoded together (1 to LLMODEL_MAX_PARALLEL);
                             others wait for a place. The context grows to
                             this many caches of n_ctx cells only when that
                             many conversations run at once. */
    bool f32_weights;     /* on the CPU, hold F16 and BF16 weights as F32:
                             ggml's matrix products then skip converting the
                             weights on every use (about 20% faster on x86
                             for an F16 embedding model), at twice the memory
                             of those weights and a slower load (the copy is
                             made in memory; the file is read, not mapped).
                             Ignored on a GPU. Default false. */
} llmodel_load_params;

LLMODEL_API llmodel_load_params llmodel_load_default_params(void);

/* Loads a GGUF model and creates its context (one cache of n_ctx cells to start). On success *out is a new
 * handle; on failure *out is NULL and llmodel_last_error() says why (missing,
 * empty, not GGUF, truncated, unsupported architecture, out of memory, ...). */
LLMODEL_API llmodel_status llmodel_model_load(const char *path, const llmodel_load_params *params,
                                              llmodel_model **out);

/* Releases the weights and the context; the handle stays valid (later calls
 * fail with LLMODEL_ERR_CLOSED) until llmodel_model_free(). Closing a closed
 * handle is a no-op. Calls running on the model's conversations and
 * embedders are stopped: from a thread outside them this waits until they
 * have returned; from one of their callbacks the model is closed as the last
 * of them returns. */
LLMODEL_API llmodel_status llmodel_model_close(llmodel_model *model);

/* Closes if needed and frees the handle. NULL is accepted. Never waits:
 * calls running on the model stop, and the last of them to return releases
 * it. Conversations and embedders left on it fail with LLMODEL_ERR_CLOSED
 * from then on and must still be freed. The handle must not be used after
 * this function. */
LLMODEL_API void llmodel_model_free(llmodel_model *model);

/* ------------------------------------------------------------ model facts */

typedef struct llmodel_model_info {
    const char *architecture;  /* general.architecture, e.g. "llama", "gemma3" */
    const char *name;          /* general.name, or "" */
    const char *chat_template; /* tokenizer.chat_template (Jinja), or NULL if absent */
    const char *backend;       /* the backend the model runs on: "CPU", "Vulkan", ... */
    const char *device;        /* the device name, e.g. "CPU", "Vulkan0" */
    const char *device_description;
    int32_t n_ctx;             /* the context length of one conversation */
    int32_t n_ctx_train;       /* the context length the model was trained with */
    int32_t n_batch;
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_gpu_layers;      /* layers actually offloaded */
    uint64_t n_params;
    uint64_t size_bytes;
    llmodel_token bos;         /* LLMODEL_TOKEN_NONE when the model has none */
    llmodel_token eos;
    llmodel_token eot;
    bool add_bos;              /* the tokenizer adds BOS to a prompt's start */
} llmodel_model_info;

/* Fills *out; the strings stay valid until the model is closed. */
LLMODEL_API llmodel_status llmodel_model_get_info(const llmodel_model *model, llmodel_model_info *out);

/* Reads one metadata value as a string into buf (always NUL-terminated when
 * buf_size > 0); *n_out gets the value's length. LLMODEL_ERR_INVALID_ARGUMENT
 * when the key is absent, LLMODEL_ERR_BUFFER_TOO_SMALL when it did not fit. */
LLMODEL_API llmodel_status llmodel_model_meta(const llmodel_model *model, const char *key,
                                              char *buf, size_t buf_size, size_t *n_out);

/* Whether a token ends a generation (EOS, EOT, ...). False for a bad token. */
LLMODEL_API bool llmodel_token_is_eog(const llmodel_model *model, llmodel_token token);

/* ------------------------------------------------------------ tokens */

/* Tokenizes text. add_special: add BOS/EOS as the model's tokenizer asks;
 * parse_special: turn special-token text such as "<|im_start|>" into its
 * token instead of plain text. If capacity is too small, nothing is written,
 * *n_out gets the needed count and LLMODEL_ERR_BUFFER_TOO_SMALL is returned. */
LLMODEL_API llmodel_status llmodel_tokenize(const llmodel_model *model, const char *text, size_t text_len,
                                            bool add_special, bool parse_special,
                                            llmodel_token *tokens, size_t capacity, size_t *n_out);

/* The text of tokens (not NUL-terminated). render_special: write control
 * tokens as their text ("<|im_end|>") instead of nothing. Buffer rules as
 * for llmodel_tokenize(), in bytes. */
LLMODEL_API llmodel_status llmodel_detokenize(const llmodel_model *model, const llmodel_token *tokens,
                                              size_t n_tokens, bool render_special,
                                              char *buf, size_t buf_size, size_t *n_out);

/* The raw bytes of one token (possibly part of a UTF-8 character). */
LLMODEL_API llmodel_status llmodel_token_to_piece(const llmodel_model *model, llmodel_token token,
                                                  bool render_special,
                                                  char *buf, size_t buf_size, size_t *n_out);

/* ------------------------------------------------------------ generation */

/* One entry of llmodel_generate_params.logit_bias. */
typedef struct llmodel_logit_bias {
    llmodel_token token;
    float bias;
} llmodel_logit_bias;

/* The parameters of one generation. Tokens are chosen by a pipeline of
 * stages, in this order: the repeat, frequency and presence penalties over
 * the last repeat_last_n tokens; the logit bias; the grammar;
 * top-k, top-p and min-p; temperature; and the choice itself (greedy when
 * temp <= 0, else a draw from the seeded distribution). */
typedef struct llmodel_generate_params {
    float temp;             /* <= 0: greedy (always the most likely token) */
    int32_t top_k;          /* <= 0: no top-k cut */
    float top_p;            /* >= 1: no top-p cut; 0: only the most likely token */
    float min_p;            /* <= 0: no min-p cut */
    float repeat_penalty;   /* 1: none */
    int32_t repeat_last_n;  /* tokens the penalty looks back over; -1: the whole context */
    uint32_t seed;          /* LLMODEL_SEED_RANDOM: a fresh seed each call */
    int32_t n_predict;      /* most tokens to generate; -1: until EOG or a full context */
    int32_t n_batch;        /* prompt tokens per step; 0 or more than the load n_batch: the load n_batch */
    bool context_shift;     /* when the context fills up while generating, drop
                               the oldest tokens after the first n_keep instead
                               of stopping (models that support it) */
    int32_t n_keep;         /* tokens at the start never dropped by a shift */
    bool parse_special;     /* for a text prompt: parse special-token text */
    bool add_special;       /* for a text prompt: add BOS as the tokenizer asks */
    bool reuse_shifted;     /* also reuse cached tokens that follow a span the new
                               prompt left out (a chat whose oldest turns were
                               dropped): the span is removed from the cache and
                               what follows shifted into place, as a context
                               shift does, instead of being evaluated again.
                               false: only the common prefix is reused */
    float frequency_penalty; /* subtracted from a token's logit once per time it
                                occurs in the repeat_last_n window; 0: none */
    float presence_penalty;  /* subtracted once from the logit of every token in
                                the window; 0: none */
    const struct llmodel_logit_bias *logit_bias; /* added to tokens' logits before
                                sampling (-INFINITY bans a token); may be NULL */
    size_t n_logit_bias;
    const char *grammar;      /* a grammar in llama.cpp's GBNF syntax that the
                                 generated text must follow; NULL or "": none.
                                 Only tokens that keep the text a prefix of
                                 something the grammar matches are chosen, and
                                 an end-of-generation token only where the
                                 text is complete, so stop_reason
                                 LLMODEL_STOP_EOG means the text is matched
                                 whole (any other reason: it may be cut
                                 short). Control tokens the grammar does not
                                 name with <...> are not chosen while it is
                                 on. Checked before anything is evaluated: an
                                 invalid grammar fails the call with
                                 LLMODEL_ERR_INVALID_ARGUMENT and a message
                                 with its line and column (see
                                 llmodel_grammar_check). Read only during the
                                 call that starts the generation */
    const char *grammar_root; /* the rule the grammar starts from; NULL: "root" */
} llmodel_generate_params;

LLMODEL_API llmodel_generate_params llmodel_generate_default_params(void);

/* Checks a grammar for llmodel_generate_params.grammar without generating:
 * LLMODEL_OK, or LLMODEL_ERR_INVALID_ARGUMENT with a message that says where
 * (line and column) and why. Besides llama.cpp's syntax it refuses what
 * llama.cpp would fail on or loop forever on: undefined rules, a missing root
 * rule (root NULL: "root"), <...> that is not one token of this model,
 * repetitions beyond llama.cpp's limits, left recursion (a rule that can
 * reach itself before matching input, an unbounded repetition of something
 * that can match nothing). Any thread, any time (it only reads the
 * vocabulary). */
LLMODEL_API llmodel_status llmodel_grammar_check(const llmodel_model *model, const char *grammar, const char *root);

/* Asks every call running on the model's conversations (the default one
 * included) and embedders to stop as soon as it can (see
 * llmodel_conversation_cancel for what that means). */
LLMODEL_API llmodel_status llmodel_cancel(llmodel_model *model);

/* Asks the call running on the conversation, if any, to stop as soon as it can:
 * prompt evaluation stops within its current step and the call fails with
 * LLMODEL_ERR_CANCELLED (what was evaluated before that step stays cached);
 * generation ends with stop_reason LLMODEL_STOP_CANCELLED. A call that starts
 * later is not affected. It only sets a flag and never waits, so it may be
 * called from any thread and from a signal handler; LLMODEL_ERR_INVALID_ARGUMENT
 * for NULL (no message is recorded). The other conversations in the same
 * batch go on undisturbed. */
LLMODEL_API llmodel_status llmodel_conversation_cancel(llmodel_conversation *conv);

/* Prompt progress: n_done of n_total prompt tokens evaluated. Return false to
 * cancel the call (it then fails with LLMODEL_ERR_CANCELLED; the tokens
 * evaluated so far stay in the cache). */
typedef bool (*llmodel_prompt_callback)(int32_t n_done, int32_t n_total, void *user_data);

/* One generated token and its text. piece is whole UTF-8: the bytes of a
 * character split over several tokens come with the token that completes it,
 * so piece_len may be 0. Not called for the end-of-generation token. If
 * generation ends in the middle of a character, one last call with token
 * LLMODEL_TOKEN_NONE carries U+FFFD for the lost bytes (its return value is
 * ignored). Return false to stop after this token. */
typedef bool (*llmodel_response_callback)(llmodel_token token, const char *piece, size_t piece_len,
                                          void *user_data);

typedef struct llmodel_generate_result {
    int32_t n_prompt;    /* tokens in the prompt */
    int32_t n_reused;    /* prompt tokens found already evaluated in the cache */
    int32_t n_evaluated; /* prompt tokens evaluated by this call */
    int32_t n_generated; /* tokens generated (each passed to the response callback) */
    int32_t n_past;      /* tokens in the cache afterwards */
    llmodel_stop_reason stop_reason;
    double prompt_ms;    /* wall time spent evaluating the prompt */
    double generate_ms;  /* wall time spent generating */
} llmodel_generate_result;

/* Evaluates a prompt and generates a response to it.
 *
 * The model keeps the tokens in its cache from earlier calls. When the new
 * prompt starts with some of them, only the rest is evaluated (so in a chat,
 * pass the whole conversation each turn: just the new turn is evaluated).
 * A prompt longer than the context fails with LLMODEL_ERR_CONTEXT_OVERFLOW
 * and leaves the model usable. Either callback may be NULL; result may be NULL. */
LLMODEL_API llmodel_status llmodel_generate(llmodel_model *model, const char *prompt, size_t prompt_len,
                                            const llmodel_generate_params *params,
                                            llmodel_prompt_callback on_prompt,
                                            llmodel_response_callback on_response, void *user_data,
                                            llmodel_generate_result *result);

/* The same with a prompt given as tokens (params->parse_special and
 * params->add_special are not used). */
LLMODEL_API llmodel_status llmodel_generate_tokens(llmodel_model *model, const llmodel_token *tokens,
                                                   size_t n_tokens, const llmodel_generate_params *params,
                                                   llmodel_prompt_callback on_prompt,
                                                   llmodel_response_callback on_response, void *user_data,
                                                   llmodel_generate_result *result);

/* A generation the caller drives one token at a time, for generators and
 * event loops: no callback and no thread. llmodel_stream_begin evaluates the
 * prompt (as llmodel_generate does; on_prompt may be NULL) and returns the
 * stream in *out; each llmodel_stream_next generates one token; and
 * llmodel_stream_end ends the stream, whether it is finished or not, and
 * frees it. Until it is ended the stream holds the model's cache: see the
 * thread rules at the top. */
LLMODEL_API llmodel_status llmodel_stream_begin(llmodel_model *model, const char *prompt, size_t prompt_len,
                                                const llmodel_generate_params *params,
                                                llmodel_prompt_callback on_prompt, void *user_data,
                                                llmodel_stream **out);

/* The same with a prompt given as tokens. */
LLMODEL_API llmodel_status llmodel_stream_begin_tokens(llmodel_model *model, const llmodel_token *tokens,
                                                       size_t n_tokens, const llmodel_generate_params *params,
                                                       llmodel_prompt_callback on_prompt, void *user_data,
                                                       llmodel_stream **out);

/* Generates the next token: its id in *token and, in *text and *text_len, the
 * complete UTF-8 characters it finishes (the text stays valid until the next
 * call on the stream). When generation is over (end of text, n_predict, a
 * full context) *token is LLMODEL_TOKEN_NONE; *text may then still hold a
 * last U+FFFD for bytes that never formed a character, and *done is true
 * once nothing is left. LLMODEL_ERR_CLOSED after the model was closed. */
LLMODEL_API llmodel_status llmodel_stream_next(llmodel_stream *stream, llmodel_token *token, const char **text,
                                               size_t *text_len, bool *done);

/* Ends the stream and frees it; the model is free for other calls again.
 * result (may be NULL) receives its counts and timings; a stream ended
 * before it finished reports LLMODEL_STOP_CALLBACK. NULL is a no-op. Fails
 * with LLMODEL_ERR_BUSY, ending nothing, while another thread is in a call on
 * the model. A stream may be ended after its model was closed or freed. */
LLMODEL_API llmodel_status llmodel_stream_end(llmodel_stream *stream, llmodel_generate_result *result);

/* ------------------------------------------------------------ conversations */

/* A new, empty conversation on the model. Free it with
 * llmodel_conversation_free(). */
LLMODEL_API llmodel_status llmodel_conversation_new(llmodel_model *model, llmodel_conversation **out);

/* Frees a conversation and its cache. NULL is accepted. From one of the
 * conversation's own callbacks (or while another thread is in a call on it)
 * the call stops and the conversation is freed as the call returns. Works
 * after its model was closed or freed. */
LLMODEL_API void llmodel_conversation_free(llmodel_conversation *conv);

/* llmodel_generate, llmodel_generate_tokens, llmodel_stream_begin,
 * llmodel_stream_begin_tokens, llmodel_reset, llmodel_cached_tokens and
 * llmodel_state_* for one conversation: the same rules, on its own cache. A
 * state saved from one conversation may be loaded into another of a model
 * loaded from the same file. */
LLMODEL_API llmodel_status llmodel_conversation_generate(llmodel_conversation *conv, const char *prompt,
                                                         size_t prompt_len, const llmodel_generate_params *params,
                                                         llmodel_prompt_callback on_prompt,
                                                         llmodel_response_callback on_response, void *user_data,
                                                         llmodel_generate_result *result);
LLMODEL_API llmodel_status llmodel_conversation_generate_tokens(llmodel_conversation *conv,
                                                                const llmodel_token *tokens, size_t n_tokens,
                                                                const llmodel_generate_params *params,
                                                                llmodel_prompt_callback on_prompt,
                                                                llmodel_response_callback on_response,
                                                                void *user_data, llmodel_generate_result *result);
LLMODEL_API llmodel_status llmodel_conversation_stream_begin(llmodel_conversation *conv, const char *prompt,
                                                             size_t prompt_len,
                                                             const llmodel_generate_params *params,
                                                             llmodel_prompt_callback on_prompt, void *user_data,
                                                             llmodel_stream **out);
LLMODEL_API llmodel_status llmodel_conversation_stream_begin_tokens(llmodel_conversation *conv,
                                                                    const llmodel_token *tokens, size_t n_tokens,
                                                                    const llmodel_generate_params *params,
                                                                    llmodel_prompt_callback on_prompt,
                                                                    void *user_data, llmodel_stream **out);
LLMODEL_API llmodel_status llmodel_conversation_reset(llmodel_conversation *conv);
LLMODEL_API llmodel_status llmodel_conversation_cached_tokens(llmodel_conversation *conv, llmodel_token *tokens,
                                                              size_t capacity, size_t *n_out);
LLMODEL_API llmodel_status llmodel_conversation_state_size(llmodel_conversation *conv, size_t *n_out);
LLMODEL_API llmodel_status llmodel_conversation_state_save(llmodel_conversation *conv, void *buf,
                                                           size_t buf_size, size_t *n_out);
LLMODEL_API llmodel_status llmodel_conversation_state_load(llmodel_conversation *conv, const void *buf,
                                                           size_t buf_size);

/* ------------------------------------------------------------ embeddings */

/* How an embedder turns a text's token vectors into one vector. */
typedef enum llmodel_pooling {
    LLMODEL_POOLING_MODEL = -1, /* as the model's metadata says (mean when it says nothing) */
    LLMODEL_POOLING_MEAN = 1,   /* the mean of the tokens' vectors */
    LLMODEL_POOLING_CLS = 2,    /* the first token's vector */
    LLMODEL_POOLING_LAST = 3    /* the last token's vector */
} llmodel_pooling;

typedef struct llmodel_embedder_params {
    int32_t pooling;   /* an llmodel_pooling value */
    int32_t n_ctx;     /* the most tokens of one text; 0: the model's training
                          context, at most 8192 */
    int32_t n_batch;   /* the most tokens of the texts packed into one step;
                          a text longer than this takes a step of its own;
                          0: n_ctx. Smaller steps waste less attention on
                          pairs of tokens from different texts (for models
                          whose attention is not causal), larger ones make
                          the matrix products more efficient. */
    int32_t n_seq_max; /* the most texts in one step (1 to LLMODEL_MAX_PARALLEL) */
    bool normalize;    /* scale each vector to length 1 (L2) */
} llmodel_embedder_params;

LLMODEL_API llmodel_embedder_params llmodel_embedder_default_params(void);

/* A new embedding context on the model (the weights are shared). Causal
 * attention is turned off for the architectures that need it. */
LLMODEL_API llmodel_status llmodel_embedder_new(llmodel_model *model, const llmodel_embedder_params *params,
                                                llmodel_embedder **out);

/* Frees an embedder. NULL is accepted; works after its model was closed or
 * freed; from its own callback, the call stops and frees it as it returns. */
LLMODEL_API void llmodel_embedder_free(llmodel_embedder *embedder);

typedef struct llmodel_embedder_info {
    int32_t n_embd;  /* floats per vector */
    int32_t n_ctx;   /* the most tokens of one text */
    int32_t pooling; /* the llmodel_pooling in use (never LLMODEL_POOLING_MODEL) */
    bool causal;     /* whether the model's attention is causal */
} llmodel_embedder_info;

LLMODEL_API llmodel_status llmodel_embedder_get_info(llmodel_embedder *embedder, llmodel_embedder_info *out);

/* Embeds n_texts texts, each given as tokens (texts[i], n_tokens[i]), into
 * out: n_texts * n_embd floats, text after text. Texts are packed into steps
 * of up to n_batch tokens and n_seq_max texts. A text longer than n_ctx
 * fails with LLMODEL_ERR_CONTEXT_OVERFLOW (nothing is computed); an empty one
 * with LLMODEL_ERR_INVALID_ARGUMENT. on_progress (may be NULL) is called
 * after each step with the texts done so far; returning false cancels with
 * LLMODEL_ERR_CANCELLED, as does llmodel_cancel() on the model. */
LLMODEL_API llmodel_status llmodel_embed_tokens(llmodel_embedder *embedder, const llmodel_token *const *texts,
                                                const size_t *n_tokens, size_t n_texts, float *out,
                                                size_t out_capacity, llmodel_prompt_callback on_progress,
                                                void *user_data);

/* ------------------------------------------------------------ state */

/* Forgets every token in the cache. */
LLMODEL_API llmodel_status llmodel_reset(llmodel_model *model);

/* Copies the tokens in the cache (buffer rules as for llmodel_tokenize()). */
LLMODEL_API llmodel_status llmodel_cached_tokens(const llmodel_model *model, llmodel_token *tokens,
                                                 size_t capacity, size_t *n_out);

/* Bytes needed to save the current state (cache and token history). */
LLMODEL_API llmodel_status llmodel_state_size(llmodel_model *model, size_t *n_out);

/* Saves the state into buf; *n_out gets the bytes written. */
LLMODEL_API llmodel_status llmodel_state_save(llmodel_model *model, void *buf, size_t buf_size,
                                              size_t *n_out);

/* Restores a state saved by llmodel_state_save() on a model loaded from the
 * same file with the same context length. A buffer that does not fit leaves
 * the model reset and fails with LLMODEL_ERR_INVALID_ARGUMENT. */
LLMODEL_API llmodel_status llmodel_state_load(llmodel_model *model, const void *buf, size_t buf_size);

/* Sets the threads used for generation and prompt processing (n >= 1). */
LLMODEL_API llmodel_status llmodel_set_threads(llmodel_model *model, int32_t n_threads);

/* The thread count in use, or -1 for a bad or closed handle. */
LLMODEL_API int32_t llmodel_get_threads(const llmodel_model *model);

#ifdef __cplusplus
}
#endif

#endif /* LLMODEL_H */
