// The calling thread's last error, and the names of statuses.
#include "internal.h"

#include <string>
#include <utility>

namespace llmodel {

static thread_local std::string t_last_error;

llmodel_status fail(llmodel_status status, std::string message) {
    t_last_error = std::move(message);
    return status;
}

void clear_error() { t_last_error.clear(); }

} // namespace llmodel

using namespace llmodel;

extern "C" {

LLMODEL_API const char *llmodel_last_error(void) { return t_last_error.c_str(); }

LLMODEL_API const char *llmodel_status_name(llmodel_status status) {
    switch (status) {
    case LLMODEL_OK: return "LLMODEL_OK";
    case LLMODEL_ERR_INVALID_ARGUMENT: return "LLMODEL_ERR_INVALID_ARGUMENT";
    case LLMODEL_ERR_FILE_NOT_FOUND: return "LLMODEL_ERR_FILE_NOT_FOUND";
    case LLMODEL_ERR_INVALID_FILE: return "LLMODEL_ERR_INVALID_FILE";
    case LLMODEL_ERR_UNSUPPORTED: return "LLMODEL_ERR_UNSUPPORTED";
    case LLMODEL_ERR_OUT_OF_MEMORY: return "LLMODEL_ERR_OUT_OF_MEMORY";
    case LLMODEL_ERR_CONTEXT_OVERFLOW: return "LLMODEL_ERR_CONTEXT_OVERFLOW";
    case LLMODEL_ERR_BUSY: return "LLMODEL_ERR_BUSY";
    case LLMODEL_ERR_CLOSED: return "LLMODEL_ERR_CLOSED";
    case LLMODEL_ERR_CANCELLED: return "LLMODEL_ERR_CANCELLED";
    case LLMODEL_ERR_BUFFER_TOO_SMALL: return "LLMODEL_ERR_BUFFER_TOO_SMALL";
    case LLMODEL_ERR_NO_DEVICE: return "LLMODEL_ERR_NO_DEVICE";
    case LLMODEL_ERR_BACKEND: return "LLMODEL_ERR_BACKEND";
    case LLMODEL_ERR_INTERNAL: return "LLMODEL_ERR_INTERNAL";
    }
    return "LLMODEL_ERR_UNKNOWN";
}

} // extern "C"
