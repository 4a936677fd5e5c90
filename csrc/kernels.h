// kernels.h — the table of hot functions every ISA provides (scalar is the reference body of each).
// Contract: one table per ISA, chosen once in dispatch.cpp. Kernels are pure: no threads, no allocation,
// no exceptions; the loops over rows, tiles and threads live in ops.cpp, once for all ISAs.
#pragma once

#include <cstdint>

namespace l32 {

// Up to MAX_NT activation rows share one pass over a weight row (the weight is decoded once for all).
constexpr int MAX_NT = 4;

// Prefill GEMM on weight *panels*: PANEL_ROWS rows of a quantized matrix repacked (ops.cpp, pack_panel) so that
// one 64-byte load holds 4 consecutive codes of each of the 16 rows. Per block b the panel has 8 groups of 64
// bytes; group g holds codes k = 4g..4g+3 of row 0, then of row 1, ..., row 15 (unsigned, +offset as in the
// row formats); dw[b * 16 + r] is row r's f32 block scale. A VNNI dot of a group with a broadcast dword of one
// activation row then adds 4 products into each row's lane: a whole block accumulates in int32 before its
// scales are applied once.
constexpr int PANEL_ROWS = 16;
constexpr int GEMM_NT = 8;  // activation rows per gemm_panel call

// Activation rows for the dot kernels: row t starts at q + t*q_stride (int8 quants, or float/f32 values),
// its block scales at d + t*b_stride and block sums (d * sum of quants) at s + t*b_stride.
struct ActRows {
    const void* q;
    const float* d;
    const float* s;
    int64_t q_stride;
    int64_t b_stride;
};

struct KernelTable {
    const char* name;

    // out[t * out_stride] = dot(weight row, activation row t) for t < nt (nt <= MAX_NT); n = row length.
    void (*dot_f32)(int64_t n, const float* w, const ActRows& x, int nt, float* out, int64_t out_stride);
    void (*dot_bf16)(int64_t n, const uint16_t* w, const ActRows& x, int nt, float* out, int64_t out_stride);
    // Quantized rows: wq = the row's codes (q8_0: q+128 per byte; q4_0: 16 nibble bytes per block),
    // wd = the row's f16 block scales; x holds int8 activation blocks.
    void (*dot_q8_0)(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, int nt, float* out,
                     int64_t out_stride);
    void (*dot_q4_0)(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, int nt, float* out,
                     int64_t out_stride);

    // y[t * ldy + r] = sum_b dw[r,b] * (dx[t,b] * sum_k code[r,b,k] * xq[t,b,k] - offset * s[t,b]) for r < rows
    // (<= PANEL_ROWS), t < nt (<= GEMM_NT); nb blocks. nullptr in a table: matmul then uses the dot kernels.
    void (*gemm_panel)(int64_t nb, const uint8_t* panel, const float* dw, float offset, const ActRows& x, int nt,
                       int rows, float* y, int64_t ldy);

    // Causal attention of nq query vectors (contiguous, hd each) over keys 0..limit[u]-1 of one KV head, with K
    // transposed (kt: hd rows of ldk) and V as [keys][hd], both f32; s: nq * lds scratch (kernels/attention_tile.h).
    void (*attn_tile)(int64_t nq, int64_t hd, const float* q, const int32_t* limit, const float* kt, int64_t ldk,
                      const float* v, float* s, int64_t lds, float scale, float* out);

    // One activation row to int8 blocks: d = amax/127, q = rint(x/d), s = d * sum(q). Bit-exact across ISAs.
    void (*quantize_act)(int64_t n, const float* x, int8_t* q, float* d, float* s);

    // Attention helpers over the KV cache (f32 or f16 rows).
    float (*dot_f32_f32)(int64_t n, const float* a, const float* b);
    float (*dot_f32_f16)(int64_t n, const float* a, const uint16_t* b);
    void (*axpy_f32)(int64_t n, float a, const float* x, float* y);  // y += a*x
    void (*axpy_f16)(int64_t n, float a, const uint16_t* x, float* y);
    void (*f32_to_f16)(int64_t n, const float* x, uint16_t* y);
};

namespace scalar { extern const KernelTable table; }
#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 { extern const KernelTable table; }
namespace avx512 { extern const KernelTable table; }
#endif
#if defined(__aarch64__)
namespace neon { extern const KernelTable table; }
#endif

}  // namespace l32
