// Shared by the llmodel sources; not part of the public interface.
#pragma once

#include "llmodel.h"

#include <cstdio>
#include <string>

#include "ggml-backend.h"

namespace llmodel {

// Records a failure for the calling thread and returns its status.
llmodel_status fail(llmodel_status status, std::string message);
void clear_error();

// Routes llama.cpp's and ggml's log to llmodel's log callback (once).
void install_engine_log();

// A debug line in llmodel's log.
void log_debug(const std::string &text);

// While alive on a thread, the engine's errors logged on it are demoted to
// debug lines (probing optional backends: a missing GPU runtime is normal).
class QuietScope {
public:
    QuietScope();
    ~QuietScope();
    QuietScope(const QuietScope &) = delete;
    QuietScope &operator=(const QuietScope &) = delete;

private:
    bool saved_;
};

// Loads ggml's backends from llmodel_backend_dir(), once per process.
void ensure_backends();

// While alive on a thread, ggml/llama error and warning lines logged on that
// thread are collected (to put the engine's own reason into our messages).
class LogCapture {
public:
    LogCapture();
    ~LogCapture();
    LogCapture(const LogCapture &) = delete;
    LogCapture &operator=(const LogCapture &) = delete;
    std::string text() const;
};

// What check_model_file learns about a file that the load must heed.
struct ModelFileFacts {
    // Every tensor's data is aligned in the file as ggml's CPU buffers need:
    // if not, llama.cpp cannot map the file (it asserts), so it is read.
    bool mmap_aligned = true;
};

// Checks a model file before llama.cpp loads it: that it exists, is a whole
// GGUF file, and has nothing llama.cpp would abort the process on (see
// model_check.cpp). Records the failure and returns its status, or LLMODEL_OK.
llmodel_status check_model_file(const char *path, ModelFileFacts *facts = nullptr);

// A copy of a GGUF file with its F16 and BF16 tensors widened to F32 (see
// upcast.cpp), alive as long as this object: load it from load_path.
struct F32Copy {
    std::string load_path;
    std::string temp_path; // a file to remove, where no memory file could be made
    FILE *file = nullptr;
    bool any = false;      // false: the file has no F16/BF16 tensor; load the original
    F32Copy() = default;
    F32Copy(const F32Copy &) = delete;
    F32Copy &operator=(const F32Copy &) = delete;
    ~F32Copy();
};

// Writes the copy (only when the file has F16 or BF16 tensors).
llmodel_status make_f32_copy(const char *path, F32Copy *out);

// The end of a captured log, trimmed, for an error message.
std::string last_lines(const std::string &log);

// Resolves a device request (see llmodel_load_params.device). On success
// *dev is the device, or nullptr for the CPU.
llmodel_status select_device(const char *request, ggml_backend_dev_t *dev);

// A device's vendor guessed from its description ("" if unknown).
std::string vendor_of(const std::string &description);

} // namespace llmodel
