// Compiled as C++11 with -Wall -Wextra -Werror -pedantic: the header is valid C++.
#include "llmodel.h"

int llmodel_header_check_cxx();
int llmodel_header_check_cxx() {
    llmodel_load_params lp = llmodel_load_default_params();
    llmodel_status s = LLMODEL_OK;
    return lp.n_ctx + static_cast<int>(s) + LLMODEL_ABI_VERSION;
}
