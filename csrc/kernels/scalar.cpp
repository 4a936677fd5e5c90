// kernels/scalar.cpp — the reference body of every kernel: plain C++, no SIMD, any CPU.
// Contract: SIMD tables must agree with these (quantize_act bit-exactly, dots to rounding).
#include <cmath>

#include "../common.h"
#include "../formats.h"
#include "../kernels.h"
#include "attention_tile.h"
#include "elementwise.h"

namespace l32 {
namespace scalar {

static void dot_f32(int64_t n, const float* w, const ActRows& x, int nt, float* out, int64_t os) {
    for (int t = 0; t < nt; ++t) {
        const float* xr = f_row(x, t);
        float acc = 0.0f;
        for (int64_t i = 0; i < n; ++i) acc += w[i] * xr[i];
        out[t * os] = acc;
    }
}

static void dot_bf16(int64_t n, const uint16_t* w, const ActRows& x, int nt, float* out, int64_t os) {
    for (int t = 0; t < nt; ++t) {
        const float* xr = f_row(x, t);
        float acc = 0.0f;
        for (int64_t i = 0; i < n; ++i) acc += bf16_to_f32(w[i]) * xr[i];
        out[t * os] = acc;
    }
}

template <bool Q4>
static void gemm_q(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt, int rows,
                   float* y, int64_t ldy) {
    const size_t block_bytes = size_t(panel_block_bytes(Q4));
    for (int t = 0; t < nt; ++t) {
        const int8_t* xq = q_row(x, t);
        const float* xd = d_row(x, t);
        for (int r = 0; r < rows; ++r) {
            const int64_t p = r / PANEL_ROWS, rr = r % PANEL_ROWS;  // the panel of row r, its row there
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t* blk = codes + size_t(p * nb + b) * block_bytes;
                int32_t dot = 0;
                for (int k = 0; k < QK; ++k) dot += (Q4 ? panel_q4_value(blk, int(rr), k) : panel_q8_value(blk, int(rr), k)) * xq[b * QK + k];
                acc += f16_to_f32(scales[(p * nb + b) * PANEL_ROWS + rr]) * xd[b] * float(dot);
            }
            y[t * ldy + r] = acc;
        }
    }
}

// Q4_1 / IQ4_NL panels: the bit-exact spec of kernels.h (std::fma: one rounding, as the SIMD fmadd).
template <WType F>
static void gemm_q4x(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt, int rows,
                     float* y, int64_t ldy) {
    constexpr int planes = scale_planes(F);
    for (int t = 0; t < nt; ++t) {
        const int8_t* xq = q_row(x, t);
        const float* xd = d_row(x, t);
        const float* xs = s_row(x, t);
        for (int r = 0; r < rows; ++r) {
            const int64_t p = r / PANEL_ROWS, rr = r % PANEL_ROWS;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; ++b) {
                const uint8_t* blk = codes + size_t(p * nb + b) * size_t(panel_block_bytes(true));
                const uint16_t* sb = scales + (p * nb + b) * PANEL_ROWS * planes;
                int32_t dot = 0;
                for (int k = 0; k < QK; ++k)
                    dot += (F == WType::Q4_1 ? panel_nibble(blk, int(rr), k) : panel_iq4_value(blk, int(rr), k)) * xq[b * QK + k];
                const float v = float(dot) * xd[b];
                acc = std::fma(f16_to_f32(sb[rr]), v, acc);
                if (F == WType::Q4_1) acc = std::fma(f16_to_f32(sb[PANEL_ROWS + rr]), xs[b], acc);
            }
            y[t * ldy + r] = acc;
        }
    }
}

static void quantize_act(int64_t n, const float* x, int8_t* q, float* d, float* s) {
    for (int64_t b = 0; b < n / 32; ++b) {
        const float* xb = x + b * 32;
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < 32; ++j) {
            const int v = int(std::nearbyint(xb[j] * id));
            q[b * 32 + j] = int8_t(v);
            sum += v;
        }
        d[b] = db;
        s[b] = db * float(sum);
    }
}

static void f16_row(int64_t n, const uint16_t* x, float* y) {
    for (int64_t i = 0; i < n; ++i) y[i] = f16_to_f32(x[i]);
}

static void to_f16(int64_t n, const float* x, uint16_t* y) {
    for (int64_t i = 0; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

template <typename W, float (*Widen)(W)>
static void gemm_float(int64_t n, const W* w, int64_t wstride, int rows, const ActRows& x, int nt, float* y,
                       int64_t ldy) {
    for (int t = 0; t < nt; ++t) {
        const float* xr = f_row(x, t);
        for (int r = 0; r < rows; ++r) {
            float acc = 0.0f;
            for (int64_t i = 0; i < n; ++i) acc += Widen(w[r * wstride + i]) * xr[i];
            y[t * ldy + r] = acc;
        }
    }
}

static float widen_f32(float v) { return v; }

static void gemm_f32(int64_t n, const float* w, int64_t wstride, int rows, const ActRows& x, int nt, float* y,
                     int64_t ldy) {
    gemm_float<float, widen_f32>(n, w, wstride, rows, x, nt, y, ldy);
}

static void gemm_bf16(int64_t n, const uint16_t* w, int64_t wstride, int rows, const ActRows& x, int nt, float* y,
                      int64_t ldy) {
    gemm_float<uint16_t, bf16_to_f32>(n, w, wstride, rows, x, nt, y, ldy);
}

// The table, filled by field name (kernels.h: every entry required but gemm_f32/gemm_bf16).
static constexpr KernelTable make_table() {
    KernelTable t;
    t.name = "scalar";
    t.dot_f32 = dot_f32;
    t.dot_bf16 = dot_bf16;
    t.gemm_q8_0 = gemm_q<false>;
    t.gemm_q4_0 = gemm_q<true>;
    t.gemm_q4_1 = gemm_q4x<WType::Q4_1>;
    t.gemm_iq4_nl = gemm_q4x<WType::IQ4_NL>;
    t.gemm_f32 = gemm_f32;
    t.gemm_bf16 = gemm_bf16;
    t.kv_to_f32 = kv_to_f32_body<f16_row>;
    t.attn_block = attn_block_body;
    t.quantize_act = quantize_act;
    t.f32_to_f16 = to_f16;
    t.silu_mul = silu_mul_body;
    return t;
}

constexpr KernelTable table = make_table();  // built at compile time; external linkage from kernels.h

}  // namespace scalar
}  // namespace l32
