// The engine's log: routed to the application's callback (never printed by
// us), and collected per thread to put the engine's reasons into errors.
#include "internal.h"

#include <mutex>
#include <string>

#include "ggml.h"
#include "llama.h"

namespace llmodel {


namespace {
std::mutex g_log_mutex;
llmodel_log_callback g_log_cb = nullptr;
void *g_log_ud = nullptr;

struct ThreadLog {
    int capture_depth = 0;
    std::string captured;
    bool quiet = false;          // demote errors to debug (probing optional backends)
    int last_level = GGML_LOG_LEVEL_INFO;
};
thread_local ThreadLog t_log;

void on_engine_log(enum ggml_log_level level, const char *text, void *) {
    if (!text) {
        return;
    }
    int lvl = level == GGML_LOG_LEVEL_CONT ? t_log.last_level : static_cast<int>(level);
    t_log.last_level = lvl;
    if (t_log.capture_depth > 0 && (lvl == GGML_LOG_LEVEL_ERROR || lvl == GGML_LOG_LEVEL_WARN)) {
        if (t_log.captured.size() < 4096) {
            t_log.captured += text;
        }
    }
    if (t_log.quiet) {
        lvl = GGML_LOG_LEVEL_DEBUG;
    }
    llmodel_log_callback cb;
    void *ud;
    {
        std::lock_guard<std::mutex> lock(g_log_mutex);
        cb = g_log_cb;
        ud = g_log_ud;
    }
    if (!cb) {
        return;
    }
    llmodel_log_level out = LLMODEL_LOG_DEBUG;
    switch (lvl) {
    case GGML_LOG_LEVEL_INFO: out = LLMODEL_LOG_INFO; break;
    case GGML_LOG_LEVEL_WARN: out = LLMODEL_LOG_WARN; break;
    case GGML_LOG_LEVEL_ERROR: out = LLMODEL_LOG_ERROR; break;
    default: out = LLMODEL_LOG_DEBUG; break;
    }
    cb(out, text, ud);
}

} // namespace

// Routes the engine's log to us before it can print anything itself.
void install_engine_log() {
    static std::once_flag once;
    std::call_once(once, [] { llama_log_set(on_engine_log, nullptr); });
}

QuietScope::QuietScope() : saved_(t_log.quiet) { t_log.quiet = true; }
QuietScope::~QuietScope() { t_log.quiet = saved_; }

void log_debug(const std::string &text) { on_engine_log(GGML_LOG_LEVEL_DEBUG, text.c_str(), nullptr); }

LogCapture::LogCapture() {
    if (t_log.capture_depth++ == 0) {
        t_log.captured.clear();
    }
}
LogCapture::~LogCapture() { --t_log.capture_depth; }
std::string LogCapture::text() const { return t_log.captured; }

std::string last_lines(const std::string &log) {
    std::string s = log;
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    if (s.size() > 600) s = "..." + s.substr(s.size() - 600);
    return s;
}

} // namespace llmodel

using namespace llmodel;

extern "C" {

LLMODEL_API void llmodel_set_log_callback(llmodel_log_callback callback, void *user_data) {
    install_engine_log();
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_log_cb = callback;
    g_log_ud = user_data;
}

} // extern "C"
