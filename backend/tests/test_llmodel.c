/* Tests of the llmodel C ABI on a real model, using only the public header.
 * usage: test_llmodel MODEL.gguf */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmodel.h"

static int g_failures = 0;
static int g_checks = 0;
static char g_tmpdir[512];

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        ++g_checks;                                                        \
        if (!(cond)) {                                                     \
            ++g_failures;                                                  \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

/* ------------------------------------------------------------ helpers */

typedef struct {
    char text[8192];
    size_t len;
    int n_tokens;
    int stop_after; /* return false on this token (1-based); 0: never */
    llmodel_model *model;
    llmodel_status nested_status;
} collect_t;

static bool collect(llmodel_token token, const char *piece, size_t len, void *ud) {
    collect_t *c = (collect_t *)ud;
    if (token != LLMODEL_TOKEN_NONE) c->n_tokens++;
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, piece, len);
        c->len += len;
        c->text[c->len] = '\0';
    }
    if (c->model) { /* a call on the same handle from inside a callback */
        c->nested_status = llmodel_reset(c->model);
        c->model = NULL;
    }
    return !(c->stop_after > 0 && c->n_tokens >= c->stop_after);
}

static llmodel_generate_params greedy(int n_predict) {
    llmodel_generate_params gp = llmodel_generate_default_params();
    gp.temp = 0.0f;
    gp.n_predict = n_predict;
    return gp;
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    if (len) fwrite(data, 1, len, f);
    fclose(f);
}

static void tmp_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_tmpdir, name); }

static llmodel_model *load(const char *path, int n_ctx) {
    llmodel_load_params lp = llmodel_load_default_params();
    llmodel_model *m = NULL;
    llmodel_status s;
    lp.n_ctx = n_ctx;
    s = llmodel_model_load(path, &lp, &m);
    CHECK(s == LLMODEL_OK && m != NULL, "load %s: %s", path, llmodel_last_error());
    return m;
}

static size_t tokenize(llmodel_model *m, const char *text, llmodel_token *out, size_t cap) {
    size_t n = 0;
    llmodel_status s = llmodel_tokenize(m, text, strlen(text), true, true, out, cap, &n);
    CHECK(s == LLMODEL_OK, "tokenize: %s", llmodel_last_error());
    return n;
}

/* ------------------------------------------------------------ tests */

static void expect_load_error(const char *path, llmodel_status want, const char *needle) {
    llmodel_model *m = (llmodel_model *)1;
    llmodel_status s = llmodel_model_load(path, NULL, &m);
    CHECK(s == want, "load %s gave %s, want %s (%s)", path, llmodel_status_name(s), llmodel_status_name(want),
          llmodel_last_error());
    CHECK(m == NULL, "handle not NULL after a failed load of %s", path);
    CHECK(strstr(llmodel_last_error(), needle) != NULL, "message for %s lacks '%s': %s", path, needle,
          llmodel_last_error());
}

static void test_bad_files(const char *model_path) {
    char path[600];
    char junk[4096];
    size_t i;
    FILE *src;
    char *buf;
    size_t n;

    expect_load_error("/nonexistent/dir/model.gguf", LLMODEL_ERR_FILE_NOT_FOUND, "not found");

    tmp_path(path, sizeof path, "empty.gguf");
    write_file(path, "", 0);
    expect_load_error(path, LLMODEL_ERR_INVALID_FILE, "empty");

    tmp_path(path, sizeof path, "random.gguf");
    srand(1234);
    for (i = 0; i < sizeof junk; ++i) junk[i] = (char)(rand() & 0xff);
    junk[0] = 'X';
    write_file(path, junk, sizeof junk);
    expect_load_error(path, LLMODEL_ERR_INVALID_FILE, "not a GGUF");

    tmp_path(path, sizeof path, "text.gguf");
    write_file(path, "hello, I am a text file\n", 24);
    expect_load_error(path, LLMODEL_ERR_INVALID_FILE, "not a GGUF");

    /* GGUF magic followed by garbage: a corrupt header */
    tmp_path(path, sizeof path, "badheader.gguf");
    memcpy(junk, "GGUF", 4);
    write_file(path, junk, sizeof junk);
    expect_load_error(path, LLMODEL_ERR_INVALID_FILE, "GGUF");

    /* the real model cut in half: a truncated download */
    src = fopen(model_path, "rb");
    CHECK(src != NULL, "cannot open %s", model_path);
    if (!src) return;
    buf = (char *)malloc(64u << 20);
    n = fread(buf, 1, 64u << 20, src);
    fclose(src);
    tmp_path(path, sizeof path, "truncated.gguf");
    write_file(path, buf, n / 2);
    free(buf);
    expect_load_error(path, LLMODEL_ERR_INVALID_FILE, "truncated");

    expect_load_error(g_tmpdir, LLMODEL_ERR_INVALID_FILE, "directory");
}

static void test_arguments(void) {
    llmodel_model *m = NULL;
    llmodel_load_params lp = llmodel_load_default_params();
    size_t n = 0;
    CHECK(llmodel_model_load(NULL, NULL, &m) == LLMODEL_ERR_INVALID_ARGUMENT, "NULL path accepted");
    CHECK(llmodel_model_load("x.gguf", NULL, NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "NULL out accepted");
    lp.n_ctx = -5;
    CHECK(llmodel_model_load("x.gguf", &lp, &m) == LLMODEL_ERR_INVALID_ARGUMENT, "negative n_ctx accepted");
    CHECK(strstr(llmodel_last_error(), "n_ctx") != NULL, "message: %s", llmodel_last_error());
    CHECK(llmodel_tokenize(NULL, "a", 1, true, true, NULL, 0, &n) == LLMODEL_ERR_INVALID_ARGUMENT, "NULL model");
    CHECK(llmodel_generate(NULL, "a", 1, NULL, NULL, NULL, NULL, NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "NULL model");
    CHECK(llmodel_reset(NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "NULL model");
    CHECK(llmodel_get_threads(NULL) == -1, "NULL model");
    llmodel_model_free(NULL); /* must be harmless */
}

static void test_library(void) {
    size_t i, n = llmodel_device_count();
    llmodel_device_info info;
    int cpu_found = 0;
    CHECK(llmodel_abi_version() == LLMODEL_ABI_VERSION, "ABI %d", llmodel_abi_version());
    CHECK(strlen(llmodel_version()) > 0, "empty version");
    CHECK(strlen(llmodel_cpu_variant()) > 0, "no CPU backend loaded from %s", llmodel_backend_dir());
    CHECK(llmodel_physical_cores() >= 1, "cores");
    printf("llmodel %s, cpu variant %s, %d physical cores, backends from %s\n", llmodel_version(),
           llmodel_cpu_variant(), llmodel_physical_cores(), llmodel_backend_dir());
    for (i = 0; i < n; ++i) {
        CHECK(llmodel_device_get(i, &info) == LLMODEL_OK, "device %u", (unsigned)i);
        printf("device %u: %s %s (%s)\n", (unsigned)i, info.backend, info.name, info.description);
        if (strcmp(info.backend, "CPU") == 0) cpu_found = 1;
    }
    CHECK(cpu_found, "no CPU device listed");
    CHECK(llmodel_device_get(n, &info) == LLMODEL_ERR_INVALID_ARGUMENT, "out of range device");
}

static void test_info(llmodel_model *m) {
    llmodel_model_info info;
    char buf[64];
    size_t n = 0;
    CHECK(llmodel_model_get_info(m, &info) == LLMODEL_OK, "info: %s", llmodel_last_error());
    CHECK(strcmp(info.architecture, "llama") == 0, "architecture %s", info.architecture);
    CHECK(info.n_ctx == 512, "n_ctx %d", info.n_ctx);
    CHECK(info.n_ctx_train == 8192, "n_ctx_train %d", info.n_ctx_train);
    CHECK(info.n_vocab == 49152, "n_vocab %d", info.n_vocab);
    CHECK(info.chat_template != NULL && strstr(info.chat_template, "<|im_start|>") != NULL, "ChatML template");
    CHECK(info.eos != LLMODEL_TOKEN_NONE && llmodel_token_is_eog(m, info.eos), "eos %d", info.eos);
    CHECK(strcmp(info.backend, "CPU") == 0, "backend %s", info.backend);
    CHECK(llmodel_model_meta(m, "general.architecture", buf, sizeof buf, &n) == LLMODEL_OK && n == 5, "meta");
    CHECK(llmodel_model_meta(m, "no.such.key", buf, sizeof buf, &n) == LLMODEL_ERR_INVALID_ARGUMENT, "meta missing");
}

static void test_tokens(llmodel_model *m) {
    llmodel_token toks[64];
    char text[256];
    size_t n, len = 0;
    const char *s = "Hello world, ça va? 日本";
    n = tokenize(m, s, toks, 64);
    CHECK(n > 3, "few tokens: %u", (unsigned)n);
    CHECK(llmodel_detokenize(m, toks, n, false, text, sizeof text, &len) == LLMODEL_OK, "detokenize");
    CHECK(len == strlen(s) && memcmp(text, s, len) == 0, "round trip gave '%.*s'", (int)len, text);
    CHECK(llmodel_tokenize(m, s, strlen(s), true, true, toks, 1, &len) == LLMODEL_ERR_BUFFER_TOO_SMALL && len == n,
          "small buffer");
    /* special tokens: parsed as one token, or as text */
    n = 0;
    CHECK(llmodel_tokenize(m, "<|im_start|>", 12, false, true, toks, 64, &n) == LLMODEL_OK && n == 1, "special %u",
          (unsigned)n);
    CHECK(llmodel_tokenize(m, "<|im_start|>", 12, false, false, toks, 64, &n) == LLMODEL_OK && n > 1, "literal %u",
          (unsigned)n);
    CHECK(llmodel_token_to_piece(m, 99999999, false, text, sizeof text, &len) == LLMODEL_ERR_INVALID_ARGUMENT, "bad id");
}

static void test_generation(llmodel_model *m) {
    llmodel_generate_params gp = greedy(24);
    llmodel_generate_result r1, r2, r3;
    collect_t a, b, c;
    const char *prompt = "The capital of France is";

    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK(llmodel_reset(m) == LLMODEL_OK, "reset");
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, collect, &a, &r1) == LLMODEL_OK, "gen: %s",
          llmodel_last_error());
    printf("greedy: '%s'\n", a.text);
    CHECK(a.n_tokens > 0 && r1.n_generated == a.n_tokens, "generated %d / %d", a.n_tokens, r1.n_generated);
    CHECK(strstr(a.text, "Paris") != NULL, "no Paris in '%s'", a.text);
    CHECK(r1.n_reused == 0 && r1.n_evaluated == r1.n_prompt, "first call evaluated %d of %d", r1.n_evaluated,
          r1.n_prompt);

    /* the same prompt again: same text, and the prompt comes from the cache */
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, collect, &b, &r2) == LLMODEL_OK, "gen2");
    CHECK(strcmp(a.text, b.text) == 0, "greedy differs: '%s' vs '%s'", a.text, b.text);
    CHECK(r2.n_evaluated == 1 && r2.n_reused == r2.n_prompt - 1, "second call evaluated %d (reused %d of %d)",
          r2.n_evaluated, r2.n_reused, r2.n_prompt);

    /* after a reset, still the same */
    memset(&c, 0, sizeof c);
    llmodel_reset(m);
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, collect, &c, &r3) == LLMODEL_OK, "gen3");
    CHECK(strcmp(a.text, c.text) == 0, "greedy differs after reset: '%s' vs '%s'", a.text, c.text);
    CHECK(r3.n_evaluated == r3.n_prompt, "after reset evaluated %d of %d", r3.n_evaluated, r3.n_prompt);

    /* a callback that returns false stops after exactly that token */
    memset(&b, 0, sizeof b);
    b.stop_after = 3;
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, collect, &b, &r2) == LLMODEL_OK, "gen stop");
    CHECK(b.n_tokens == 3 && r2.n_generated == 3 && r2.stop_reason == LLMODEL_STOP_CALLBACK,
          "stopped after %d/%d tokens, reason %d", b.n_tokens, r2.n_generated, (int)r2.stop_reason);
    CHECK(strncmp(a.text, b.text, strlen(b.text)) == 0, "stopped text '%s' is not a prefix of '%s'", b.text, a.text);

    /* ...and leaves the model usable: the full answer again */
    memset(&c, 0, sizeof c);
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, collect, &c, &r3) == LLMODEL_OK, "gen after stop");
    CHECK(strcmp(a.text, c.text) == 0, "after a stop: '%s' vs '%s'", a.text, c.text);

    /* n_predict */
    memset(&b, 0, sizeof b);
    gp.n_predict = 5;
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, collect, &b, &r2) == LLMODEL_OK, "n_predict");
    CHECK(r2.n_generated == 5 && r2.stop_reason == LLMODEL_STOP_LENGTH, "n_predict gave %d", r2.n_generated);

    /* a call on the same handle from inside a callback is refused, not run */
    memset(&b, 0, sizeof b);
    b.model = m;
    b.nested_status = LLMODEL_OK;
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, collect, &b, &r2) == LLMODEL_OK, "nested");
    CHECK(b.nested_status == LLMODEL_ERR_BUSY, "nested call gave %s", llmodel_status_name(b.nested_status));

    /* bad sampling parameters */
    gp = greedy(4);
    gp.top_p = -1.0f;
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, NULL, NULL, NULL) == LLMODEL_ERR_INVALID_ARGUMENT &&
              strstr(llmodel_last_error(), "top_p") != NULL,
          "bad top_p: %s", llmodel_last_error());
    gp = greedy(4);
    CHECK(llmodel_generate(m, "", 0, &gp, NULL, NULL, NULL, NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "empty prompt");
}

static void test_prefix_reuse(llmodel_model *m) {
    llmodel_token first[256], both[512];
    size_t n1, n2;
    llmodel_generate_result r;
    llmodel_generate_params gp = greedy(0);
    n1 = tokenize(m, "You are a helpful assistant. You answer briefly and politely.", first, 256);
    n2 = tokenize(m, "You are a helpful assistant. You answer briefly and politely.", both, 512);
    n2 += tokenize(m, " Now tell me about the sea and the mountains.", both + n2, 512 - n2);
    llmodel_reset(m);
    CHECK(llmodel_generate_tokens(m, first, n1, &gp, NULL, NULL, NULL, &r) == LLMODEL_OK, "first: %s",
          llmodel_last_error());
    CHECK(r.n_evaluated == (int)n1 && r.n_past == (int)n1, "first evaluated %d of %u", r.n_evaluated, (unsigned)n1);
    CHECK(llmodel_generate_tokens(m, both, n2, &gp, NULL, NULL, NULL, &r) == LLMODEL_OK, "second");
    CHECK(r.n_reused == (int)n1 && r.n_evaluated == (int)(n2 - n1), "second evaluated %d (want %u), reused %d",
          r.n_evaluated, (unsigned)(n2 - n1), r.n_reused);
}

static bool cancel_prompt(int32_t done, int32_t total, void *ud) {
    (void)done;
    (void)total;
    (void)ud;
    return false;
}

static void test_context_limits(const char *model_path) {
    llmodel_model *m = load(model_path, 64);
    char prompt[2048];
    size_t i;
    collect_t a;
    llmodel_generate_result r;
    llmodel_generate_params gp = greedy(200);
    if (!m) return;
    prompt[0] = '\0';
    for (i = 0; i < 40; ++i) strcat(prompt, "one two three ");
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, NULL, NULL, &r) == LLMODEL_ERR_CONTEXT_OVERFLOW,
          "over-long prompt: %s", llmodel_last_error());
    CHECK(strstr(llmodel_last_error(), "context") != NULL, "message: %s", llmodel_last_error());
    /* still usable; without context shift, generation stops when the context is full */
    gp.context_shift = false;
    memset(&a, 0, sizeof a);
    CHECK(llmodel_generate(m, "Once upon a time", 16, &gp, NULL, collect, &a, &r) == LLMODEL_OK, "after overflow: %s",
          llmodel_last_error());
    CHECK(r.stop_reason == LLMODEL_STOP_CONTEXT_FULL || r.stop_reason == LLMODEL_STOP_EOG, "reason %d",
          (int)r.stop_reason);
    CHECK(r.n_past <= 64, "n_past %d", r.n_past);
    /* with context shift, generation goes past the context length */
    gp.context_shift = true;
    gp.n_keep = 4;
    gp.repeat_penalty = 1.3f;
    gp.n_predict = 100;
    CHECK(llmodel_generate(m, "Once upon a time", 16, &gp, NULL, NULL, NULL, &r) == LLMODEL_OK, "shift: %s",
          llmodel_last_error());
    CHECK(r.stop_reason != LLMODEL_STOP_CONTEXT_FULL, "shift did not happen");
    /* a prompt-progress callback can cancel */
    llmodel_reset(m);
    CHECK(llmodel_generate(m, "Once upon a time", 16, &gp, cancel_prompt, NULL, NULL, &r) == LLMODEL_ERR_CANCELLED,
          "cancel");
    CHECK(llmodel_model_close(m) == LLMODEL_OK, "close");
    CHECK(llmodel_generate(m, "x", 1, &gp, NULL, NULL, NULL, NULL) == LLMODEL_ERR_CLOSED, "closed handle");
    CHECK(strstr(llmodel_last_error(), "closed") != NULL, "message %s", llmodel_last_error());
    CHECK(llmodel_model_close(m) == LLMODEL_OK, "second close");
    llmodel_model_free(m);
}

static void test_state(llmodel_model *m) {
    const char *prompt = "Write a list of fruits:";
    llmodel_generate_params gp = greedy(12);
    collect_t a, b;
    size_t size = 0, written = 0;
    void *buf;
    llmodel_generate_result r;
    llmodel_reset(m);
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, NULL, NULL, NULL) == LLMODEL_OK, "prime");
    CHECK(llmodel_state_size(m, &size) == LLMODEL_OK && size > 0, "state size");
    buf = malloc(size);
    CHECK(llmodel_state_save(m, buf, size, &written) == LLMODEL_OK, "save: %s", llmodel_last_error());
    memset(&a, 0, sizeof a);
    CHECK(llmodel_generate(m, " apples", 7, &gp, NULL, collect, &a, NULL) == LLMODEL_OK, "gen a");
    llmodel_reset(m);
    CHECK(llmodel_state_load(m, buf, written) == LLMODEL_OK, "load: %s", llmodel_last_error());
    CHECK(llmodel_state_load(m, "garbage!garbage!", 16) == LLMODEL_ERR_INVALID_ARGUMENT, "garbage state");
    CHECK(llmodel_state_load(m, buf, written) == LLMODEL_OK, "load again");
    memset(&b, 0, sizeof b);
    CHECK(llmodel_generate(m, " apples", 7, &gp, NULL, collect, &b, &r) == LLMODEL_OK, "gen b");
    CHECK(strcmp(a.text, b.text) == 0, "restored state differs: '%s' vs '%s'", a.text, b.text);
    free(buf);
}

/* The pull API gives what the callback API gives, holds the cache while
 * open, and ends cleanly early, after a close, or after the model is freed. */
static void test_stream(llmodel_model *m, const char *model_path) {
    static const char prompt[] = "The capital of France is";
    llmodel_generate_params gp = greedy(12);
    collect_t c;
    llmodel_stream *st = NULL, *other = NULL;
    llmodel_generate_result r;
    char text[8192];
    size_t len = 0;
    int n = 0;
    llmodel_token tok;
    const char *piece;
    size_t piece_len;
    bool done = false;
    llmodel_model *m2;

    memset(&c, 0, sizeof c);
    CHECK(llmodel_reset(m) == LLMODEL_OK, "reset");
    CHECK(llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, collect, &c, NULL) == LLMODEL_OK, "generate");
    CHECK(llmodel_reset(m) == LLMODEL_OK, "reset");
    CHECK(llmodel_stream_begin(m, prompt, strlen(prompt), &gp, NULL, NULL, &st) == LLMODEL_OK && st,
          "stream_begin: %s", llmodel_last_error());
    CHECK(llmodel_generate(m, "x", 1, &gp, NULL, NULL, NULL, NULL) == LLMODEL_ERR_BUSY, "generate during a stream");
    CHECK(llmodel_reset(m) == LLMODEL_ERR_BUSY, "reset during a stream");
    CHECK(llmodel_stream_begin(m, "x", 1, &gp, NULL, NULL, &other) == LLMODEL_ERR_BUSY && other == NULL,
          "a second stream");
    CHECK(llmodel_stream_next(NULL, &tok, &piece, &piece_len, &done) == LLMODEL_ERR_INVALID_ARGUMENT, "NULL stream");
    CHECK(llmodel_stream_next(st, NULL, &piece, &piece_len, &done) == LLMODEL_ERR_INVALID_ARGUMENT, "NULL token");
    text[0] = '\0';
    while (llmodel_stream_next(st, &tok, &piece, &piece_len, &done) == LLMODEL_OK && !done) {
        if (tok != LLMODEL_TOKEN_NONE) n++;
        if (len + piece_len < sizeof text) {
            memcpy(text + len, piece, piece_len);
            len += piece_len;
            text[len] = '\0';
        }
        if (n > 100) break;
    }
    CHECK(done, "the stream did not finish");
    CHECK(strcmp(text, c.text) == 0, "stream gave '%s', generate gave '%s'", text, c.text);
    CHECK(n == c.n_tokens, "stream made %d tokens, generate %d", n, c.n_tokens);
    CHECK(llmodel_stream_next(st, &tok, &piece, &piece_len, &done) == LLMODEL_OK && done, "next after the end");
    CHECK(llmodel_stream_end(st, &r) == LLMODEL_OK, "stream_end");
    CHECK(r.n_generated == c.n_tokens && r.stop_reason == LLMODEL_STOP_LENGTH, "result %d %d", r.n_generated,
          (int)r.stop_reason);
    CHECK(llmodel_stream_end(NULL, NULL) == LLMODEL_OK, "ending NULL");

    /* ended early: the cache holds the prompt and what was taken, nothing more */
    CHECK(llmodel_stream_begin(m, prompt, strlen(prompt), &gp, NULL, NULL, &st) == LLMODEL_OK, "begin again");
    CHECK(llmodel_stream_next(st, &tok, &piece, &piece_len, &done) == LLMODEL_OK && !done, "one token");
    CHECK(llmodel_stream_next(st, &tok, &piece, &piece_len, &done) == LLMODEL_OK && !done, "two tokens");
    CHECK(llmodel_stream_end(st, &r) == LLMODEL_OK && r.stop_reason == LLMODEL_STOP_CALLBACK && r.n_generated == 2,
          "early end: %d %d", (int)r.stop_reason, r.n_generated);
    CHECK(llmodel_generate(m, "x", 1, &gp, NULL, NULL, NULL, NULL) == LLMODEL_OK, "generate after the stream");

    /* a stream outliving its model */
    m2 = load(model_path, 256);
    if (m2) {
        CHECK(llmodel_stream_begin(m2, prompt, strlen(prompt), &gp, NULL, NULL, &st) == LLMODEL_OK, "begin on m2");
        CHECK(llmodel_model_close(m2) == LLMODEL_OK, "close with a stream open");
        CHECK(llmodel_stream_next(st, &tok, &piece, &piece_len, &done) == LLMODEL_ERR_CLOSED, "next after close");
        llmodel_model_free(m2);
        CHECK(llmodel_stream_next(st, &tok, &piece, &piece_len, &done) == LLMODEL_ERR_CLOSED, "next after free");
        CHECK(llmodel_stream_end(st, NULL) == LLMODEL_OK, "end after free");
    }
}

/* Cancelling, closing and freeing from inside a call's own callback. */
typedef struct {
    llmodel_model *m;
    int n;
    int at;     /* act on this token */
    int action; /* 0: cancel, 1: close, 2: free */
} act_t;

static bool act_on_token(llmodel_token token, const char *piece, size_t len, void *ud) {
    act_t *a = (act_t *)ud;
    (void)token, (void)piece, (void)len;
    if (++a->n == a->at) {
        if (a->action == 0) CHECK(llmodel_cancel(a->m) == LLMODEL_OK, "cancel");
        if (a->action == 1) CHECK(llmodel_model_close(a->m) == LLMODEL_OK, "close inside a callback");
        if (a->action == 2) llmodel_model_free(a->m);
    }
    return true; /* it is the cancel, close or free that stops the call */
}

static void test_cancel_close_free_in_callbacks(const char *model_path) {
    llmodel_generate_params gp = greedy(40);
    llmodel_generate_result res;
    act_t a;
    int action;
    CHECK(llmodel_cancel(NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "cancel NULL");
    for (action = 0; action < 3; ++action) {
        llmodel_model *m = load(model_path, 256);
        if (!m) return;
        memset(&a, 0, sizeof a);
        a.m = m;
        a.at = 3;
        a.action = action;
        memset(&res, 0, sizeof res);
        CHECK(llmodel_generate(m, "Count: 1, 2, 3,", 15, &gp, NULL, act_on_token, &a, &res) == LLMODEL_OK,
              "generate with action %d: %s", action, llmodel_last_error());
        CHECK(a.n == 3 && res.n_generated == 3 && res.stop_reason == LLMODEL_STOP_CANCELLED,
              "action %d stopped after %d tokens, reason %d", action, a.n, (int)res.stop_reason);
        if (action == 0) { /* cancelled: the next call runs normally */
            memset(&res, 0, sizeof res);
            CHECK(llmodel_generate(m, "Count: 1, 2, 3,", 15, &gp, NULL, NULL, NULL, &res) == LLMODEL_OK &&
                  res.stop_reason != LLMODEL_STOP_CANCELLED && res.n_generated > 3,
                  "after a cancel: %d tokens, reason %d", res.n_generated, (int)res.stop_reason);
            CHECK(llmodel_cancel(m) == LLMODEL_OK, "cancel with nothing running");
            memset(&res, 0, sizeof res);
            CHECK(llmodel_generate(m, "Count: 1, 2, 3,", 15, &gp, NULL, NULL, NULL, &res) == LLMODEL_OK &&
                  res.stop_reason != LLMODEL_STOP_CANCELLED && res.n_generated > 3,
                  "a cancel with nothing running does not reach the next call");
        }
        if (action == 1) {
            CHECK(llmodel_generate(m, "x", 1, &gp, NULL, NULL, NULL, NULL) == LLMODEL_ERR_CLOSED, "closed after");
        }
        if (action != 2) llmodel_model_free(m);
    }
}

/* ------------------------------------------------------------ grammars */

static llmodel_status constrained(llmodel_model *m, const char *prompt, const char *grammar, float temp,
                                  unsigned seed, collect_t *out, llmodel_generate_result *res) {
    llmodel_generate_params gp = greedy(48);
    gp.temp = temp;
    gp.seed = seed;
    gp.grammar = grammar;
    memset(out, 0, sizeof *out);
    memset(res, 0, sizeof *res);
    return llmodel_generate(m, prompt, strlen(prompt), &gp, NULL, collect, out, res);
}

static void test_grammar(llmodel_model *m) {
    static const char *const bad[] = {
        "root ::= \"a",                       /* literal not closed */
        "root ::= foo",                       /* undefined rule */
        "root ::= root \"a\" | \"b\"",        /* left recursion */
        "root ::= a\na ::= b \"x\"\nb ::= a?", /* left recursion through a nullable rule */
        "root ::= (\"a\"?)*",                 /* unbounded repetition of something empty */
        "start ::= \"x\"",                    /* no root */
        "root ::= \"a\"{3000}",               /* more than llama.cpp's repetition limit */
        "root ::= \"\\q\"",                   /* unknown escape */
        "root ::= [a-",                       /* class not closed */
        "root ::= <not-one-token-of-this-vocabulary>",
        "root ::= \"a\"\nroot ::= \"b\"",     /* defined twice */
        "root ::= *",                         /* nothing to repeat */
        "root ::= \"a\" ) ",                  /* stray ) */
        "root ::= <[99999999]>",              /* not in the vocabulary */
    };
    char deep[1200];
    size_t i, n;
    collect_t out;
    llmodel_generate_result res;
    llmodel_status s;
    unsigned seed;
    llmodel_token ids[8];

    CHECK(llmodel_grammar_check(m, "root ::= \"yes\" | \"no\"", NULL) == LLMODEL_OK, "%s", llmodel_last_error());
    CHECK(llmodel_grammar_check(m, "# a comment\nstart ::= [0-9]+ (\",\" [0-9]+)*\n", "start") == LLMODEL_OK, "%s",
          llmodel_last_error());
    CHECK(llmodel_grammar_check(NULL, "root ::= \"a\"", NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "NULL model");
    CHECK(llmodel_grammar_check(m, NULL, NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "NULL grammar");
    for (i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        s = llmodel_grammar_check(m, bad[i], NULL);
        CHECK(s == LLMODEL_ERR_INVALID_ARGUMENT && strstr(llmodel_last_error(), "line "), "%s -> %d %s", bad[i], s,
              llmodel_last_error());
    }
    n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "root ::= ");
    for (i = 0; i < 300; ++i) deep[n++] = '(';
    deep[n++] = '"';
    deep[n++] = 'a';
    deep[n++] = '"';
    for (i = 0; i < 300; ++i) deep[n++] = ')';
    deep[n] = '\0';
    CHECK(llmodel_grammar_check(m, deep, NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "300 nested groups");

    /* a bad grammar fails the call before anything is evaluated */
    llmodel_reset(m);
    s = constrained(m, "Hello", "root ::= nothing", 0.0f, 1, &out, &res);
    CHECK(s == LLMODEL_ERR_INVALID_ARGUMENT && strstr(llmodel_last_error(), "nothing"), "%d %s", s,
          llmodel_last_error());
    CHECK(out.n_tokens == 0 && res.n_evaluated == 0, "%d tokens, %d evaluated", out.n_tokens, res.n_evaluated);

    /* greedy and sampled generations match the grammar and end whole */
    s = constrained(m, "Is the sky blue? Answer:", "root ::= \" \"? (\"yes\" | \"no\") \".\"", 0.0f, 1, &out, &res);
    CHECK(s == LLMODEL_OK && res.stop_reason == LLMODEL_STOP_EOG, "%d %d %s", s, res.stop_reason, llmodel_last_error());
    CHECK(!strcmp(out.text, "yes.") || !strcmp(out.text, "no.") || !strcmp(out.text, " yes.") ||
              !strcmp(out.text, " no."), "[%s]", out.text);
    for (seed = 1; seed <= 4; ++seed) {
        s = constrained(m, "Three digits:", "root ::= [0-9]{3}", 1.0f, seed, &out, &res);
        CHECK(s == LLMODEL_OK && res.stop_reason == LLMODEL_STOP_EOG, "%d %d", s, res.stop_reason);
        CHECK(strlen(out.text) == 3 && strspn(out.text, "0123456789") == 3, "seed %u: [%s]", seed, out.text);
    }
    /* the grammar's only token banned by the logit bias: no token allowed */
    n = tokenize(m, "Hello", ids, 8);
    if (n >= 1) {
        char g[64];
        llmodel_logit_bias ban;
        llmodel_generate_params gp = greedy(8);
        snprintf(g, sizeof g, "root ::= <[%d]>", (int)ids[n - 1]);
        ban.token = ids[n - 1];
        ban.bias = -INFINITY;
        gp.grammar = g;
        gp.logit_bias = &ban;
        gp.n_logit_bias = 1;
        memset(&out, 0, sizeof out);
        s = llmodel_generate(m, "Hi", 2, &gp, NULL, collect, &out, &res);
        CHECK(s == LLMODEL_OK && res.stop_reason == LLMODEL_STOP_NO_ALLOWED_TOKEN && out.n_tokens == 0, "%d %d %d", s,
              res.stop_reason, out.n_tokens);
    }
}

int main(int argc, char **argv) {
    llmodel_model *m;
    const char *tmp = getenv("TMPDIR");
    if (argc < 2 || !argv[1][0]) {
        fprintf(stderr, "usage: %s MODEL.gguf (fetch it with scripts/fetch_models.py)\n", argv[0]);
        return 2;
    }
    {
        /* mkdtemp is POSIX, not C99 */
        char cmd[600];
        srand((unsigned)time(NULL));
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/llmodel-test-%d-%d", tmp ? tmp : "/tmp", rand(), rand());
        snprintf(cmd, sizeof cmd, "mkdir -p '%s'", g_tmpdir);
        if (system(cmd) != 0) return 2;
    }
    test_library();
    test_arguments();
    test_bad_files(argv[1]);
    m = load(argv[1], 512);
    if (m) {
        test_info(m);
        test_tokens(m);
        test_generation(m);
        test_prefix_reuse(m);
        test_state(m);
        test_stream(m, argv[1]);
        test_grammar(m);
        llmodel_model_free(m);
    }
    test_context_limits(argv[1]);
    test_cancel_close_free_in_callbacks(argv[1]);
    printf("%d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
