// kernels/neon.cpp — Armv8.2-A NEON kernels with the dot-product extension (sdot).
// Contract: same results as kernels/scalar.cpp (quantize_act bit-exact). Reached only when HWCAP says
// the CPU has asimddp; compiled with -march=armv8.2-a+dotprod in this file alone.
#include <arm_neon.h>

#include "../common.h"
#include "../kernels.h"
#include "attention_tile.h"

namespace l32 {
namespace neon {

template <int NT>
static void dot_f32_nt(int64_t n, const float* w, const ActRows& x, float* out, int64_t os) {
    const float* xr[NT];
    float32x4_t acc[NT];
    for (int t = 0; t < NT; ++t) { xr[t] = static_cast<const float*>(x.q) + t * x.q_stride; acc[t] = vdupq_n_f32(0.0f); }
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
    for (int t = 0; t < NT; ++t) { xr[t] = static_cast<const float*>(x.q) + t * x.q_stride; acc[t] = vdupq_n_f32(0.0f); }
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

// sdot takes signed x signed bytes, so the codes are turned back into signed values (q8_0: flip the top
// bit of q+128; q4_0: nibble - 8) and there is no offset to remove.
template <int NT, bool Q4>
static void dot_q_nt(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, float* out, int64_t os) {
    const int64_t nb = n / 32;
    float32x4_t acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = vdupq_n_f32(0.0f);
    const int8x16_t eight = vdupq_n_s8(8);
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    for (int64_t b = 0; b < nb; ++b) {
        __builtin_prefetch(wq + b * (Q4 ? 16 : 32) + 1024);  // keep DRAM busy with several rows (see avx512.cpp)
        int8x16_t w0, w1;  // the block's elements 0..15 and 16..31 as signed values
        if (Q4 && (b & 1) == 0 && b + 1 == nb) {  // trailing odd block, ggml order
            const uint8x16_t raw = vld1q_u8(wq + b * 16);
            w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, low4)), eight);
            w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), eight);
        } else if (Q4) {  // pair layout: block 2p in the low nibbles, 2p+1 in the high ones
            const uint8_t* p = wq + (b & ~int64_t(1)) * 16;
            const uint8x16_t v0 = vld1q_u8(p), v1 = vld1q_u8(p + 16);
            if (b & 1) {
                w0 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v0, 4)), eight);
                w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v1, 4)), eight);
            } else {
                w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v0, low4)), eight);
                w1 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v1, low4)), eight);
            }
        } else {
            const uint8x16_t flip = vdupq_n_u8(0x80);
            w0 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(wq + b * 32), flip));
            w1 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(wq + b * 32 + 16), flip));
        }
        const float dw = f16_to_f32(wd[b]);
        for (int t = 0; t < NT; ++t) {
            const int8_t* xq = static_cast<const int8_t*>(x.q) + t * x.q_stride + b * 32;
            int32x4_t dp = vdotq_s32(vdupq_n_s32(0), w0, vld1q_s8(xq));
            dp = vdotq_s32(dp, w1, vld1q_s8(xq + 16));
            acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(dp), dw * x.d[t * x.b_stride + b]);
        }
    }
    for (int t = 0; t < NT; ++t) out[t * os] = vaddvq_f32(acc[t]);
}

#define L32_DISPATCH_NT(fn, ...)              \
    switch (nt) {                             \
        case 1: fn<1>(__VA_ARGS__); break;    \
        case 2: fn<2>(__VA_ARGS__); break;    \
        case 3: fn<3>(__VA_ARGS__); break;    \
        default: fn<4>(__VA_ARGS__); break;   \
    }

static void dot_f32(int64_t n, const float* w, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_f32_nt, n, w, x, out, os)
}
static void dot_bf16(int64_t n, const uint16_t* w, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_bf16_nt, n, w, x, out, os)
}
template <int NT> static void dot_q8_nt(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, float* out, int64_t os) {
    dot_q_nt<NT, false>(n, wq, wd, x, out, os);
}
template <int NT> static void dot_q4_nt(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, float* out, int64_t os) {
    dot_q_nt<NT, true>(n, wq, wd, x, out, os);
}
static void dot_q8_0(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_q8_nt, n, wq, wd, x, out, os)
}
static void dot_q4_0(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_q4_nt, n, wq, wd, x, out, os)
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

extern const KernelTable table = {
    "neon", dot_f32, dot_bf16, dot_q8_0, dot_q4_0, nullptr, nullptr, nullptr,
    kv_to_f32_body<f16_row>, attn_block_body, quantize_act, to_f16,
};

}  // namespace neon
}  // namespace l32
