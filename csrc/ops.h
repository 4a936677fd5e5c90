// ops.h — the operators of the forward pass, threaded with OpenMP over the kernels of one KernelTable.
// Contract: shapes are validated by the caller (model.cpp) once; ops only compute.
#pragma once

#include <cstdint>

#include "formats.h"
#include "kernels.h"

namespace l32 {

// The input of one or more matmuls: float rows, plus their int8 blocks when a quantized weight needs them.
// Quantizing once and reusing for every matmul that reads the same input (q/k/v, gate/up) saves work.
struct MatmulInput {
    const float* x = nullptr;  // [T, K]
    int64_t T = 0, K = 0;
    QuantizedActs acts;         // filled by prepare() when quantized weights will read it
    bool quantized = false;

    void prepare(const KernelTable& k, const float* x, int64_t T, int64_t K, bool need_quant, int n_threads);
};

// From this many activation rows on, a matmul with f32/bf16 weights runs as a GEMM in register tiles of
// FGEMM_ROWS x FGEMM_NT (when the ISA has the kernel). Quantized weights always run on their panels (formats.h).
constexpr int64_t GEMM_MIN_ROWS = 8;

// y[t, r] = sum_k W[r, k] * x[t, k]; y has row stride ldy.
void matmul(const KernelTable& k, const Matrix& w, const MatmulInput& in, float* y, int64_t ldy, int n_threads);

// y = x / sqrt(mean(x^2) + eps) * g, per row of n, in f32.
void rmsnorm(const float* x, const float* g, float* y, int64_t rows, int64_t n, float eps, int n_threads);

// Rotate every head of x [T, n_heads*hd] in place, half-split layout: pairs (i, i + hd/2);
// cs holds cos then sin per row: [T, hd] = (cos[hd/2], sin[hd/2]).
void rope(float* x, int64_t T, int64_t n_heads, int64_t hd, const float* cs, int n_threads);

// h = silu(g) * u, elementwise over n values.
void swiglu(const KernelTable& k, const float* g, const float* u, float* h, int64_t n, int n_threads);

// The KV cache of one (layer, sequence, KV head): keys in tiles of KV_TILE positions, each tile its 16 keys
// transposed ([head_dim][16] f32 or f16 values; for q8_0 [head_dim][16] int8 codes, then [head_dim/32][16] f16
// block scales), so that attention reads K^T with unit stride; values one row per position ([head_dim] f32 or
// f16, or head_dim/32 ggml q8_0 blocks).
struct KVLayout {
    WType type = WType::F16;  // F32, F16 or Q8_0 (head_dim a multiple of 32)
    int64_t hd = 0;
    size_t k_tile_bytes() const;
    size_t v_row_bytes() const;
};

// Stores the key and value (f32, key after RoPE) of position pos into a stream's K tiles and V rows.
void kv_store(const KernelTable& k, const KVLayout& kv, int64_t pos, const float* key, const float* value,
              uint8_t* ktiles, uint8_t* vrows);

// out[u] = softmax(q_u . K^T / sqrt(hd)) V over keys 0..limit[u]-1 of one stream, for nq queries q [nq][hd];
// key blocks of ATT_KEYS go through kv_to_f32 and attn_block (online softmax). scratch: attend_scratch_floats.
size_t attend_scratch_floats(int64_t nq, int64_t hd);
void attend(const KernelTable& k, const KVLayout& kv, int64_t nq, const float* q, const int32_t* limit,
            const uint8_t* ktiles, const uint8_t* vrows, float* scratch, float* out);

// One row of embedding table w (any format) as f32.
void embed_row(const Matrix& w, int64_t row, float* out);

}  // namespace l32
