// kernels/neon.cpp — Armv8.2-A NEON kernels with the dot-product extension (sdot).
// Contract: same results as kernels/scalar.cpp (quantize_act bit-exact). Reached only when HWCAP says
// the CPU has asimddp; compiled with -march=armv8.2-a+dotprod in this file alone.
#include <arm_neon.h>

#include <type_traits>

#include "attention_tile.h"
#include "elementwise.h"
#include "shared.h"

namespace l32 {
namespace neon {

template <int NT>
static void dot_f32_nt(int64_t n, const float* w, const ActRows& x, float* out, int64_t os) {
    const float* xr[NT];
    float32x4_t acc[NT];
    for (int t = 0; t < NT; ++t) { xr[t] = f_row(x, t); acc[t] = vdupq_n_f32(0.0f); }
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t wv = vld1q_f32(w + i);
        for (int t = 0; t < NT; ++t) acc[t] = vfmaq_f32(acc[t], wv, vld1q_f32(xr[t] + i));
    }
    for (int t = 0; t < NT; ++t) {
        float r = vaddvq_f32(acc[t]);
        for (int64_t k = i; k < n; ++k) r += w[k] * xr[t][k];
        out[t * os] = r;
    }
}

template <int NT>
static void dot_bf16_nt(int64_t n, const uint16_t* w, const ActRows& x, float* out, int64_t os) {
    const float* xr[NT];
    float32x4_t acc[NT];
    for (int t = 0; t < NT; ++t) { xr[t] = f_row(x, t); acc[t] = vdupq_n_f32(0.0f); }
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t wv = vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(w + i), 16));  // bf16 -> f32
        for (int t = 0; t < NT; ++t) acc[t] = vfmaq_f32(acc[t], wv, vld1q_f32(xr[t] + i));
    }
    for (int t = 0; t < NT; ++t) {
        float r = vaddvq_f32(acc[t]);
        for (int64_t k = i; k < n; ++k) r += bf16_to_f32(w[k]) * xr[t][k];
        out[t * os] = r;
    }
}

// Quantized GEMM on one panel (formats.h) in two passes of 8 rows, up to 4 activation rows at a time. A 16-byte
// load of a group holds 4 codes of each of 4 rows; sdot by lane multiplies them by the 4 activation bytes of that
// group. sdot takes signed x signed bytes: q8_0 codes are flipped back to signed q (no offset), q4_0 nibbles
// 0..15 are used as they are and their +8 goes through the activation block sums.
template <int NT, bool Q4>
static void gemm_q_nt(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int rows, float* y,
                      int64_t ldy) {
    constexpr int64_t BLOCK = panel_block_bytes(Q4);
    const uint8x16_t low4 = vdupq_n_u8(0x0f), flip = vdupq_n_u8(0x80);
    for (int h = 0; h < 2 && 8 * h < rows; ++h) {
        float32x4_t acc[2][NT];
        for (int j = 0; j < 2; ++j)
            for (int t = 0; t < NT; ++t) acc[j][t] = vdupq_n_f32(0.0f);
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* pb = codes + b * BLOCK + 32 * h;
            if (h == 0)
                for (int64_t l = 0; l < BLOCK; l += 64) __builtin_prefetch(pb + 1024 + l);
            int8x16_t x0[NT], x1[NT];  // the block's activations: groups 0-3 and 4-7, one per 32-bit lane
            for (int t = 0; t < NT; ++t) {
                const int8_t* xb = q_row(x, t) + b * QK;
                x0[t] = vld1q_s8(xb);
                x1[t] = vld1q_s8(xb + 16);
            }
            int32x4_t dot[2][NT];
            for (int j = 0; j < 2; ++j)
                for (int t = 0; t < NT; ++t) dot[j][t] = vdupq_n_s32(0);
            // group g's 4 codes x lane g%4 of x0 (g < 4) or x1; rows 8h+4j.. in the j-th 16 bytes
            const auto groups = [&](auto lane, const uint8_t* p_lo, const uint8_t* p_hi) {
                constexpr int L = decltype(lane)::value;
                for (int j = 0; j < 2; ++j) {
                    int8x16_t lo, hi;
                    if (Q4) {
                        const uint8x16_t v = vld1q_u8(p_lo + 16 * j);
                        lo = vreinterpretq_s8_u8(vandq_u8(v, low4));
                        hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
                    } else {
                        lo = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p_lo + 16 * j), flip));
                        hi = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p_hi + 16 * j), flip));
                    }
                    for (int t = 0; t < NT; ++t) {
                        dot[j][t] = vdotq_laneq_s32(dot[j][t], lo, x0[t], L);
                        dot[j][t] = vdotq_laneq_s32(dot[j][t], hi, x1[t], L);
                    }
                }
            };
            groups(std::integral_constant<int, 0>(), pb, pb + 4 * 64);
            groups(std::integral_constant<int, 1>(), pb + 64, pb + 5 * 64);
            groups(std::integral_constant<int, 2>(), pb + 128, pb + 6 * 64);
            groups(std::integral_constant<int, 3>(), pb + 192, pb + 7 * 64);
            for (int j = 0; j < 2; ++j) {
                const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(scales + b * PANEL_ROWS + 8 * h + 4 * j)));
                for (int t = 0; t < NT; ++t) {
                    float32x4_t v = vmulq_n_f32(vcvtq_f32_s32(dot[j][t]), d_row(x, t)[b]);
                    if (Q4) v = vsubq_f32(v, vdupq_n_f32(8.0f * s_row(x, t)[b]));
                    acc[j][t] = vfmaq_f32(acc[j][t], dw, v);
                }
            }
        }
        for (int j = 0; j < 2; ++j)
            for (int t = 0; t < NT; ++t) {
                float out[4];
                vst1q_f32(out, acc[j][t]);
                for (int i = 0; i < 4; ++i)
                    if (8 * h + 4 * j + i < rows) y[t * ldy + 8 * h + 4 * j + i] = out[i];
            }
    }
}

// Q4_1 / IQ4_NL panels (kernels.h: bit-exact with scalar), in the passes of gemm_q_nt. sdot takes the nibbles as
// they are (Q4_1's codes 0..15), or looks the grid up first with vqtbl1q_s8 (IQ4_NL's signed levels).
template <int NT, WType F>
static void gemm_q4x_nt(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int rows, float* y,
                        int64_t ldy) {
    constexpr int64_t BLOCK = panel_block_bytes(true);
    constexpr int64_t SB = PANEL_ROWS * scale_planes(F);
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t grid = vld1q_s8(IQ4_GRID);
    const auto value = [&](uint8x16_t nib) {
        return F == WType::IQ4_NL ? vqtbl1q_s8(grid, nib) : vreinterpretq_s8_u8(nib);
    };
    for (int h = 0; h < 2 && 8 * h < rows; ++h) {
        float32x4_t acc[2][NT];
        for (int j = 0; j < 2; ++j)
            for (int t = 0; t < NT; ++t) acc[j][t] = vdupq_n_f32(0.0f);
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* pb = codes + b * BLOCK + 32 * h;
            if (h == 0)
                for (int64_t l = 0; l < BLOCK; l += 64) __builtin_prefetch(pb + 1024 + l);
            int8x16_t x0[NT], x1[NT];
            for (int t = 0; t < NT; ++t) {
                const int8_t* xb = q_row(x, t) + b * QK;
                x0[t] = vld1q_s8(xb);
                x1[t] = vld1q_s8(xb + 16);
            }
            int32x4_t dot[2][NT];
            for (int j = 0; j < 2; ++j)
                for (int t = 0; t < NT; ++t) dot[j][t] = vdupq_n_s32(0);
            const auto groups = [&](auto lane, const uint8_t* p) {
                constexpr int L = decltype(lane)::value;
                for (int j = 0; j < 2; ++j) {
                    const uint8x16_t v = vld1q_u8(p + 16 * j);
                    const int8x16_t lo = value(vandq_u8(v, low4)), hi = value(vshrq_n_u8(v, 4));
                    for (int t = 0; t < NT; ++t) {
                        dot[j][t] = vdotq_laneq_s32(dot[j][t], lo, x0[t], L);
                        dot[j][t] = vdotq_laneq_s32(dot[j][t], hi, x1[t], L);
                    }
                }
            };
            groups(std::integral_constant<int, 0>(), pb);
            groups(std::integral_constant<int, 1>(), pb + 64);
            groups(std::integral_constant<int, 2>(), pb + 128);
            groups(std::integral_constant<int, 3>(), pb + 192);
            for (int j = 0; j < 2; ++j) {
                const uint16_t* sb = scales + b * SB + 8 * h + 4 * j;
                const float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sb)));
                for (int t = 0; t < NT; ++t) {
                    const float32x4_t v = vmulq_n_f32(vcvtq_f32_s32(dot[j][t]), d_row(x, t)[b]);
                    acc[j][t] = vfmaq_f32(acc[j][t], dw, v);
                    if (F == WType::Q4_1)
                        acc[j][t] = vfmaq_f32(acc[j][t], vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sb + 16))),
                                              vdupq_n_f32(s_row(x, t)[b]));
                }
            }
        }
        for (int j = 0; j < 2; ++j)
            for (int t = 0; t < NT; ++t) {
                float out[4];
                vst1q_f32(out, acc[j][t]);
                for (int i = 0; i < 4; ++i)
                    if (8 * h + 4 * j + i < rows) y[t * ldy + 8 * h + 4 * j + i] = out[i];
            }
    }
}

// gemm_q_nt as kernels/shared.h's panel loop calls it
struct Panel {
    template <int NT, bool Q4>
    static void run(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int rows, float* y,
                    int64_t ldy) {
        gemm_q_nt<NT, Q4>(nb, codes, scales, x, rows, y, ldy);
    }
    template <int NT, WType F>
    static void run4x(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int rows, float* y,
                      int64_t ldy) {
        gemm_q4x_nt<NT, F>(nb, codes, scales, x, rows, y, ldy);
    }
};

static void dot_f32(int64_t n, const float* w, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_f32_nt, n, w, x, out, os)
}
static void dot_bf16(int64_t n, const uint16_t* w, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_bf16_nt, n, w, x, out, os)
}
static void quantize_act(int64_t n, const float* x, int8_t* q, float* d, float* s) {
    for (int64_t b = 0; b < n / 32; ++b) {
        float32x4_t v[8];
        float32x4_t mx = vdupq_n_f32(0.0f);
        for (int k = 0; k < 8; ++k) {
            v[k] = vld1q_f32(x + b * 32 + 4 * k);
            mx = vmaxq_f32(mx, vabsq_f32(v[k]));
        }
        const float db = vmaxvq_f32(mx) / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        int32x4_t sum = vdupq_n_s32(0);
        for (int k = 0; k < 8; k += 2) {
            const int32x4_t a = vcvtnq_s32_f32(vmulq_n_f32(v[k], id));  // round to nearest even
            const int32x4_t c = vcvtnq_s32_f32(vmulq_n_f32(v[k + 1], id));
            sum = vaddq_s32(sum, vaddq_s32(a, c));
            const int16x8_t h = vcombine_s16(vqmovn_s32(a), vqmovn_s32(c));
            vst1_s8(q + b * 32 + 4 * k, vqmovn_s16(h));
        }
        d[b] = db;
        s[b] = db * float(vaddvq_s32(sum));
    }
}

static void f16_row(int64_t n, const uint16_t* x, float* y) {
    const int64_t n4 = n / 4 * 4;
    for (int64_t i = 0; i < n4; i += 4) vst1q_f32(y + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))));
    for (int64_t i = n4; i < n; ++i) y[i] = f16_to_f32(x[i]);
}

static void to_f16(int64_t n, const float* x, uint16_t* y) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

// The table, filled by field name (kernels.h: every entry required but gemm_f32/gemm_bf16).
static constexpr KernelTable make_table() {
    KernelTable t;
    t.name = "neon";
    t.dot_f32 = dot_f32;
    t.dot_bf16 = dot_bf16;
    t.gemm_q8_0 = gemm_q_by_panel<Panel, false>;
    t.gemm_q4_0 = gemm_q_by_panel<Panel, true>;
    t.gemm_q4_1 = gemm_q4x_by_panel<Panel, WType::Q4_1>;
    t.gemm_iq4_nl = gemm_q4x_by_panel<Panel, WType::IQ4_NL>;
    // gemm_f32, gemm_bf16 stay nullptr: matmul uses the dot kernels
    t.kv_to_f32 = kv_to_f32_body<f16_row>;
    t.attn_block = attn_block_body;
    t.quantize_act = quantize_act;
    t.f32_to_f16 = to_f16;
    t.silu_mul = silu_mul_body;
    return t;
}

constexpr KernelTable table = make_table();  // built at compile time; external linkage from kernels.h

}  // namespace neon
}  // namespace l32
