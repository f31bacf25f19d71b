/* Tests of conversations, batched decoding and embedders on a real model,
 * using only the public header (and POSIX threads).
 * usage: test_conversations MODEL.gguf */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmodel.h"

static int g_failures = 0;
static int g_checks = 0;

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

/* Batched runs whose greedy text equals the solo run's, of all compared.
 * Each conversation attends only to its own cache, but prompts read in one
 * step with others go through the batched matrix kernels, which may add in
 * another order, so a greedy choice between two nearly equal logits can go
 * the other way: measured (scripts/batch_agreement.py, README) 63 of 64
 * replies identical. The bound tested: all but one. */
static int g_same = 0, g_compared = 0;

#define N_PAR 8
#define N_GEN 24

static const char *const PROMPTS[N_PAR] = {
    "The capital of France is",
    "List three colours: red,",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The quick brown fox",
    "Water boils at a temperature of",
    "My favourite fruit is the banana because",
    "In 1969, the first humans",
};

typedef struct {
    llmodel_conversation *conv;
    const char *prompt;
    llmodel_generate_params gp;
    llmodel_token tokens[256];
    int n_tokens;
    int cancel_at; /* cancel its own conversation after this many tokens; 0: never */
    llmodel_status status;
    llmodel_generate_result res;
} job_t;

static bool on_token(llmodel_token token, const char *piece, size_t len, void *ud) {
    job_t *j = (job_t *)ud;
    (void)piece;
    (void)len;
    if (token != LLMODEL_TOKEN_NONE && j->n_tokens < 256) j->tokens[j->n_tokens++] = token;
    if (j->cancel_at > 0 && j->n_tokens == j->cancel_at) llmodel_conversation_cancel(j->conv);
    return true;
}

static void *run_job(void *arg) {
    job_t *j = (job_t *)arg;
    j->n_tokens = 0;
    memset(&j->res, 0, sizeof j->res);
    j->status = llmodel_conversation_generate(j->conv, j->prompt, strlen(j->prompt), &j->gp, NULL, on_token, j,
                                              &j->res);
    return NULL;
}

static llmodel_generate_params greedy(int n) {
    llmodel_generate_params gp = llmodel_generate_default_params();
    gp.temp = 0.0f;
    gp.n_predict = n;
    return gp;
}

static llmodel_model *load(const char *path, int n_ctx, int n_parallel) {
    llmodel_load_params lp = llmodel_load_default_params();
    llmodel_model *m = NULL;
    lp.n_ctx = n_ctx;
    lp.n_parallel = n_parallel;
    CHECK(llmodel_model_load(path, &lp, &m) == LLMODEL_OK, "load: %s", llmodel_last_error());
    return m;
}

static llmodel_conversation *new_conv(llmodel_model *m) {
    llmodel_conversation *c = NULL;
    CHECK(llmodel_conversation_new(m, &c) == LLMODEL_OK && c, "conversation_new: %s", llmodel_last_error());
    return c;
}

/* Each job's greedy tokens when it runs alone on a fresh conversation. */
static void solo(llmodel_model *m, job_t *jobs, int n, job_t *out) {
    int i;
    for (i = 0; i < n; ++i) {
        out[i] = jobs[i];
        out[i].cancel_at = 0;
        out[i].conv = new_conv(m);
        run_job(&out[i]);
        CHECK(out[i].status == LLMODEL_OK, "solo %d: %s", i, llmodel_last_error());
        llmodel_conversation_free(out[i].conv);
        out[i].conv = NULL;
    }
}

static void run_together(job_t *jobs, int n) {
    pthread_t th[N_PAR];
    int i;
    for (i = 0; i < n; ++i) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    for (i = 0; i < n; ++i) pthread_join(th[i], NULL);
}

static int same_tokens(const job_t *a, const job_t *b) {
    return a->n_tokens == b->n_tokens && memcmp(a->tokens, b->tokens, sizeof(llmodel_token) * (size_t)a->n_tokens) == 0;
}

static int common_prefix(const job_t *a, const job_t *b) {
    int k = 0;
    while (k < a->n_tokens && k < b->n_tokens && a->tokens[k] == b->tokens[k]) ++k;
    return k;
}

/* ------------------------------------------------------------ tests */

static void test_arguments(llmodel_model *m) {
    llmodel_conversation *c = NULL;
    llmodel_load_params lp = llmodel_load_default_params();
    llmodel_model *bad = NULL;
    size_t n = 0;
    CHECK(lp.n_parallel >= 1 && lp.n_parallel <= LLMODEL_MAX_PARALLEL, "default n_parallel %d", lp.n_parallel);
    lp.n_parallel = 0;
    CHECK(llmodel_model_load("x.gguf", &lp, &bad) == LLMODEL_ERR_INVALID_ARGUMENT && !bad, "n_parallel 0");
    CHECK(strstr(llmodel_last_error(), "n_parallel") != NULL, "message %s", llmodel_last_error());
    CHECK(llmodel_conversation_new(NULL, &c) == LLMODEL_ERR_INVALID_ARGUMENT, "new on NULL");
    CHECK(llmodel_conversation_new(m, NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "new into NULL");
    CHECK(llmodel_conversation_generate(NULL, "x", 1, NULL, NULL, NULL, NULL, NULL) == LLMODEL_ERR_INVALID_ARGUMENT,
          "generate on NULL");
    CHECK(llmodel_conversation_cached_tokens(NULL, NULL, 0, &n) == LLMODEL_ERR_INVALID_ARGUMENT, "cached on NULL");
    CHECK(llmodel_conversation_cancel(NULL) == LLMODEL_ERR_INVALID_ARGUMENT, "cancel NULL");
    llmodel_conversation_free(NULL);
    {
        llmodel_generate_params gp = greedy(4);
        llmodel_logit_bias lb = {999999, 1.0f};
        c = new_conv(m);
        gp.logit_bias = &lb;
        gp.n_logit_bias = 1;
        CHECK(llmodel_conversation_generate(c, "x", 1, &gp, NULL, NULL, NULL, NULL) == LLMODEL_ERR_INVALID_ARGUMENT,
              "a bias for a token not in the vocabulary");
        CHECK(strstr(llmodel_last_error(), "999999") != NULL, "message %s", llmodel_last_error());
        llmodel_conversation_free(c);
    }
}

/* Two conversations interleaved keep their own caches: each turn evaluates
 * only its new tokens, and each reply is what it is alone. */
static void test_interleaved(llmodel_model *m) {
    llmodel_conversation *a = new_conv(m), *b = new_conv(m);
    job_t ja, jb, sa[1], sb[1];
    char turn2[512];
    memset(&ja, 0, sizeof ja);
    memset(&jb, 0, sizeof jb);
    ja.conv = a;
    ja.prompt = PROMPTS[0];
    ja.gp = greedy(12);
    jb.conv = b;
    jb.prompt = PROMPTS[3];
    jb.gp = greedy(12);
    solo(m, &ja, 1, sa);
    solo(m, &jb, 1, sb);
    run_job(&ja);
    run_job(&jb);
    CHECK(same_tokens(&ja, sa) && same_tokens(&jb, sb), "interleaved turn 1 differs from solo");
    snprintf(turn2, sizeof turn2, "%s and the next one", PROMPTS[0]);
    ja.prompt = turn2;
    run_job(&ja);
    CHECK(ja.status == LLMODEL_OK && ja.res.n_reused >= 4, "A's turn 2 reused %d tokens", ja.res.n_reused);
    snprintf(turn2, sizeof turn2, "%s there lived", PROMPTS[3]);
    jb.prompt = turn2;
    run_job(&jb);
    CHECK(jb.status == LLMODEL_OK && jb.res.n_reused >= 8, "B's turn 2 reused %d tokens", jb.res.n_reused);
    {
        size_t na = 0, nb = 0;
        llmodel_conversation_cached_tokens(a, NULL, 0, &na);
        llmodel_conversation_cached_tokens(b, NULL, 0, &nb);
        CHECK(na > 0 && nb > 0 && (int)na == ja.res.n_past && (int)nb == jb.res.n_past, "cached %zu %zu", na, nb);
    }
    llmodel_conversation_free(a);
    llmodel_conversation_free(b);
}

/* Eight conversations generating at once equal their solo results. */
static void test_eight_together(llmodel_model *m) {
    job_t jobs[N_PAR], ref[N_PAR];
    int i, n_same = 0, worst = N_GEN;
    memset(jobs, 0, sizeof jobs);
    for (i = 0; i < N_PAR; ++i) {
        jobs[i].prompt = PROMPTS[i];
        jobs[i].gp = greedy(N_GEN);
    }
    solo(m, jobs, N_PAR, ref);
    for (i = 0; i < N_PAR; ++i) jobs[i].conv = new_conv(m);
    run_together(jobs, N_PAR);
    for (i = 0; i < N_PAR; ++i) {
        int k = common_prefix(&jobs[i], &ref[i]);
        CHECK(jobs[i].status == LLMODEL_OK, "job %d: %s", i, llmodel_status_name(jobs[i].status));
        n_same += same_tokens(&jobs[i], &ref[i]);
        if (k < worst) worst = k;
    }
    printf("8 together: %d of 8 equal to solo; shortest common prefix %d of %d tokens\n", n_same, worst, N_GEN);
    g_same += n_same;
    g_compared += N_PAR;
    for (i = 0; i < N_PAR; ++i) llmodel_conversation_free(jobs[i].conv);
}

/* One conversation cancelled mid-batch stops; the others go on undisturbed. */
static void test_cancel_one(llmodel_model *m) {
    job_t jobs[3], ref[3];
    int i;
    memset(jobs, 0, sizeof jobs);
    for (i = 0; i < 3; ++i) {
        jobs[i].prompt = PROMPTS[i + 2];
        jobs[i].gp = greedy(N_GEN);
        jobs[i].gp.context_shift = false;
    }
    solo(m, jobs, 3, ref);
    for (i = 0; i < 3; ++i) jobs[i].conv = new_conv(m);
    jobs[1].cancel_at = 5;
    run_together(jobs, 3);
    CHECK(jobs[1].status == LLMODEL_OK && jobs[1].res.stop_reason == LLMODEL_STOP_CANCELLED &&
              jobs[1].n_tokens == 5,
          "cancelled one: %s, reason %d, %d tokens", llmodel_status_name(jobs[1].status),
          (int)jobs[1].res.stop_reason, jobs[1].n_tokens);
    CHECK(same_tokens(&jobs[0], &ref[0]) && same_tokens(&jobs[2], &ref[2]), "the others were disturbed");
    /* the cancel does not reach its next generation */
    jobs[1].cancel_at = 0;
    run_job(&jobs[1]);
    CHECK(jobs[1].res.stop_reason != LLMODEL_STOP_CANCELLED && same_tokens(&jobs[1], &ref[1]),
          "after the cancel: reason %d", (int)jobs[1].res.stop_reason);
    for (i = 0; i < 3; ++i) llmodel_conversation_free(jobs[i].conv);
}

/* One conversation fills its context and stops (or shifts) alone. */
static void test_context_full_alone(const char *path) {
    llmodel_model *m = load(path, 64, 4);
    job_t jobs[3], ref[3];
    int i;
    if (!m) return;
    memset(jobs, 0, sizeof jobs);
    for (i = 0; i < 3; ++i) {
        jobs[i].prompt = PROMPTS[i];
        jobs[i].gp = greedy(16);
        jobs[i].gp.context_shift = false;
    }
    jobs[1].gp.n_predict = 200; /* runs into its 64-token context */
    jobs[2].gp.n_predict = 200;
    jobs[2].gp.context_shift = true;
    jobs[2].gp.repeat_penalty = 1.3f;
    solo(m, jobs, 3, ref);
    for (i = 0; i < 3; ++i) jobs[i].conv = new_conv(m);
    run_together(jobs, 3);
    CHECK(jobs[1].status == LLMODEL_OK && (jobs[1].res.stop_reason == LLMODEL_STOP_CONTEXT_FULL ||
                                           jobs[1].res.stop_reason == LLMODEL_STOP_EOG) && jobs[1].res.n_past <= 64,
          "full one: reason %d, n_past %d", (int)jobs[1].res.stop_reason, jobs[1].res.n_past);
    CHECK(jobs[2].status == LLMODEL_OK && jobs[2].res.stop_reason != LLMODEL_STOP_CONTEXT_FULL,
          "shifting one: reason %d", (int)jobs[2].res.stop_reason);
    CHECK(same_tokens(&jobs[0], &ref[0]) && same_tokens(&jobs[1], &ref[1]), "context-full runs differ from solo");
    for (i = 0; i < 3; ++i) llmodel_conversation_free(jobs[i].conv);
    llmodel_model_free(m);
}

/* More conversations than n_parallel: the idle ones are parked and come
 * back with their caches; and the pool grows when the running ones need it. */
static void test_parking_and_growth(const char *path) {
    llmodel_model *m = load(path, 256, 2);
    llmodel_conversation *c[4];
    job_t j[4];
    int i, round;
    char text[4][512];
    if (!m) return;
    for (i = 0; i < 4; ++i) {
        c[i] = new_conv(m);
        memset(&j[i], 0, sizeof j[i]);
        j[i].conv = c[i];
        j[i].gp = greedy(6);
        snprintf(text[i], sizeof text[i], "%s", PROMPTS[i]);
    }
    for (round = 0; round < 2; ++round) {
        for (i = 0; i < 4; ++i) {
            if (round) strncat(text[i], " and so on", sizeof text[i] - strlen(text[i]) - 1);
            j[i].prompt = text[i];
            run_job(&j[i]);
            CHECK(j[i].status == LLMODEL_OK, "round %d conv %d: %s", round, i, llmodel_last_error());
            if (round) CHECK(j[i].res.n_reused >= 4, "conv %d came back without its cache (%d reused)", i, j[i].res.n_reused);
        }
    }
    /* two at once make the context grow to two sequences; a cache parked
     * before that still comes back */
    for (i = 0; i < 2; ++i) strncat(text[i], " again", sizeof text[i] - strlen(text[i]) - 1);
    run_together(j, 2);
    CHECK(j[0].status == LLMODEL_OK && j[1].status == LLMODEL_OK, "two at once");
    strncat(text[2], " at last", sizeof text[2] - strlen(text[2]) - 1);
    run_job(&j[2]);
    CHECK(j[2].status == LLMODEL_OK && j[2].res.n_reused >= 4, "a cache parked before the growth came back with %d",
          j[2].res.n_reused);
    /* a state saved from a context of two sequences loads into a new conversation */
    {
        size_t size = 0, n = 0;
        void *buf;
        llmodel_conversation *copy = new_conv(m);
        CHECK(llmodel_conversation_state_size(c[0], &size) == LLMODEL_OK && size > 0, "state size: %s",
              llmodel_last_error());
        buf = malloc(size);
        CHECK(llmodel_conversation_state_save(c[0], buf, size, &n) == LLMODEL_OK, "save: %s", llmodel_last_error());
        CHECK(llmodel_conversation_state_load(copy, buf, n) == LLMODEL_OK, "load: %s", llmodel_last_error());
        j[3].conv = copy;
        j[3].prompt = text[0];
        run_job(&j[3]);
        CHECK(j[3].status == LLMODEL_OK && j[3].res.n_reused >= 4, "the loaded state gave %d reused tokens",
              j[3].res.n_reused);
        j[3].conv = c[3];
        free(buf);
        llmodel_conversation_free(copy);
    }
    for (i = 0; i < 4; ++i) llmodel_conversation_free(c[i]);
    llmodel_model_free(m);

    /* four long prompts at once need four times one context's cells */
    m = load(path, 256, 4);
    if (!m) return;
    {
        job_t jobs[4], ref[4];
        static char longp[4][2048];
        memset(jobs, 0, sizeof jobs);
        for (i = 0; i < 4; ++i) {
            int k;
            longp[i][0] = '\0';
            for (k = 0; k < 16; ++k) {
                strcat(longp[i], PROMPTS[(i + k) % N_PAR]);
                strcat(longp[i], ". ");
            }
            jobs[i].prompt = longp[i];
            jobs[i].gp = greedy(16);
        }
        solo(m, jobs, 4, ref);
        for (i = 0; i < 4; ++i) jobs[i].conv = new_conv(m);
        run_together(jobs, 4);
        for (i = 0; i < 4; ++i) {
            CHECK(jobs[i].status == LLMODEL_OK && jobs[i].res.n_prompt > 100, "long %d: %s, %d prompt tokens", i,
                  llmodel_status_name(jobs[i].status), jobs[i].res.n_prompt);
            printf("long %d: common prefix with solo %d of %d tokens\n", i, common_prefix(&jobs[i], &ref[i]),
                   jobs[i].n_tokens);
            CHECK(jobs[i].res.n_generated == 16 || jobs[i].res.stop_reason == LLMODEL_STOP_EOG, "long %d: %d tokens", i,
                  jobs[i].res.n_generated);
            /* Not counted as batched runs equal to solo: these prompts are read
             * in steps shared with each other, through the batched matmul, and
             * part from solo after 6 to 16 tokens (on AVX-512 hosts), as the
             * header says. Their replies must still start as solo ones do: a
             * cache holding the wrong prompt parts at once. */
            CHECK(common_prefix(&jobs[i], &ref[i]) >= 2, "long %d parts from solo at token %d", i,
                  common_prefix(&jobs[i], &ref[i]));
        }
        for (i = 0; i < 4; ++i) llmodel_conversation_free(jobs[i].conv);
    }
    llmodel_model_free(m);
}

typedef struct {
    job_t job;
    llmodel_model *m;
} closer_t;

/* Closing the model while its conversations generate: they stop, later
 * calls say it is closed, and they can still be freed, after the model too. */
static void test_close_with_live_conversations(const char *path) {
    llmodel_model *m = load(path, 512, 4);
    job_t jobs[3];
    pthread_t th[3];
    llmodel_stream *st = NULL;
    llmodel_conversation *idle;
    int i;
    if (!m) return;
    memset(jobs, 0, sizeof jobs);
    for (i = 0; i < 3; ++i) {
        jobs[i].conv = new_conv(m);
        jobs[i].prompt = PROMPTS[i];
        jobs[i].gp = greedy(-1);
        jobs[i].gp.context_shift = true;
    }
    idle = new_conv(m);
    CHECK(llmodel_conversation_stream_begin(idle, "Hello", 5, NULL, NULL, NULL, &st) == LLMODEL_OK, "stream: %s",
          llmodel_last_error());
    for (i = 0; i < 3; ++i) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(llmodel_model_close(m) == LLMODEL_OK, "close: %s", llmodel_last_error());
    for (i = 0; i < 3; ++i) pthread_join(th[i], NULL);
    for (i = 0; i < 3; ++i) {
        CHECK((jobs[i].status == LLMODEL_OK && jobs[i].res.stop_reason == LLMODEL_STOP_CANCELLED) ||
                  jobs[i].status == LLMODEL_ERR_CLOSED || jobs[i].status == LLMODEL_ERR_CANCELLED,
              "job %d after close: %s reason %d", i, llmodel_status_name(jobs[i].status), (int)jobs[i].res.stop_reason);
        CHECK(llmodel_conversation_generate(jobs[i].conv, "x", 1, NULL, NULL, NULL, NULL, NULL) == LLMODEL_ERR_CLOSED,
              "generate after close");
    }
    {
        llmodel_token t;
        const char *text;
        size_t len;
        bool done;
        CHECK(llmodel_stream_next(st, &t, &text, &len, &done) == LLMODEL_ERR_CLOSED, "stream after close");
    }
    llmodel_model_free(m);
    CHECK(llmodel_stream_end(st, NULL) == LLMODEL_OK, "stream end after free");
    for (i = 0; i < 3; ++i) llmodel_conversation_free(jobs[i].conv);
    llmodel_conversation_free(idle);
}

/* The embedder pools as asked: a mean vector is the mean of the token
 * vectors (for a causal model, token i's vector is the last-token vector of
 * the text's first i tokens), and a text embeds the same alone or batched. */
static void test_embedder(llmodel_model *m) {
    llmodel_embedder_params ep = llmodel_embedder_default_params();
    llmodel_embedder *mean = NULL, *last = NULL;
    llmodel_embedder_info info;
    llmodel_token toks[64];
    size_t n = 0, i, k;
    float *v, *w, *acc;
    int n_embd;
    ep.normalize = false;
    ep.pooling = LLMODEL_POOLING_MEAN;
    CHECK(llmodel_embedder_new(m, &ep, &mean) == LLMODEL_OK, "embedder: %s", llmodel_last_error());
    ep.pooling = LLMODEL_POOLING_LAST;
    CHECK(llmodel_embedder_new(m, &ep, &last) == LLMODEL_OK, "embedder: %s", llmodel_last_error());
    if (!mean || !last) return;
    CHECK(llmodel_embedder_get_info(mean, &info) == LLMODEL_OK && info.n_embd > 0 &&
              info.pooling == LLMODEL_POOLING_MEAN && info.causal,
          "info");
    n_embd = info.n_embd;
    llmodel_tokenize(m, "The cat sat on the mat.", 23, true, false, toks, 64, &n);
    v = calloc((size_t)n_embd * (n + 2), sizeof(float));
    w = calloc((size_t)n_embd * (n + 2), sizeof(float));
    acc = calloc((size_t)n_embd, sizeof(float));
    {
        const llmodel_token *texts[1];
        const llmodel_token *prefixes[64];
        size_t lens[64];
        texts[0] = toks;
        CHECK(llmodel_embed_tokens(mean, texts, &n, 1, v, (size_t)n_embd, NULL, NULL) == LLMODEL_OK, "embed: %s",
              llmodel_last_error());
        for (i = 0; i < n; ++i) {
            prefixes[i] = toks;
            lens[i] = i + 1;
        }
        CHECK(llmodel_embed_tokens(last, prefixes, lens, n, w, (size_t)n_embd * n, NULL, NULL) == LLMODEL_OK,
              "embed prefixes: %s", llmodel_last_error());
        for (i = 0; i < n; ++i)
            for (k = 0; k < (size_t)n_embd; ++k) acc[k] += w[i * (size_t)n_embd + k] / (float)n;
        {
            double diff = 0, norm = 0;
            for (k = 0; k < (size_t)n_embd; ++k) {
                diff += (acc[k] - v[k]) * (acc[k] - v[k]);
                norm += v[k] * v[k];
            }
            CHECK(norm > 0 && sqrt(diff / norm) < 1e-3, "mean pooling vs mean of token vectors: rel diff %g",
                  sqrt(diff / norm));
        }
        /* batched with others vs alone */
        {
            const llmodel_token *three[3];
            size_t lens3[3];
            three[0] = toks;
            three[1] = toks;
            three[2] = toks;
            lens3[0] = 3;
            lens3[1] = n;
            lens3[2] = 5;
            CHECK(llmodel_embed_tokens(mean, three, lens3, 3, w, (size_t)n_embd * 3, NULL, NULL) == LLMODEL_OK,
                  "embed three: %s", llmodel_last_error());
            {
                double diff = 0, norm = 0;
                for (k = 0; k < (size_t)n_embd; ++k) {
                    double d = w[(size_t)n_embd + k] - v[k];
                    diff += d * d;
                    norm += v[k] * v[k];
                }
                CHECK(sqrt(diff / norm) < 1e-3, "batched vs alone: rel diff %g", sqrt(diff / norm));
            }
        }
        {
            size_t zero = 0;
            CHECK(llmodel_embed_tokens(mean, texts, &zero, 1, v, (size_t)n_embd, NULL, NULL) ==
                      LLMODEL_ERR_INVALID_ARGUMENT, "empty text");
            CHECK(llmodel_embed_tokens(mean, texts, &n, 1, v, 3, NULL, NULL) == LLMODEL_ERR_INVALID_ARGUMENT,
                  "too small out");
        }
    }
    llmodel_embedder_free(last);
    /* normalized by default */
    {
        llmodel_embedder *norm_em = NULL;
        const llmodel_token *texts[1];
        double len2 = 0;
        texts[0] = toks;
        CHECK(llmodel_embedder_new(m, NULL, &norm_em) == LLMODEL_OK, "default embedder: %s", llmodel_last_error());
        if (norm_em) {
            CHECK(llmodel_embed_tokens(norm_em, texts, &n, 1, v, (size_t)n_embd, NULL, NULL) == LLMODEL_OK, "embed");
            for (k = 0; k < (size_t)n_embd; ++k) len2 += v[k] * v[k];
            CHECK(fabs(sqrt(len2) - 1.0) < 1e-4, "length %g", sqrt(len2));
            llmodel_embedder_free(norm_em);
        }
    }
    /* an embedder left open when its model is closed fails cleanly, then frees */
    llmodel_model_close(m);
    {
        const llmodel_token *texts[1];
        texts[0] = toks;
        CHECK(llmodel_embed_tokens(mean, texts, &n, 1, v, (size_t)n_embd, NULL, NULL) == LLMODEL_ERR_CLOSED,
              "embed after close");
    }
    llmodel_embedder_free(mean);
    free(v);
    free(w);
    free(acc);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define TIMED(call)                                                      \
    do {                                                                 \
        double t0_ = now_s();                                            \
        call;                                                            \
        printf("%-40s %6.1f s\n", #call, now_s() - t0_);                 \
        fflush(stdout);                                                  \
    } while (0)

int main(int argc, char **argv) {
    llmodel_model *m;
    if (argc < 2 || !argv[1][0]) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    m = load(argv[1], 512, 8);
    if (m) {
        TIMED(test_arguments(m));
        TIMED(test_interleaved(m));
        TIMED(test_eight_together(m));
        TIMED(test_cancel_one(m));
        llmodel_model_free(m);
    }
    TIMED(test_context_full_alone(argv[1]));
    TIMED(test_parking_and_growth(argv[1]));
    TIMED(test_close_with_live_conversations(argv[1]));
    m = load(argv[1], 512, 1);
    if (m) {
        TIMED(test_embedder(m));
        llmodel_model_free(m);
    }
    printf("batched runs equal to solo: %d of %d\n", g_same, g_compared);
    CHECK(g_compared > 0 && g_same >= g_compared - 1, "only %d of %d batched runs equal to solo", g_same, g_compared);
    printf("%d checks, %d failed\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
