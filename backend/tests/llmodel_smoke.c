/* Loads a model and generates a few tokens: used under an emulated CPU. */
#include <stdio.h>
#include <string.h>

#include "llmodel.h"

static bool print_piece(llmodel_token token, const char *piece, size_t len, void *user_data) {
    (void)token;
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    return true;
}

int main(int argc, char **argv) {
    llmodel_load_params lp = llmodel_load_default_params();
    llmodel_generate_params gp = llmodel_generate_default_params();
    llmodel_model *model = NULL;
    llmodel_generate_result res;
    const char *prompt = "The capital of France is";
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 2;
    }
    lp.n_ctx = 256;
    lp.n_threads = 1;
    printf("cpu_variant=%s\n", llmodel_cpu_variant());
    if (llmodel_model_load(argv[1], &lp, &model) != LLMODEL_OK) {
        fprintf(stderr, "load failed: %s\n", llmodel_last_error());
        return 1;
    }
    gp.temp = 0.0f;
    gp.n_predict = 6;
    printf("text=");
    if (llmodel_generate(model, prompt, strlen(prompt), &gp, NULL, print_piece, NULL, &res) != LLMODEL_OK) {
        fprintf(stderr, "generate failed: %s\n", llmodel_last_error());
        llmodel_model_free(model);
        return 1;
    }
    printf("\nn_generated=%d\n", res.n_generated);
    llmodel_model_free(model);
    return res.n_generated > 0 ? 0 : 1;
}
