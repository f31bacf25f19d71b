// Loading a model: the file checked, the weights read, the engine's
// context made; and the facts and metadata of a loaded model.
#include "engine.h"
#include "model.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <sys/stat.h>

#include "gguf.h"
#include "llama.h"

using namespace llmodel;

namespace {

// A model that failed half-way through loading.
struct ModelDeleter {
    void operator()(llmodel_model *m) const {
        release_model(m);
        delete m->default_conv;
        delete m;
    }
};

std::string human_bytes(double b) {
    char buf[64];
    if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1024.0 * 1024 * 1024));
    else std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
    return buf;
}

// Memory this process could still get, or 0 if unknown.
uint64_t available_memory() {
#if defined(__linux__)
    std::ifstream f("/proc/meminfo");
    std::string key;
    uint64_t kb;
    std::string unit;
    while (f >> key >> kb) {
        std::getline(f, unit);
        if (key == "MemAvailable:") return kb * 1024;
    }
#endif
    return 0;
}

std::string meta_string(const llama_model *model, const char *key) {
    int32_t n = llama_model_meta_val_str(model, key, nullptr, 0);
    if (n < 0) return "";
    std::string s(static_cast<size_t>(n) + 1, '\0');
    llama_model_meta_val_str(model, key, &s[0], s.size());
    s.resize(static_cast<size_t>(n));
    return s;
}

int32_t meta_int(const llama_model *model, const std::string &key, int32_t fallback) {
    std::string s = meta_string(model, key.c_str());
    if (s.empty()) return fallback;
    try {
        return std::stoi(s);
    } catch (...) {
        return fallback;
    }
}

// Bytes of KV cache a context of n_ctx tokens needs (f16 K and V), roughly.
double kv_cache_bytes(const llama_model *model, const std::string &arch, int32_t n_ctx) {
    const int32_t n_head = std::max(1, llama_model_n_head(model));
    const int32_t n_head_kv = std::max(1, llama_model_n_head_kv(model));
    const int32_t head_dim = meta_int(model, arch + ".attention.key_length", llama_model_n_embd(model) / n_head);
    return 2.0 * 2.0 * n_ctx * llama_model_n_layer(model) * n_head_kv * head_dim;
}

} // namespace

extern "C" {

LLMODEL_API llmodel_load_params llmodel_load_default_params(void) {
    llmodel_load_params p;
    p.n_ctx = 2048;
    p.n_batch = 512;
    p.n_threads = 0;
    p.n_gpu_layers = -1;
    p.device = nullptr;
    p.use_mmap = true;
    p.n_parallel = 8;
    p.f32_weights = false;
    return p;
}

LLMODEL_API llmodel_status llmodel_model_load(const char *path, const llmodel_load_params *params,
                                              llmodel_model **out) {
    return guarded([&]() -> llmodel_status {
        LLMODEL_REQUIRE(out, "out is NULL");
        *out = nullptr;
        LLMODEL_REQUIRE(path && *path, "model path is NULL or empty");
        const llmodel_load_params p = params ? *params : llmodel_load_default_params();
        LLMODEL_REQUIRE(p.n_ctx >= 0, "n_ctx must be 0 or more");
        LLMODEL_REQUIRE(p.n_batch >= 1, "n_batch must be 1 or more");
        LLMODEL_REQUIRE(p.n_threads >= 0 && p.n_threads <= LLMODEL_MAX_THREADS,
                        "n_threads must be between 0 and " + std::to_string(LLMODEL_MAX_THREADS));
        LLMODEL_REQUIRE(p.n_gpu_layers >= -1, "n_gpu_layers must be -1 or more");
        LLMODEL_REQUIRE(p.n_parallel >= 1 && p.n_parallel <= LLMODEL_MAX_PARALLEL,
                        "n_parallel must be between 1 and " + std::to_string(LLMODEL_MAX_PARALLEL));

        ensure_backends();
        ModelFileFacts facts;
        if (llmodel_status s = check_model_file(path, &facts)) return s;
        ggml_backend_dev_t gpu = nullptr;
        if (llmodel_status s = select_device(p.device, &gpu)) return s;

        std::unique_ptr<llmodel_model, ModelDeleter> m(new llmodel_model());
        ggml_backend_dev_t devs[2] = {gpu, nullptr};
        llama_model_params mp = llama_model_default_params();
        mp.devices = devs; // {NULL}: the CPU alone
        mp.n_gpu_layers = gpu ? p.n_gpu_layers : 0;
        mp.load_mode = p.use_mmap && facts.mmap_aligned ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
        F32Copy wide; // lives until the weights are read from it
        if (p.f32_weights && !gpu) {
            if (llmodel_status s = make_f32_copy(path, &wide)) return s;
            if (wide.any) mp.load_mode = LLAMA_LOAD_MODE_NONE;
        }
        {
            LogCapture capture;
            m->model = llama_model_load_from_file(wide.any ? wide.load_path.c_str() : path, mp);
            if (!m->model) {
                std::string log = capture.text();
                std::string why = last_lines(log);
                if (log.find("unknown model architecture") != std::string::npos) {
                    size_t q = log.find("unknown model architecture");
                    std::string arch = log.substr(q + std::strlen("unknown model architecture"));
                    arch = arch.substr(0, arch.find('\n'));
                    return fail(LLMODEL_ERR_UNSUPPORTED, "unsupported model architecture" + arch + " in " + path);
                }
                if (log.find("alloc") != std::string::npos || log.find("memory") != std::string::npos) {
                    return fail(LLMODEL_ERR_OUT_OF_MEMORY, std::string("not enough memory to load ") + path +
                                                               (why.empty() ? "" : ": " + why));
                }
                return fail(LLMODEL_ERR_INVALID_FILE, std::string("llama.cpp could not load ") + path +
                                                          (why.empty() ? "" : ": " + why));
            }
        }
        m->path = path;
        m->mapped = mp.load_mode == LLAMA_LOAD_MODE_MMAP && llama_supports_mmap();
        if (m->mapped && stat(path, &m->file_stat) != 0) m->mapped = false;
        m->vocab = llama_model_get_vocab(m->model);
        m->arch = meta_string(m->model, "general.architecture");
        m->name = meta_string(m->model, "general.name");
        if (const char *tmpl = llama_model_chat_template(m->model, nullptr)) {
            m->chat_template = tmpl;
            m->has_chat_template = true;
        }

        const int32_t n_ctx = p.n_ctx > 0 ? p.n_ctx : llama_model_n_ctx_train(m->model);
        const double kv = kv_cache_bytes(m->model, m->arch, n_ctx);
        const uint64_t avail = available_memory();
        if (!gpu && avail > 0 && kv > static_cast<double>(avail)) {
            return fail(LLMODEL_ERR_OUT_OF_MEMORY, "a context of " + std::to_string(n_ctx) + " tokens needs about " +
                                                       human_bytes(kv) + " for its cache but only " +
                                                       human_bytes(static_cast<double>(avail)) +
                                                       " of memory is available; use a smaller n_ctx");
        }
        m->n_threads = p.n_threads > 0 ? p.n_threads : llmodel_physical_cores();
        m->n_ctx = n_ctx;
        Engine &e = m->engine;
        e.max_seq = p.n_parallel;
        e.n_batch = p.n_batch;
        LLMODEL_REQUIRE(static_cast<int64_t>(n_ctx) * p.n_parallel <= INT32_MAX / 2, "n_ctx * n_parallel is too large");
        if (llmodel_status s = create_engine_context(m.get(), 1)) {
            return fail(s, std::string(llmodel_last_error()) + " (a cache of " + std::to_string(n_ctx) +
                               " tokens needs about " + human_bytes(kv) + ")");
        }
        m->default_conv = new llmodel_conversation();
        m->default_conv->m = m.get();
        m->default_conv->is_default = true;
        const int32_t n_layer = llama_model_n_layer(m->model);
        if (gpu) {
            m->n_gpu_layers = p.n_gpu_layers < 0 ? n_layer + 1 : std::min(p.n_gpu_layers, n_layer + 1);
        }
        if (gpu && m->n_gpu_layers > 0) {
            ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(gpu);
            m->backend = reg ? ggml_backend_reg_name(reg) : "GPU";
            m->device = ggml_backend_dev_name(gpu);
            m->device_description = ggml_backend_dev_description(gpu);
        } else {
            m->backend = "CPU";
            m->device = "CPU";
            ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
            m->device_description = cpu ? ggml_backend_dev_description(cpu) : "CPU";
        }
        *out = m.release();
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_model_get_info(const llmodel_model *model, llmodel_model_info *out) {
    return model_entry(model, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(out, "out is NULL");
        const llmodel_model *m = model;
        out->architecture = m->arch.c_str();
        out->name = m->name.c_str();
        out->chat_template = m->has_chat_template ? m->chat_template.c_str() : nullptr;
        out->backend = m->backend.c_str();
        out->device = m->device.c_str();
        out->device_description = m->device_description.c_str();
        out->n_ctx = m->n_ctx;
        out->n_ctx_train = llama_model_n_ctx_train(m->model);
        out->n_batch = m->engine.n_batch;
        out->n_vocab = llama_vocab_n_tokens(m->vocab);
        out->n_embd = llama_model_n_embd(m->model);
        out->n_layer = llama_model_n_layer(m->model);
        out->n_gpu_layers = m->n_gpu_layers;
        out->n_params = llama_model_n_params(m->model);
        out->size_bytes = llama_model_size(m->model);
        out->bos = llama_vocab_bos(m->vocab);
        out->eos = llama_vocab_eos(m->vocab);
        out->eot = llama_vocab_eot(m->vocab);
        out->add_bos = llama_vocab_get_add_bos(m->vocab);
        return LLMODEL_OK;
    });
}

LLMODEL_API llmodel_status llmodel_model_meta(const llmodel_model *model, const char *key, char *buf,
                                              size_t buf_size, size_t *n_out) {
    return model_entry(model, [&]() -> llmodel_status {
        LLMODEL_REQUIRE(key, "key is NULL");
        LLMODEL_REQUIRE(buf || buf_size == 0, "buf is NULL but buf_size is not 0");
        int32_t n = llama_model_meta_val_str(model->model, key, nullptr, 0);
        if (n < 0) return fail(LLMODEL_ERR_INVALID_ARGUMENT, std::string("no metadata key ") + key);
        if (n_out) *n_out = static_cast<size_t>(n);
        if (buf_size > 0) llama_model_meta_val_str(model->model, key, buf, buf_size);
        if (static_cast<size_t>(n) >= buf_size) {
            return fail(LLMODEL_ERR_BUFFER_TOO_SMALL, "buffer too small for metadata value");
        }
        return LLMODEL_OK;
    });
}

} // extern "C"
