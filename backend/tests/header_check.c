/* Compiled with -std=c99 -Wall -Wextra -Werror -pedantic: the header is plain C99. */
#include "llmodel.h"

int llmodel_header_check_c(void);
int llmodel_header_check_c(void) {
    llmodel_load_params lp = llmodel_load_default_params();
    llmodel_generate_params gp = llmodel_generate_default_params();
    return lp.n_ctx + (int)gp.temp + LLMODEL_ABI_VERSION;
}
