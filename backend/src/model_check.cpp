// Checks a model file before llama.cpp sees it.
//
// llama.cpp refuses most malformed files with an exception, which it catches
// and turns into a failed load; but on some it stops the process instead
// (GGML_ASSERT / GGML_ABORT, or a crash), while loading or at the first
// decode. Each check here stands for one such place in the engine: the file
// is refused with LLMODEL_ERR_INVALID_FILE (or LLMODEL_ERR_UNSUPPORTED) and
// a message naming the key, tensor or token, the value found and what the
// engine expects. Values the engine itself refuses cleanly (a key of the
// wrong type, a tensor of the wrong shape, ...) are left to it.
#include "internal.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <string>
#include <sys/stat.h>
#include <unordered_map>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"

// The engine's limits (src/llama-hparams.h), read from the llama.cpp tree
// by backend/CMakeLists.txt.
#ifndef LLMODEL_LLAMA_MAX_LAYERS
#error "LLMODEL_LLAMA_MAX_LAYERS must be defined (llama.cpp's LLAMA_MAX_LAYERS)"
#endif
#ifndef LLMODEL_LLAMA_MAX_EXPERTS
#error "LLMODEL_LLAMA_MAX_EXPERTS must be defined (llama.cpp's LLAMA_MAX_EXPERTS)"
#endif

namespace llmodel {

namespace {

std::string fmt_float(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

// A token's text for a message: quoted, control bytes escaped, cut short.
std::string quoted(const std::string &s) {
    std::string out = "'";
    for (size_t i = 0; i < s.size() && i < 40; ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    if (s.size() > 40) out += "...";
    return out + "'";
}

std::string upper(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return s;
}

bool ends_with(const std::string &s, const char *suffix) {
    const size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// The problem found, if any.
struct Finding {
    llmodel_status status = LLMODEL_OK;
    std::string what;
    explicit operator bool() const { return status != LLMODEL_OK; }
};

Finding invalid(std::string what) { return {LLMODEL_ERR_INVALID_FILE, std::move(what)}; }
Finding unsupported(std::string what) { return {LLMODEL_ERR_UNSUPPORTED, std::move(what)}; }

// Reads metadata the way llama.cpp's loader does: a value of another type
// than the loader asks for is left alone (the loader refuses it itself).
class Meta {
public:
    explicit Meta(const gguf_context *g) : g_(g) {}

    int64_t find(const std::string &key) const { return gguf_find_key(g_, key.c_str()); }

    bool u32(const std::string &key, uint32_t &out) const {
        const int64_t id = find(key);
        if (id < 0 || gguf_get_kv_type(g_, id) != GGUF_TYPE_UINT32) return false;
        out = gguf_get_val_u32(g_, id);
        return true;
    }

    bool str(const std::string &key, std::string &out) const {
        const int64_t id = find(key);
        if (id < 0 || gguf_get_kv_type(g_, id) != GGUF_TYPE_STRING) return false;
        out = gguf_get_val_str(g_, id);
        return true;
    }

    // A per-layer value as llama.cpp's get_key_or_arr reads it: one u32 for
    // every layer, or an array of n_layer 32-bit integers (or bools). Empty
    // if absent or of a form the loader refuses.
    std::vector<uint32_t> per_layer(const std::string &key, uint32_t n_layer) const {
        std::vector<uint32_t> out;
        const int64_t id = find(key);
        if (id < 0) return out;
        const gguf_type t = gguf_get_kv_type(g_, id);
        if (t == GGUF_TYPE_UINT32) {
            out.assign(n_layer, gguf_get_val_u32(g_, id));
        } else if (t == GGUF_TYPE_ARRAY && gguf_get_arr_n(g_, id) == n_layer) {
            const gguf_type at = gguf_get_arr_type(g_, id);
            const void *data = gguf_get_arr_data_safe(id, at);
            if (at == GGUF_TYPE_UINT32 || at == GGUF_TYPE_INT32) {
                const uint32_t *v = static_cast<const uint32_t *>(data);
                out.assign(v, v + n_layer);
            } else if (at == GGUF_TYPE_BOOL) {
                const int8_t *v = static_cast<const int8_t *>(data);
                for (uint32_t i = 0; i < n_layer; ++i) out.push_back(v[i] != 0);
            }
        }
        return out;
    }

    const gguf_context *ctx() const { return g_; }

private:
    const void *gguf_get_arr_data_safe(int64_t id, gguf_type at) const {
        return at == GGUF_TYPE_STRING ? nullptr : gguf_get_arr_data(g_, id);
    }
    const gguf_context *g_;
};

// ------------------------------------------------------------ hparams

// What src/llama-model.cpp (load_hparams) asserts on, for every architecture,
// and the values ggml's CPU ops assert on at the first decode.
Finding check_hparams(const Meta &meta, const std::string &arch) {
    const std::string a = arch + ".";
    uint32_t n_layer = 0;
    if (!meta.u32(a + "block_count", n_layer)) return {}; // absent or mistyped: llama.cpp refuses it
    if (n_layer < 1 || n_layer > LLMODEL_LLAMA_MAX_LAYERS) {
        return invalid(a + "block_count is " + std::to_string(n_layer) + ", but the number of layers must be between 1 and " +
                       std::to_string(LLMODEL_LLAMA_MAX_LAYERS) + " (llama.cpp's LLAMA_MAX_LAYERS)");
    }
    uint32_t n_nextn = 0;
    if (meta.u32(a + "nextn_predict_layers", n_nextn) && n_nextn > n_layer) {
        return invalid(a + "nextn_predict_layers is " + std::to_string(n_nextn) + ", more than the " +
                       std::to_string(n_layer) + " layers of " + a + "block_count");
    }

    // experts
    uint32_t n_expert = 0, n_groups = 0, n_group_used = 0;
    meta.u32(a + "expert_count", n_expert);
    meta.u32(a + "expert_group_count", n_groups);
    meta.u32(a + "expert_group_used_count", n_group_used);
    if ((arch == "hunyuan-vl" || arch == "hunyuan_vl" || arch == "hunyuan-dense") && n_expert <= 1) {
        n_expert = 0; // what llama.cpp makes of these
    }
    uint32_t n_used = 0;
    for (uint32_t v : meta.per_layer(a + "expert_used_count", n_layer)) n_used = std::max(n_used, v);
    if (!(arch == "hunyuan-vl" || arch == "hunyuan_vl" || arch == "hunyuan-dense") || n_expert > 0) {
        const std::string used = a + "expert_used_count is " + std::to_string(n_used);
        const std::string experts = a + "expert_count is " + std::to_string(n_expert);
        if (n_expert > LLMODEL_LLAMA_MAX_EXPERTS) {
            return invalid(experts + ", but llama.cpp runs at most " + std::to_string(LLMODEL_LLAMA_MAX_EXPERTS) +
                           " experts (LLAMA_MAX_EXPERTS)");
        }
        if (n_used > n_expert) return invalid(used + ", more than the experts there are (" + experts + ")");
        if (n_expert > 0) {
            if (n_used == 0) return invalid(experts + " but " + used + ": a mixture of experts must use one or more");
            if (n_groups >= n_expert) {
                return invalid(a + "expert_group_count is " + std::to_string(n_groups) + ", but it must be less than " +
                               experts);
            }
            if (n_groups > 1) {
                if (n_expert % n_groups != 0) {
                    return invalid(experts + ", not a multiple of " + a + "expert_group_count (" +
                                   std::to_string(n_groups) + ")");
                }
                if (n_group_used == 0 || n_group_used >= n_groups) {
                    return invalid(a + "expert_group_used_count is " + std::to_string(n_group_used) +
                                   ", but it must be between 1 and " + a + "expert_group_count - 1 (" +
                                   std::to_string(n_groups - 1) + ")");
                }
            }
        } else {
            if (n_used != 0) return invalid(used + " but the model has no experts (" + experts + ")");
            if (n_groups != 0) {
                return invalid(a + "expert_group_count is " + std::to_string(n_groups) +
                               " but the model has no experts (" + experts + ")");
            }
        }
    }

    std::string rope_scaling;
    if (meta.str(a + "rope.scaling.type", rope_scaling) && rope_scaling != "none" && rope_scaling != "linear" &&
        rope_scaling != "yarn" && rope_scaling != "longrope") {
        return invalid(a + "rope.scaling.type is " + quoted(rope_scaling) +
                       ", but llama.cpp knows only 'none', 'linear', 'yarn' and 'longrope'");
    }

    // Every float hyperparameter must be a number; an epsilon must not be
    // negative (ggml's norms assert eps >= 0 when they first run).
    const gguf_context *g = meta.ctx();
    for (int64_t i = 0; i < gguf_get_n_kv(g); ++i) {
        const std::string key = gguf_get_key(g, i);
        if (key.compare(0, a.size(), a) != 0) continue;
        const gguf_type t = gguf_get_kv_type(g, i);
        std::vector<double> vals;
        if (t == GGUF_TYPE_FLOAT32) vals.push_back(gguf_get_val_f32(g, i));
        else if (t == GGUF_TYPE_FLOAT64) vals.push_back(gguf_get_val_f64(g, i));
        else if (t == GGUF_TYPE_ARRAY && gguf_get_arr_type(g, i) == GGUF_TYPE_FLOAT32) {
            const float *v = static_cast<const float *>(gguf_get_arr_data(g, i));
            vals.assign(v, v + gguf_get_arr_n(g, i));
        }
        for (size_t j = 0; j < vals.size(); ++j) {
            const std::string where = t == GGUF_TYPE_ARRAY ? key + "[" + std::to_string(j) + "]" : key;
            if (!std::isfinite(vals[j])) {
                return invalid(where + " is " + fmt_float(vals[j]) + ", but it must be a finite number");
            }
            if (ends_with(key, "epsilon") && vals[j] < 0) {
                return invalid(where + " is " + fmt_float(vals[j]) + ", but a norm's epsilon must be 0 or more");
            }
        }
    }

    uint32_t n_ctx_train = 0;
    if (meta.u32(a + "context_length", n_ctx_train) && n_ctx_train == 0) {
        return invalid(a + "context_length is 0: the model must have a context of one token or more");
    }

    // Heads and rotary dimensions: ggml's rope asserts that it rotates an
    // even number of dimensions, no more than a head has.
    const std::vector<uint32_t> n_head = meta.per_layer(a + "attention.head_count", n_layer);
    uint32_t n_embd = 0;
    meta.u32(a + "embedding_length", n_embd);
    if (!n_head.empty() && n_head[0] > 0) {
        uint32_t head_k = n_embd / n_head[0];
        meta.u32(a + "attention.key_length", head_k);
        uint32_t n_rot = head_k, head_k_swa = head_k;
        const bool has_rot = meta.u32(a + "rope.dimension_count", n_rot);
        const bool has_head_swa = meta.u32(a + "attention.key_length_swa", head_k_swa);
        uint32_t n_rot_swa = n_rot;
        const bool has_rot_swa = meta.u32(a + "rope.dimension_count_swa", n_rot_swa);
        auto check_rot = [&](uint32_t rot, uint32_t head, const std::string &rot_key,
                             const std::string &head_key) -> Finding {
            if (rot % 2 != 0) {
                return invalid(rot_key + " is " + std::to_string(rot) + ", but rotary embeddings need an even number");
            }
            if (rot > head) {
                return invalid(rot_key + " is " + std::to_string(rot) + ", more than the " + std::to_string(head) +
                               " dimensions of an attention head (" + head_key + ")");
            }
            return {};
        };
        const std::string head_key = meta.find(a + "attention.key_length") >= 0
                                         ? a + "attention.key_length"
                                         : a + "embedding_length / " + a + "attention.head_count";
        if (has_rot) {
            if (Finding f = check_rot(n_rot, head_k, a + "rope.dimension_count", head_key)) return f;
        }
        if (has_rot_swa || has_head_swa) {
            const std::string rot_key = has_rot_swa ? a + "rope.dimension_count_swa"
                                        : has_rot   ? a + "rope.dimension_count"
                                                    : head_key;
            if (Finding f = check_rot(n_rot_swa, head_k_swa, rot_key,
                                      has_head_swa ? a + "attention.key_length_swa" : head_key)) {
                return f;
            }
        }
    }
    return {};
}

bool in(const std::string &arch, std::initializer_list<const char *> names) {
    for (const char *n : names) {
        if (arch == n) return true;
    }
    return false;
}

// Architectures whose graph (src/models/*.cpp in llama.cpp 0.3.36) works
// with value heads of another size than key heads (multi-head latent
// attention and the like, or no attention at all). The others assert that
// the sizes are equal (GGML_ASSERT(n_embd_head == hparams.n_embd_head_k()),
// in 96 graphs) or reshape values by the key head size (the gemma family),
// which asserts too.
bool graph_allows_kv_heads_to_differ(const std::string &arch) {
    return in(arch, {"bailingmoe3", "deepseek2", "deepseek2-ocr", "deepseek32", "deepseek4", "dots3note",
                     "exaone-moe", "exaone4", "falcon-h1", "gemma4", "gemma4-assistant", "glm-dsa", "glm5-next",
                     "hy_v4", "jamba", "kimi-k3", "kimi-linear", "lfm2", "lfm2moe", "maple", "mimo2", "minicpm3",
                     "mistral4", "plamo2", "plamo3", "plm", "step35", "talkie", "mamba", "mamba2", "rwkv6",
                     "rwkv6qwen2", "rwkv7", "arwkv7", "wavtokenizer-dec", "clip"});
}

// Architectures whose graph asserts that rope turns whole heads
// (GGML_ASSERT(n_embd_head == n_rot)).
bool graph_needs_full_rope(const std::string &arch) {
    return in(arch, {"apertus", "arcee", "arctic", "baichuan", "chameleon", "codeshell", "cogvlm", "cohere2moe",
                     "dbrx", "deci", "deepseek", "dots1", "dream", "ernie4_5", "ernie4_5-moe", "exaone", "exaone-moe",
                     "exaone4", "falcon", "granite", "granite_swa", "graniteswitch", "grok", "grovemoe", "hunyuan-moe",
                     "hunyuan_vl", "hy_v3", "internlm2", "jais2", "llada", "llada-moe", "llama", "llama4", "maincoder",
                     "mellum", "minimax-01", "minimax-m2", "mistral3", "nemotron", "olmo", "olmo2", "olmoe", "orion",
                     "paddleocr", "pangu-embedded", "plamo", "pockettts", "qwen2", "qwen2moe", "qwen2vl", "qwen3",
                     "qwen3moe", "qwen3vl", "qwen3vlmoe", "rnd1", "seed_oss", "smallthinker", "smollm3", "starcoder2",
                     "talkie", "xverse"});
}

// Head sizes as the graph builders see them (llama-model.cpp's defaults).
Finding check_head_sizes(const Meta &meta, const std::string &arch) {
    const std::string a = arch + ".";
    uint32_t n_layer = 0, n_embd = 0;
    if (!meta.u32(a + "block_count", n_layer) || !meta.u32(a + "embedding_length", n_embd)) return {};
    const std::vector<uint32_t> n_head = meta.per_layer(a + "attention.head_count", n_layer);
    if (n_head.empty() || n_head[0] == 0) return {};
    uint32_t head_k = n_embd / n_head[0], head_v = n_embd / n_head[0];
    const bool has_k = meta.u32(a + "attention.key_length", head_k);
    const bool has_v = meta.u32(a + "attention.value_length", head_v);
    uint32_t n_rot = head_k;
    const bool has_rot = meta.u32(a + "rope.dimension_count", n_rot);
    const std::string k_key = has_k ? a + "attention.key_length" : a + "embedding_length / " + a + "attention.head_count";
    const std::string v_key = has_v ? a + "attention.value_length" : a + "embedding_length / " + a + "attention.head_count";
    if (!graph_allows_kv_heads_to_differ(arch) && head_k != head_v) {
        return invalid(v_key + " is " + std::to_string(head_v) + " but " + k_key + " is " + std::to_string(head_k) +
                       ": llama.cpp's '" + arch + "' graph needs keys and values of the same head size");
    }
    if (graph_needs_full_rope(arch) && has_rot && n_rot != head_k) {
        return invalid(a + "rope.dimension_count is " + std::to_string(n_rot) + " but " + k_key + " is " +
                       std::to_string(head_k) + ": llama.cpp's '" + arch +
                       "' graph rotates whole heads, so they must be equal");
    }
    return {};
}

// Layers with attention must have heads (a head count of 0 means "no
// attention" to llama.cpp, which then divides by it or builds empty views).
Finding check_heads(const Meta &meta, const std::string &arch) {
    const std::string a = arch + ".";
    uint32_t n_layer = 0;
    if (!meta.u32(a + "block_count", n_layer)) return {};
    const std::vector<uint32_t> n_head = meta.per_layer(a + "attention.head_count", n_layer);
    std::vector<uint32_t> n_head_kv = meta.per_layer(a + "attention.head_count_kv", n_layer);
    if (n_head_kv.empty()) n_head_kv = n_head;
    if (n_head.empty()) return {};
    const gguf_context *g = meta.ctx();
    for (uint32_t il = 0; il < n_layer; ++il) {
        const std::string blk = "blk." + std::to_string(il) + ".";
        if (n_head[il] == 0 && (gguf_find_tensor(g, (blk + "attn_q.weight").c_str()) >= 0 ||
                                gguf_find_tensor(g, (blk + "attn_qkv.weight").c_str()) >= 0)) {
            return invalid(a + "attention.head_count is 0 for layer " + std::to_string(il) +
                           ", which has attention weights (" + blk + "attn_q)");
        }
        if (n_head_kv[il] == 0 && n_head[il] > 0 && gguf_find_tensor(g, (blk + "attn_k.weight").c_str()) >= 0) {
            return invalid(a + "attention.head_count_kv is 0 for layer " + std::to_string(il) +
                           ", which has key weights (" + blk + "attn_k)");
        }
        // grouped-query attention: each key/value head serves a whole number
        // of query heads (ggml's matrix product broadcasts by a multiple only)
        if (n_head_kv[il] > 0 && n_head[il] % n_head_kv[il] != 0) {
            return invalid(a + "attention.head_count is " + std::to_string(n_head[il]) + " and " + a +
                           "attention.head_count_kv is " + std::to_string(n_head_kv[il]) + " for layer " +
                           std::to_string(il) + ": the query heads must be a multiple of the key/value heads");
        }
    }
    return {};
}

// ------------------------------------------------------------ vocabulary

// What src/llama-vocab.cpp asserts on: a vocabulary llama.cpp cannot
// tokenize with, and token texts that collide in its text -> id map.
Finding check_vocab(const Meta &meta) {
    const gguf_context *g = meta.ctx();
    std::string model;
    if (!meta.str("tokenizer.ggml.model", model)) return {}; // absent or mistyped: llama.cpp refuses it
    if (model == "none" || model == "no_vocab") {
        return unsupported("tokenizer.ggml.model is " + quoted(model) +
                           ": the model has no vocabulary, so it cannot turn text into tokens");
    }
    const int64_t id = meta.find("tokenizer.ggml.tokens");
    if (id < 0 || gguf_get_kv_type(g, id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, id) != GGUF_TYPE_STRING) {
        return {}; // llama.cpp refuses it
    }
    const size_t n = gguf_get_arr_n(g, id);
    if (n == 0) return invalid("tokenizer.ggml.tokens is empty: the model has no tokens");
    if (n > static_cast<size_t>(INT32_MAX)) {
        return invalid("tokenizer.ggml.tokens has " + std::to_string(n) + " tokens, more than a token id can count");
    }

    // Token types, as llama.cpp maps them (tokenizer.ggml.token_type).
    const int32_t *types = nullptr;
    const int64_t tid = meta.find("tokenizer.ggml.token_type");
    if (tid >= 0 && gguf_get_kv_type(g, tid) == GGUF_TYPE_ARRAY && gguf_get_arr_type(g, tid) == GGUF_TYPE_INT32 &&
        gguf_get_arr_n(g, tid) >= n) {
        types = static_cast<const int32_t *>(gguf_get_arr_data(g, tid));
    }
    const int32_t kByte = 6; // LLAMA_TOKEN_TYPE_BYTE
    if (model == "bert" && types) {
        // a WPM vocabulary has no byte tokens: llama.cpp aborts on rendering one
        for (size_t i = 0; i < n; ++i) {
            if (types[i] == kByte) {
                return invalid("token " + std::to_string(i) + " " + quoted(gguf_get_arr_str(g, id, i)) +
                               " has type BYTE (tokenizer.ggml.token_type), which a 'bert' (WordPiece) vocabulary "
                               "cannot have");
            }
        }
    }

    // Every token's text must be unique, as llama.cpp reads it: up to the
    // first NUL byte, an empty text becoming "[EMPTY_<id>]".
    std::unordered_map<std::string, size_t> seen;
    seen.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
        std::string text = gguf_get_arr_str(g, id, i);
        if (text.empty()) text = "[EMPTY_" + std::to_string(i) + "]";
        auto ins = seen.emplace(text, i);
        if (!ins.second) {
            return invalid("tokenizer.ggml.tokens has the same text " + quoted(text) + " for token " +
                           std::to_string(ins.first->second) + " and token " + std::to_string(i) +
                           " (after llama.cpp's reading: up to a NUL byte, empty as [EMPTY_<id>]); "
                           "every token must be distinct");
        }
    }
    return {};
}

// ------------------------------------------------------------ tensors

// ggml types the CPU backend can multiply a matrix of (a vec_dot in
// ggml-cpu's type traits): integer types, F64 and the dot-product-only
// Q8_1 / Q8_K have none, and a matrix product over them crashes.
bool cpu_matmul_type(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q8_1:
        case GGML_TYPE_Q8_K:
        case GGML_TYPE_I8:
        case GGML_TYPE_I16:
        case GGML_TYPE_I32:
        case GGML_TYPE_I64:
        case GGML_TYPE_F64:
            return false;
        default:
            return true;
    }
}

// The part of a tensor name that says what it is: "attn_norm" for
// "blk.3.attn_norm.weight".
std::string tensor_kind(const std::string &name) {
    std::string s = name;
    if (s.compare(0, 4, "blk.") == 0 || s.compare(0, 8, "enc.blk.") == 0 || s.compare(0, 8, "dec.blk.") == 0) {
        size_t p = s.find("blk.") + 4;
        p = s.find('.', p);
        s = p == std::string::npos ? "" : s.substr(p + 1);
    }
    for (const char *suffix : {".weight", ".bias"}) {
        if (ends_with(s, suffix)) s.resize(s.size() - std::strlen(suffix));
    }
    return s;
}

// Tensors llama.cpp uses in an element-wise op (a norm's or a bias's MUL /
// ADD, a scale, an SSM or RWKV state op, rope factors) rather than in a
// matrix product: ggml's CPU ops take these in F32 only (the binary ops
// abort on an F16 or quantized second operand). GGUF converters store them
// in F32.
bool must_be_f32(const std::string &name, const int64_t *ne) {
    const std::string kind = tensor_kind(name);
    if (ends_with(name, ".bias")) return true;
    for (const char *part : {"norm", "scale", "lerp", "gamma"}) {
        if (kind.find(part) != std::string::npos) return true;
    }
    static const char *const elementwise[] = {
        "ssm_a", "ssm_d", "ssm_conv1d", "time_mix_first", "time_mix_decay", "time_mix_w0", "time_mix_a0",
        "time_mix_v0", "time_mix_k_k", "time_mix_k_a", "time_mix_r_k", "time_mix_ln", "attn_sinks", "rope_freqs",
        "rope_factors_long", "rope_factors_short", "exp_probs_b", "shortconv.conv", "ple_conv1d"};
    for (const char *k : elementwise) {
        if (kind == k) return true;
    }
    // any other vector (one dimension) but a classifier's head
    const bool vector = ne[1] == 1 && ne[2] == 1 && ne[3] == 1;
    return vector && name.compare(0, 3, "cls") != 0;
}

Finding check_tensors(const gguf_context *g) {
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        const std::string name = gguf_get_tensor_name(g, i);
        const ggml_type type = gguf_get_tensor_type(g, i);
        const int64_t *ne = gguf_get_tensor_ne(g, i);
        const std::string type_name = upper(ggml_type_name(type));
        if (name == "d2t") {
            if (type != GGML_TYPE_I64) {
                return invalid("tensor d2t is " + type_name + ", but llama.cpp reads it as I64 (token ids)");
            }
            continue;
        }
        if (must_be_f32(name, ne)) {
            if (type != GGML_TYPE_F32) {
                return invalid("tensor " + name + " is stored as " + type_name +
                               ", but llama.cpp applies it element-wise, which needs F32 (GGUF writers store norms, "
                               "biases and other vectors as F32)");
            }
        } else if (!cpu_matmul_type(type)) {
            return invalid("tensor " + name + " is stored as " + type_name +
                           ", a type ggml cannot multiply matrices of (it must be a float or quantized type)");
        }
    }
    return {};
}

// ------------------------------------------------------------ the file

// The first problem with an opened GGUF file, if any.
Finding check_contents(const gguf_context *g) {
    Meta meta(g);
    std::string arch;
    if (!meta.str("general.architecture", arch)) return {}; // absent: refused by the caller; mistyped: llama.cpp
    if (Finding f = check_hparams(meta, arch)) return f;
    if (Finding f = check_heads(meta, arch)) return f;
    if (Finding f = check_head_sizes(meta, arch)) return f;
    if (Finding f = check_vocab(meta)) return f;
    if (Finding f = check_tensors(g)) return f;
    return {};
}

} // namespace

llmodel_status check_model_file(const char *path, ModelFileFacts *facts) {
    struct stat st;
    if (stat(path, &st) != 0) {
        return fail(LLMODEL_ERR_FILE_NOT_FOUND, std::string("model file not found: ") + path);
    }
    if (S_ISDIR(st.st_mode)) {
        return fail(LLMODEL_ERR_INVALID_FILE, std::string("model path is a directory, not a file: ") + path);
    }
    if (st.st_size == 0) {
        return fail(LLMODEL_ERR_INVALID_FILE, std::string("model file is empty: ") + path);
    }
    char magic[4] = {0, 0, 0, 0};
    {
        std::ifstream f(path, std::ios::binary);
        if (!f) return fail(LLMODEL_ERR_INVALID_FILE, std::string("cannot read model file: ") + path);
        f.read(magic, 4);
        if (f.gcount() < 4 || std::memcmp(magic, "GGUF", 4) != 0) {
            std::string what = "not a GGUF model file (it does not start with the GGUF magic)";
            if (f.gcount() >= 4 && std::memcmp(magic, "lmgg", 4) == 0) {
                what = "an old GGML model file, no longer supported: convert it to GGUF";
            }
            return fail(LLMODEL_ERR_INVALID_FILE, what + ": " + path);
        }
    }
    LogCapture capture;
    gguf_init_params gp = {/*no_alloc=*/true, /*ctx=*/nullptr};
    gguf_context *g = gguf_init_from_file(path, gp);
    if (!g) {
        std::string why = last_lines(capture.text());
        return fail(LLMODEL_ERR_INVALID_FILE, std::string("corrupt or truncated GGUF file: ") + path +
                                                  (why.empty() ? "" : " (" + why + ")"));
    }
    struct Free {
        gguf_context *g;
        ~Free() { gguf_free(g); }
    } free_g{g};
    uint64_t needed = gguf_get_data_offset(g);
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        needed = std::max<uint64_t>(needed, gguf_get_data_offset(g) + gguf_get_tensor_offset(g, i) +
                                                gguf_get_tensor_size(g, i));
    }
    if (static_cast<uint64_t>(st.st_size) < needed) {
        return fail(LLMODEL_ERR_INVALID_FILE, "truncated GGUF file: " + std::string(path) + " has " +
                                                  std::to_string(st.st_size) + " bytes but its tensors need " +
                                                  std::to_string(needed) + " (an incomplete download?)");
    }
    if (facts) {
        // llama.cpp maps the file and hands ggml a buffer starting at the
        // first tensor of each kind of buffer: ggml asserts that it is
        // aligned (a GGUF file with a general.alignment under 32 is not)
        const size_t align = ggml_backend_buft_get_alignment(ggml_backend_cpu_buffer_type());
        facts->mmap_aligned = gguf_get_data_offset(g) % align == 0;
        for (int64_t i = 0; facts->mmap_aligned && i < gguf_get_n_tensors(g); ++i) {
            facts->mmap_aligned = gguf_get_tensor_offset(g, i) % align == 0;
        }
    }
    if (gguf_find_key(g, "general.architecture") < 0) {
        return fail(LLMODEL_ERR_UNSUPPORTED,
                    std::string("GGUF file has no general.architecture, so it is not a model llama.cpp can run: ") +
                        path);
    }
    if (Finding f = check_contents(g)) {
        return fail(f.status, std::string(f.status == LLMODEL_ERR_UNSUPPORTED ? "unsupported" : "invalid") +
                                  " model file " + path + ": " + f.what);
    }
    return LLMODEL_OK;
}

} // namespace llmodel
