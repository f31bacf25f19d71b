// Backend loading, devices and CPU facts: the process-wide side of llmodel.
#include "internal.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "ggml.h"
#include "llama.h"

#if defined(_WIN32)
#  define WIN32_LEAN_AND_MEAN
#  include <windows.h>
#else
#  include <dlfcn.h>
#endif
#if defined(__linux__)
#  include <sched.h>
#endif
#if defined(__APPLE__)
#  include <sys/sysctl.h>
#endif

namespace fs = std::filesystem;

namespace llmodel {

// ------------------------------------------------------------ backends

namespace {

#if defined(_WIN32)
const char *kLibPrefix = "ggml-";
const char *kLibExt = ".dll";
#else
const char *kLibPrefix = "libggml-";
const char *kLibExt = ".so";
#endif

std::string g_backend_dir;
std::string g_cpu_variant;

std::string own_directory() {
#if defined(_WIN32)
    HMODULE self = nullptr;
    if (GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                           reinterpret_cast<LPCWSTR>(&own_directory), &self)) {
        std::vector<wchar_t> buf(MAX_PATH);
        for (;;) {
            DWORD n = GetModuleFileNameW(self, buf.data(), static_cast<DWORD>(buf.size()));
            if (n == 0) break;
            if (n < buf.size()) {
                return fs::path(std::wstring(buf.data(), n)).parent_path().u8string();
            }
            buf.resize(buf.size() * 2);
        }
    }
    return ".";
#else
    Dl_info info;
    if (dladdr(reinterpret_cast<void *>(&own_directory), &info) && info.dli_fname) {
        return fs::absolute(fs::path(info.dli_fname)).parent_path().string();
    }
    return ".";
#endif
}

// Opens a library only to see whether it (and everything it needs) can load;
// an optional backend whose runtime is missing is skipped without noise.
struct DynLib {
    void *handle = nullptr;
    std::string error;
    explicit DynLib(const fs::path &path) {
#if defined(_WIN32)
        handle = reinterpret_cast<void *>(LoadLibraryW(path.wstring().c_str()));
        if (!handle) error = "LoadLibrary failed with error " + std::to_string(GetLastError());
#else
        handle = dlopen(path.string().c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!handle) {
            const char *e = dlerror();
            error = e ? e : "dlopen failed";
        }
#endif
    }
    ~DynLib() {
        if (!handle) return;
#if defined(_WIN32)
        FreeLibrary(reinterpret_cast<HMODULE>(handle));
#else
        dlclose(handle);
#endif
    }
    void *symbol(const char *name) const {
#if defined(_WIN32)
        return reinterpret_cast<void *>(GetProcAddress(reinterpret_cast<HMODULE>(handle), name));
#else
        return dlsym(handle, name);
#endif
    }
    DynLib(const DynLib &) = delete;
    DynLib &operator=(const DynLib &) = delete;
};

void debug_log(const std::string &msg) { log_debug(msg + "\n"); }

std::vector<fs::path> backend_files(const fs::path &dir, const std::string &name) {
    std::vector<fs::path> out;
    const std::string exact = kLibPrefix + name + kLibExt;
    const std::string prefix = kLibPrefix + name + "-";
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string file = it->path().filename().string();
        if (file == exact || (file.rfind(prefix, 0) == 0 && it->path().extension() == kLibExt)) {
            out.push_back(it->path());
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

// The CPU backend: the variant whose score (what this CPU supports) is
// highest. ggml can pick by itself, but we want to know which it picked.
void load_cpu_backend(const fs::path &dir) {
    typedef int (*score_fn)(void);
    if (ggml_backend_reg_by_name("CPU")) {
        g_cpu_variant = "native"; // linked in: a build without loadable variants
        return;
    }
    fs::path best;
    int best_score = 0;
    // $LLMODEL_CPU_VARIANT picks one variant by name ("haswell", ...) instead of the best-scoring one.
    const char *forced = std::getenv("LLMODEL_CPU_VARIANT");
    const std::string want = forced ? forced : "";
    for (const auto &path : backend_files(dir, "cpu")) {
        const std::string file = path.filename().string();
        if (!want.empty() && file != std::string(kLibPrefix) + "cpu-" + want + kLibExt) continue;
        if (want.empty() && file.find("sapphirerapids") != std::string::npos) {
            // Its AMX matrix kernels die with SIGILL (tilezero on unconfigured
            // tiles) in this llama.cpp on AMX hosts; the AVX-512 VNNI/BF16
            // variants (cooperlake, zen4) serve these CPUs without AMX.
            debug_log("llmodel: skipping " + file + " (AMX); LLMODEL_CPU_VARIANT=sapphirerapids forces it");
            continue;
        }
        DynLib lib(path);
        if (!lib.handle) {
            debug_log("llmodel: cannot open " + path.string() + ": " + lib.error);
            continue;
        }
        auto score = reinterpret_cast<score_fn>(lib.symbol("ggml_backend_score"));
        int s = score ? score() : 0;
        const bool is_plain = path.filename().string() == std::string(kLibPrefix) + "cpu" + kLibExt;
        if (!score && is_plain) {
            s = 1; // a native-only build has a single, unscored CPU library
        }
        if (s > best_score) {
            best_score = s;
            best = path;
        }
    }
    if (best.empty()) {
        debug_log("llmodel: no usable CPU backend in " + dir.string());
        return;
    }
    if (!ggml_backend_load(best.string().c_str())) {
        debug_log("llmodel: failed to load " + best.string());
        return;
    }
    std::string stem = best.stem().string();                 // libggml-cpu-haswell
    const std::string lead = std::string(kLibPrefix) + "cpu";
    std::string variant = stem.size() > lead.size() ? stem.substr(lead.size() + 1) : "native";
    g_cpu_variant = variant;
    debug_log("llmodel: CPU backend " + best.filename().string());
}

void load_optional_backends(const fs::path &dir) {
    static const char *names[] = {"cuda", "hip", "metal", "vulkan", "sycl", "opencl", "musa", "blas"};
    QuietScope quiet; // a missing GPU runtime is normal: say so only at debug level
    for (const char *name : names) {
        for (const auto &path : backend_files(dir, name)) {
            {
                DynLib probe(path);
                if (!probe.handle) {
                    debug_log("llmodel: skipping " + path.filename().string() + ": " + probe.error);
                    continue;
                }
            }
            if (ggml_backend_load(path.string().c_str())) {
                debug_log("llmodel: loaded " + path.filename().string());
                break;
            }
            debug_log("llmodel: " + path.filename().string() + " found no usable device");
        }
    }
}

} // namespace

void ensure_backends() {
    static std::once_flag once;
    install_engine_log();
    std::call_once(once, [] {
        const char *env = std::getenv("LLMODEL_BACKEND_DIR");
        g_backend_dir = (env && *env) ? std::string(env) : own_directory();
        fs::path dir(g_backend_dir);
        load_optional_backends(dir);
        load_cpu_backend(dir);
        // What llama_backend_init() does, minus its fallback of loading
        // backends from the executable's folder (Python's, for us).
        ggml_time_init();
        ggml_init_params ip = {0, nullptr, false};
        ggml_free(ggml_init(ip)); // fills ggml's f16 tables
    });
}

// ------------------------------------------------------------ devices

std::string vendor_of(const std::string &description) {
    std::string d = description;
    std::transform(d.begin(), d.end(), d.begin(), [](unsigned char c) { return std::tolower(c); });
    auto has = [&](const char *s) { return d.find(s) != std::string::npos; };
    if (has("nvidia") || has("geforce") || has("quadro") || has("tesla") || has("rtx")) return "NVIDIA";
    if (has("amd") || has("radeon") || has("instinct")) return "AMD";
    if (has("intel") || has("arc(tm)") || has("iris")) return "Intel";
    if (has("apple")) return "Apple";
    return "";
}

namespace {
struct DeviceEntry {
    ggml_backend_dev_t dev;
    std::string backend, name, description, vendor;
    bool is_gpu;
};

const std::vector<DeviceEntry> &devices() {
    static std::vector<DeviceEntry> list;
    static std::once_flag once;
    ensure_backends();
    std::call_once(once, [] {
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t dev = ggml_backend_dev_get(i);
            DeviceEntry e;
            e.dev = dev;
            ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
            e.backend = reg ? ggml_backend_reg_name(reg) : "";
            e.name = ggml_backend_dev_name(dev);
            const char *desc = ggml_backend_dev_description(dev);
            e.description = desc ? desc : "";
            enum ggml_backend_dev_type t = ggml_backend_dev_type(dev);
            e.is_gpu = t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU;
            e.vendor = e.is_gpu ? vendor_of(e.description) : "";
            list.push_back(std::move(e));
        }
    });
    return list;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}
} // namespace

llmodel_status select_device(const char *request, ggml_backend_dev_t *dev) {
    *dev = nullptr;
    std::string req = lower(request ? request : "");
    if (req.empty() || req == "cpu") {
        return LLMODEL_OK;
    }
    const auto &list = devices();
    const DeviceEntry *found = nullptr;
    // Exact device names first, then backends and vendors; discrete GPUs
    // rank before integrated ones because the list keeps ggml's order.
    for (const auto &e : list) {
        if (e.is_gpu && (lower(e.name) == req || lower(e.description) == req)) {
            found = &e;
            break;
        }
    }
    if (!found) {
        std::string want = req == "kompute" ? "vulkan" : req;
        for (const auto &e : list) {
            if (!e.is_gpu) continue;
            if (want == "gpu" || lower(e.backend) == want || lower(e.vendor) == want) {
                found = &e;
                break;
            }
        }
    }
    if (!found) {
        std::string names;
        for (const auto &e : list) {
            if (!e.is_gpu) continue;
            names += (names.empty() ? "" : ", ") + e.name + " (" + e.description + ")";
        }
        return fail(LLMODEL_ERR_NO_DEVICE,
                    "no GPU device matches '" + std::string(request) + "'; " +
                        (names.empty() ? std::string("this build found no GPU devices (use device='cpu')")
                                       : "available: " + names));
    }
    *dev = found->dev;
    return LLMODEL_OK;
}

// ------------------------------------------------------------ CPU facts

static int32_t count_physical_cores() {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        std::set<std::pair<int, int>> cores;
        int logical = 0;
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
            if (!CPU_ISSET(cpu, &set)) continue;
            ++logical;
            std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
            std::ifstream core(base + "core_id"), pkg(base + "physical_package_id");
            int core_id = -1, pkg_id = -1;
            if (!(core >> core_id) || !(pkg >> pkg_id)) {
                return logical > 0 ? logical : 1; // topology unknown: count what we may use
            }
            cores.insert({pkg_id, core_id});
        }
        if (!cores.empty()) return static_cast<int32_t>(cores.size());
    }
#elif defined(__APPLE__)
    int n = 0;
    size_t len = sizeof(n);
    if (sysctlbyname("hw.perflevel0.physicalcpu", &n, &len, nullptr, 0) == 0 && n > 0) return n;
    if (sysctlbyname("hw.physicalcpu", &n, &len, nullptr, 0) == 0 && n > 0) return n;
#endif
    unsigned n = std::thread::hardware_concurrency();
#if defined(_WIN32)
    n = n > 1 ? n / 2 : n; // assume SMT: logical processors are usually twice the cores
#endif
    return n > 0 ? static_cast<int32_t>(n) : 1;
}

} // namespace llmodel

using namespace llmodel;

extern "C" {

LLMODEL_API const char *llmodel_version(void) { return LLMODEL_VERSION_STRING; }

LLMODEL_API int32_t llmodel_abi_version(void) { return LLMODEL_ABI_VERSION; }




LLMODEL_API const char *llmodel_backend_dir(void) {
    try {
        ensure_backends();
    } catch (...) {
    }
    return g_backend_dir.c_str();
}

LLMODEL_API const char *llmodel_cpu_variant(void) {
    try {
        ensure_backends();
    } catch (...) {
    }
    return g_cpu_variant.c_str();
}

LLMODEL_API int32_t llmodel_physical_cores(void) {
    static const int32_t n = [] {
        try {
            return count_physical_cores();
        } catch (...) {
            return 1;
        }
    }();
    return n;
}

LLMODEL_API size_t llmodel_device_count(void) {
    try {
        return devices().size();
    } catch (...) {
        return 0;
    }
}

LLMODEL_API llmodel_status llmodel_device_get(size_t index, llmodel_device_info *out) {
    try {
        clear_error();
        if (!out) return fail(LLMODEL_ERR_INVALID_ARGUMENT, "out is NULL");
        const auto &list = devices();
        if (index >= list.size()) {
            return fail(LLMODEL_ERR_INVALID_ARGUMENT, "device index " + std::to_string(index) +
                                                          " out of range (" + std::to_string(list.size()) +
                                                          " devices)");
        }
        const DeviceEntry &e = list[index];
        size_t free_mem = 0, total_mem = 0;
        ggml_backend_dev_memory(e.dev, &free_mem, &total_mem);
        out->backend = e.backend.c_str();
        out->name = e.name.c_str();
        out->description = e.description.c_str();
        out->vendor = e.vendor.c_str();
        out->is_gpu = e.is_gpu;
        out->memory_total = total_mem;
        out->memory_free = free_mem;
        return LLMODEL_OK;
    } catch (const std::exception &ex) {
        return fail(LLMODEL_ERR_INTERNAL, ex.what());
    } catch (...) {
        return fail(LLMODEL_ERR_INTERNAL, "unknown error");
    }
}

} // extern "C"
