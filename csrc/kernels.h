// kernels.h — the table of hot functions every ISA provides (scalar is the reference body of each).
// Contract: one table per ISA, chosen once in dispatch.cpp. Kernels are pure: no threads, no allocation,
// no exceptions; the loops over rows, tiles and threads live in ops.cpp, once for all ISAs.
#pragma once

#include <cstdint>
#include <vector>

#include "formats.h"

namespace l32 {

// Float weights: up to MAX_NT activation rows share one pass over a weight row (the dot kernels).
constexpr int MAX_NT = 4;

// A quantized GEMM call covers up to GEMM_ROWS weight rows (one or two consecutive panels) x GEMM_NT activation rows.
constexpr int GEMM_ROWS = 2 * PANEL_ROWS;
constexpr int GEMM_NT = 8;

// Float weights (f32/bf16) with 8+ activation rows: FGEMM_ROWS weight rows x FGEMM_NT activation rows per call, the
// accumulators of the whole tile in registers, so one load of a weight vector feeds FGEMM_NT FMAs.
constexpr int FGEMM_ROWS = 4;
constexpr int FGEMM_NT = 6;

// Attention reads the KV cache in blocks of ATT_KEYS keys; keys are stored in tiles of KV_TILE positions.
constexpr int KV_TILE = 16;
constexpr int ATT_KEYS = 128;

// Activation rows for the kernels: row t of the values starts at f + t*stride (float rows: dot_*, gemm_f32/bf16)
// or q + t*stride (int8 quants: gemm_q8_0/q4_0), its block scales at d + t*b_stride and block sums (d * sum of
// quants) at s + t*b_stride. A float view has f set and q, d, s null; a quantized view the reverse.
// No member functions: an inline member has external linkage, and the linker could then call a copy compiled
// with AVX-512 flags from baseline code (common.h). The helpers below are `static inline` instead.
struct ActRows {
    const float* f = nullptr;
    const int8_t* q = nullptr;
    const float* d = nullptr;
    const float* s = nullptr;
    int64_t stride = 0;    // elements from one row of f or q to the next
    int64_t b_stride = 0;  // blocks from one row of d or s to the next
};

static inline ActRows float_rows(const float* f, int64_t stride) {
    ActRows a;
    a.f = f;
    a.stride = stride;
    return a;
}
static inline ActRows quant_rows(const int8_t* q, const float* d, const float* s, int64_t stride, int64_t b_stride) {
    ActRows a;
    a.q = q;
    a.d = d;
    a.s = s;
    a.stride = stride;
    a.b_stride = b_stride;
    return a;
}
// Row t of the float values, int8 quants, block scales, block sums.
static inline const float* f_row(const ActRows& x, int64_t t) { return x.f + t * x.stride; }
static inline const int8_t* q_row(const ActRows& x, int64_t t) { return x.q + t * x.stride; }
static inline const float* d_row(const ActRows& x, int64_t t) { return x.d + t * x.b_stride; }
static inline const float* s_row(const ActRows& x, int64_t t) { return x.s + t * x.b_stride; }
// The same view from row t on.
static inline ActRows rows_from(const ActRows& x, int64_t t) {
    return x.f ? float_rows(f_row(x, t), x.stride) : quant_rows(q_row(x, t), d_row(x, t), s_row(x, t), x.stride, x.b_stride);
}

// Tables are filled by field name (see the make_table() of each kernels/*.cpp) and checked when dispatch.cpp hands
// one out: every entry is required except gemm_f32 and gemm_bf16, whose nullptr means "use the dot kernels".
struct KernelTable {
    const char* name = nullptr;

    // out[t * out_stride] = dot(weight row, activation row t) for t < nt (nt <= MAX_NT); n = row length.
    void (*dot_f32)(int64_t n, const float* w, const ActRows& x, int nt, float* out, int64_t out_stride) = nullptr;
    void (*dot_bf16)(int64_t n, const uint16_t* w, const ActRows& x, int nt, float* out, int64_t out_stride) = nullptr;
    // Consecutive panels of a Q8_0/Q4_0 matrix (layout: formats.h) against int8 activation blocks:
    // y[t * ldy + r] = sum_b dw[r,b] * dx[t,b] * sum_k q[r,b,k] * xq[t,b,k] for rows r < rows (<= GEMM_ROWS) and
    // activation rows t < nt (<= GEMM_NT); q is the signed value (code - 128, or nibble - 8). codes and scales
    // point at the first panel's first block (nb blocks a panel). The same call is decode's GEMV (nt = 1) and
    // prefill's GEMM.
    void (*gemm_q8_0)(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt, int rows,
                      float* y, int64_t ldy) = nullptr;
    void (*gemm_q4_0)(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt, int rows,
                      float* y, int64_t ldy) = nullptr;
    // The same for Q4_1 and IQ4_NL panels, bit-exact across ISAs (quant.py's gemm_reference is the spec): per row and
    // block b in order, isum = sum_k q[r,b,k] * xq[t,b,k] (q: the nibble, or IQ4_GRID[nibble]), v = float(isum) * dx
    // (one f32 rounding), acc = fma(dw, v, acc), and for Q4_1 then acc = fma(m, s, acc) with the activation block sum
    // s. Q4_1 scales: 32 a block (16 d, 16 m; formats.h).
    void (*gemm_q4_1)(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt, int rows,
                      float* y, int64_t ldy) = nullptr;
    void (*gemm_iq4_nl)(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt, int rows,
                        float* y, int64_t ldy) = nullptr;

    // y[t * ldy + r] = dot(weight row r, activation row t) for r < rows (<= FGEMM_ROWS), t < nt (<= FGEMM_NT); weight
    // rows are wstride elements apart, activation rows (x.f) x.stride floats apart. bf16 weights are widened
    // exactly: the math is f32 as in dot_bf16. nullptr in a table: matmul then uses the dot kernels.
    void (*gemm_f32)(int64_t n, const float* w, int64_t wstride, int rows, const ActRows& x, int nt, float* y,
                     int64_t ldy) = nullptr;
    void (*gemm_bf16)(int64_t n, const uint16_t* w, int64_t wstride, int rows, const ActRows& x, int nt, float* y,
                      int64_t ldy) = nullptr;

    // One block of keys of the KV cache (layout: model.h) as f32: nk keys (<= ATT_KEYS) starting at a K tile, from
    // the ceil(nk/KV_TILE) K tiles at ktiles into kt (same tiled, transposed layout, f32) and the nk V rows at vrows
    // into v [nk][hd]. kv_type: F32, F16 or Q8_0 (then hd is a multiple of 32).
    void (*kv_to_f32)(int kv_type, int64_t hd, int64_t nk, const uint8_t* ktiles, const uint8_t* vrows, float* kt,
                      float* v) = nullptr;
    // Folds one key block into the running softmax of nq queries (flash-attention style): query u (q + u*hd) sees
    // keys j0 .. min(j0 + nk, limit[u]) - 1 of the block (kt, v as kv_to_f32 writes them); m[u], l[u] are its
    // running max and sum of exp, o[u*hd ..] its unnormalized output. s: scratch of nq * ATT_KEYS floats.
    void (*attn_block)(int64_t nq, int64_t hd, const float* q, const int32_t* limit, int64_t j0, int64_t nk,
                       const float* kt, const float* v, float scale, float* s, float* m, float* l, float* o) = nullptr;

    // One activation row to int8 blocks: d = amax/127, q = rint(x/d), s = d * sum(q). Bit-exact across ISAs.
    void (*quantize_act)(int64_t n, const float* x, int8_t* q, float* d, float* s) = nullptr;

    // f32 -> f16, round to nearest even (KV cache writes).
    void (*f32_to_f16)(int64_t n, const float* x, uint16_t* y) = nullptr;

    // h = silu(g) * u = g / (1 + e^-g) * u, elementwise over n values (the SwiGLU gate); h may alias g or u.
    void (*silu_mul)(int64_t n, const float* g, const float* u, float* h) = nullptr;
};

// The names of the entries of t that are required and unset; empty when t is complete.
std::vector<const char*> missing_kernels(const KernelTable& t);

namespace scalar { extern const KernelTable table; }
#if defined(__x86_64__) || defined(_M_X64)
namespace avx2 { extern const KernelTable table; }
namespace avx512 { extern const KernelTable table; }
#endif
#if defined(__aarch64__)
namespace neon { extern const KernelTable table; }
#endif

}  // namespace l32
