// model.h — Config, Weights, KV cache and the one forward entry over a batch of (sequence, position, token).
// Contract: every tensor is validated when it is set; forward validates its batch before computing and
// throws Error (bad input) or whatever the interrupt check throws; it never aborts.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "formats.h"
#include "kernels.h"
#include "ops.h"

namespace l32 {

struct Config {
    int64_t n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0;
    float rms_eps = 1e-5f;
    std::vector<float> rope_inv_freq;  // [head_dim/2] per-pair angular frequencies (llama3 scaling applied)
    bool tie_word_embeddings = true;
    int64_t q_dim() const { return n_head * head_dim; }
    int64_t kv_dim() const { return n_head_kv * head_dim; }
    void validate() const;
};

struct Layer {
    std::vector<float> attn_norm, ffn_norm;  // [n_embd]
    Matrix wq;       // [n_head*head_dim, n_embd]   q rows in half-split RoPE layout
    Matrix wk;       // [n_head_kv*head_dim, n_embd] k rows in half-split RoPE layout
    Matrix wv;       // [n_head_kv*head_dim, n_embd]
    Matrix wo;       // [n_embd, n_head*head_dim]
    Matrix w_gate;   // [n_ff, n_embd]
    Matrix w_up;     // [n_ff, n_embd]
    Matrix w_down;   // [n_embd, n_ff]
};

struct Weights {
    Matrix tok_embd;                 // [n_vocab, n_embd]
    Matrix output;                   // [n_vocab, n_embd], empty when tied to tok_embd
    std::vector<float> output_norm;  // [n_embd]
    std::vector<Layer> layers;
};

// The tensor schema: every tensor of a model of config c by its GGUF name (tok_embd, output_norm, output when the
// embeddings are untied, then blk.N.attn_norm, blk.N.attn_q, ..., blk.N.ffn_down), in GGUF's order. model.cpp writes
// the list once; set_tensor(), finalize(), matrix()/vector() and the binding's tensor_specs() all read it.
enum class TensorKind { Matrix, Vector };
struct TensorSpec {
    std::string name;
    std::vector<int64_t> shape;  // [rows, cols] (PyTorch [out, in]) for a matrix, [n] for a vector (kept in f32)
    TensorKind kind = TensorKind::Matrix;
};
std::vector<TensorSpec> tensor_specs(const Config& c);  // c must be valid (Config::validate)

// Keys (after RoPE) and values: one stream per (layer, sequence, KV head) in the KVLayout of ops.h, room for
// n_ctx positions rounded up to whole K tiles.
struct KVCache {
    KVLayout layout;
    int64_t n_layer = 0, n_seq = 0, n_head_kv = 0, n_ctx = 0;
    AlignedBuffer k, v;
    int64_t capacity() const { return (n_ctx + KV_TILE - 1) / KV_TILE * KV_TILE; }
    size_t stream(int64_t layer, int64_t seq, int64_t head) const {
        return (size_t(layer) * size_t(n_seq) + size_t(seq)) * size_t(n_head_kv) + size_t(head);
    }
    uint8_t* ktiles(int64_t layer, int64_t seq, int64_t head) {
        return k.as<uint8_t>() + stream(layer, seq, head) * size_t(capacity() / KV_TILE) * layout.k_tile_bytes();
    }
    uint8_t* vrows(int64_t layer, int64_t seq, int64_t head) {
        return v.as<uint8_t>() + stream(layer, seq, head) * size_t(capacity()) * layout.v_row_bytes();
    }
};

// Activation buffers, grown on demand and reused across calls.
struct RunState {
    AlignedBuffer x, xb, q, k, v, att, hb, hb2, logits, rope_cs, scratch;  // see forward() and attention()
};

// Converts a [rows, cols] source (f32/f16/bf16 elements or plain q8_0/q4_0 blocks) into an in-memory matrix of
// type `target`, quantizing (reference quantizers) or storing blocks into panels, rows in parallel.
void convert_matrix(Matrix& m, int64_t rows, int64_t cols, WType src, const void* data, WType target, int n_threads);

class Engine {
public:
    Engine(Config cfg, int64_t n_ctx, int64_t n_seq, WType kv_type, int n_threads);

    // Sets one tensor from caller memory (not retained). src_type: f32, f16, bf16 (elements) or q8_0, q4_0
    // (plain ggml blocks); target: the in-memory type (matrices only; vectors are kept in f32).
    void set_tensor(const std::string& name, WType src_type, const void* data, const std::vector<int64_t>& shape,
                    WType target);
    // Checks that every tensor of the schema is present; after this, forward may run.
    void finalize();

    // One batched pass: row i is token tokens[i] at position pos[i] of sequence seq[i]. Writes K/V of every row
    // to the cache, attends causally, and returns logits [n_out, n_vocab] for the rows listed in out_rows.
    void forward(const int32_t* tokens, const int32_t* pos, const int32_t* seq, int64_t n, const int32_t* out_rows,
                 int64_t n_out, float* logits);

    // Called between layers from the calling thread; may throw to interrupt (Ctrl-C).
    std::function<void()> interrupt_check;

    const Config& config() const { return cfg_; }
    int64_t n_ctx() const { return kv_.n_ctx; }
    int n_threads() const { return n_threads_; }
    void set_threads(int n);
    const KernelTable& kernels() const { return *k_; }
    // The schema of this engine's model (tensor_specs(config())); spec(name) is nullptr for a name not in it.
    std::vector<TensorSpec> tensor_specs() const;
    const TensorSpec* spec(const std::string& name) const;
    // The in-memory matrix / vector behind a tensor name that has been set (for saving and inspection).
    const Matrix& matrix(const std::string& name) const;
    const std::vector<float>& vector(const std::string& name) const;
    size_t weight_bytes() const;
    size_t kv_bytes() const { return kv_.k.bytes + kv_.v.bytes; }
    std::mutex& mutex() { return mu_; }

private:
    // One tensor of the schema and where it lives in w_ (exactly one of matrix / vector is set).
    struct TensorSlot {
        TensorSpec spec;
        Matrix* matrix = nullptr;
        std::vector<float>* vector = nullptr;
        bool set = false;
    };
    const TensorSlot* slot(const std::string& name) const;  // nullptr for a name not in the schema
    void attention(int64_t layer, const int32_t* pos, const int32_t* seq, int64_t n);

    Config cfg_;
    Weights w_;
    KVCache kv_;
    RunState st_;
    const KernelTable* k_;
    int n_threads_;
    std::vector<TensorSlot> slots_;
    std::map<std::string, size_t> slot_index_;
    bool ready_ = false;
    std::mutex mu_;
};

}  // namespace l32
