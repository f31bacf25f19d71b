// F32 copies of F16/BF16 weights (llmodel_load_params.f32_weights).
//
// On x86 CPUs ggml multiplies F16 weights by converting both operands to F32
// inside the inner loop; with the weights in F32 the same products ran about
// 20% faster (all-MiniLM-L6-v2, 2 cores). llama.cpp loads tensors in the
// type their file gives, so the copy is a GGUF file of its own: the same
// metadata and tensors, F16 and BF16 ones as F32, written to an anonymous
// memory file (a temporary file where there is none) and loaded from there.
#include "internal.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ggml.h"
#include "gguf.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace llmodel {

namespace {

struct GgufFree {
    void operator()(gguf_context *g) const { gguf_free(g); }
};
struct GgmlFree {
    void operator()(ggml_context *c) const { ggml_free(c); }
};
struct FileClose {
    void operator()(FILE *f) const { std::fclose(f); }
};

bool widened(ggml_type t) { return t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }

bool seek(FILE *f, size_t offset) {
#if defined(_WIN32)
    return _fseeki64(f, static_cast<__int64>(offset), SEEK_SET) == 0;
#else
    return fseeko(f, static_cast<off_t>(offset), SEEK_SET) == 0;
#endif
}

} // namespace

F32Copy::~F32Copy() {
    if (file) std::fclose(file);
    if (!temp_path.empty()) std::remove(temp_path.c_str());
}

llmodel_status make_f32_copy(const char *path, F32Copy *out) {
    ggml_context *meta_raw = nullptr;
    gguf_init_params ip{};
    ip.no_alloc = true;
    ip.ctx = &meta_raw;
    std::unique_ptr<gguf_context, GgufFree> src(gguf_init_from_file(path, ip));
    std::unique_ptr<ggml_context, GgmlFree> meta(meta_raw);
    if (!src || !meta) return fail(LLMODEL_ERR_INVALID_FILE, std::string("could not read ") + path);
    const int64_t n = gguf_get_n_tensors(src.get());
    bool any = false;
    for (int64_t i = 0; i < n; ++i) any = any || widened(gguf_get_tensor_type(src.get(), i));
    if (!any) return LLMODEL_OK; // nothing to widen: the file is loaded as it is

    std::unique_ptr<gguf_context, GgufFree> dst(gguf_init_empty());
    gguf_set_kv(dst.get(), src.get());
    for (int64_t i = 0; i < n; ++i) {
        const char *name = gguf_get_tensor_name(src.get(), i);
        gguf_add_tensor(dst.get(), ggml_get_tensor(meta.get(), name));
        if (widened(gguf_get_tensor_type(src.get(), i))) gguf_set_tensor_type(dst.get(), name, GGML_TYPE_F32);
    }

    FILE *f = nullptr;
#if defined(__linux__)
    const int fd = memfd_create("llmodel-f32-weights", MFD_CLOEXEC);
    if (fd >= 0) {
        f = fdopen(fd, "w+b");
        if (!f) close(fd);
        else out->load_path = "/proc/self/fd/" + std::to_string(fd);
    }
#endif
    if (!f) {
        const char *dir = std::getenv("TMPDIR");
        std::string base = std::string(dir && *dir ? dir : "/tmp") + "/llmodel-f32-";
        for (int k = 0; !f && k < 100; ++k) {
            std::string candidate = base + std::to_string(reinterpret_cast<uintptr_t>(out)) + "-" + std::to_string(k) +
                                    ".gguf";
            f = std::fopen(candidate.c_str(), "wxb"); // never an existing file
            if (f) out->temp_path = out->load_path = candidate;
        }
    }
    if (!f) return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not make a file for the F32 copy of the weights");
    out->file = f;

    std::unique_ptr<FILE, FileClose> in(std::fopen(path, "rb"));
    if (!in) return fail(LLMODEL_ERR_INVALID_FILE, std::string("could not open ") + path);
    if (!gguf_write_to_file_ptr(dst.get(), f, /*only_meta=*/true)) {
        return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not write the F32 copy of the weights");
    }
    const size_t align = gguf_get_alignment(dst.get());
    const size_t src_data = gguf_get_data_offset(src.get());
    std::vector<uint8_t> raw;
    std::vector<float> wide;
    const std::vector<uint8_t> zeros(align, 0);
    for (int64_t i = 0; i < n; ++i) {
        const size_t size = gguf_get_tensor_size(src.get(), i);
        raw.resize(size);
        if (!seek(in.get(), src_data + gguf_get_tensor_offset(src.get(), i)) ||
            std::fread(raw.data(), 1, size, in.get()) != size) {
            return fail(LLMODEL_ERR_INVALID_FILE, std::string("could not read the tensors of ") + path);
        }
        const ggml_type type = gguf_get_tensor_type(src.get(), i);
        const void *bytes = raw.data();
        size_t n_bytes = size;
        if (widened(type)) {
            const size_t count = size / 2;
            wide.resize(count);
            if (type == GGML_TYPE_F16) {
                ggml_fp16_to_fp32_row(reinterpret_cast<const ggml_fp16_t *>(raw.data()), wide.data(),
                                      static_cast<int64_t>(count));
            } else {
                ggml_bf16_to_fp32_row(reinterpret_cast<const ggml_bf16_t *>(raw.data()), wide.data(),
                                      static_cast<int64_t>(count));
            }
            bytes = wide.data();
            n_bytes = count * sizeof(float);
        }
        if (std::fwrite(bytes, 1, n_bytes, f) != n_bytes ||
            std::fwrite(zeros.data(), 1, (align - n_bytes % align) % align, f) != (align - n_bytes % align) % align) {
            return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not write the F32 copy of the weights (out of memory or disk?)");
        }
    }
    if (std::fflush(f) != 0) return fail(LLMODEL_ERR_OUT_OF_MEMORY, "could not write the F32 copy of the weights");
    out->any = true;
    return LLMODEL_OK;
}

} // namespace llmodel
