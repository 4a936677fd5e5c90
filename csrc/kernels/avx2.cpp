// kernels/avx2.cpp — AVX2 + FMA + F16C kernels (Haswell and later, Zen 1 and later).
// Contract: same results as kernels/scalar.cpp (quantize_act bit-exact). Compiled with its own -m flags.
#include <immintrin.h>

#include "../common.h"
#include "../kernels.h"
#include "attention_tile.h"

namespace l32 {
namespace avx2 {

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

template <int NT>
static void dot_f32_nt(int64_t n, const float* w, const ActRows& x, float* out, int64_t os) {
    const float* xr[NT];
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) { xr[t] = static_cast<const float*>(x.q) + t * x.q_stride; acc[t] = _mm256_setzero_ps(); }
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 wv = _mm256_loadu_ps(w + i);
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[t] + i), acc[t]);
    }
    for (int t = 0; t < NT; ++t) {
        float r = hsum8(acc[t]);
        for (int64_t k = i; k < n; ++k) r += w[k] * xr[t][k];
        out[t * os] = r;
    }
}

template <int NT>
static void dot_bf16_nt(int64_t n, const uint16_t* w, const ActRows& x, float* out, int64_t os) {
    const float* xr[NT];
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) { xr[t] = static_cast<const float*>(x.q) + t * x.q_stride; acc[t] = _mm256_setzero_ps(); }
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i wi = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
        const __m256 wv = _mm256_castsi256_ps(_mm256_slli_epi32(wi, 16));
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[t] + i), acc[t]);
    }
    for (int t = 0; t < NT; ++t) {
        float r = hsum8(acc[t]);
        for (int64_t k = i; k < n; ++k) r += bf16_to_f32(w[k]) * xr[t][k];
        out[t * os] = r;
    }
}

// Sum of the 16 int16 products of maddubs as 8 int32 lanes.
static inline __m256i madd_ones(__m256i p16) { return _mm256_madd_epi16(p16, _mm256_set1_epi16(1)); }

// q8_0: the codes are q+128. maddubs(u8, s8) would saturate on 255*127*2, so the kernel flips the codes
// back to signed q and uses the sign trick: |q| * (x * sign(q)) fits int16. No offset to remove.
constexpr int64_t PREFETCH_BYTES = 1024;

template <int NT>
static void dot_q8_nt(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, float* out, int64_t os) {
    const int64_t nb = n / 32;
    const __m256i flip = _mm256_set1_epi8(char(0x80));
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        _mm_prefetch(reinterpret_cast<const char*>(wq + b * 32) + PREFETCH_BYTES, _MM_HINT_T0);  // see avx512.cpp
        const __m256i w = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + b * 32)), flip);
        const __m256i wabs = _mm256_sign_epi8(w, w);
        const float dw = _cvtsh_ss(wd[b]);
        for (int t = 0; t < NT; ++t) {
            const int8_t* xq = static_cast<const int8_t*>(x.q) + t * x.q_stride;
            const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * 32));
            const __m256i dp = madd_ones(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(xv, w)));
            const __m256 sc = _mm256_set1_ps(dw * x.d[t * x.b_stride + b]);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), sc, acc[t]);
        }
    }
    for (int t = 0; t < NT; ++t) out[t * os] = hsum8(acc[t]);
}

// q4_0: in a pair of blocks, byte j holds element j of block b (low nibble) and of block b+1 (high nibble);
// a trailing odd block keeps ggml's order (byte j: element j low, j+16 high). Codes are 0..15 (q+8), so
// maddubs cannot saturate; the +8 is removed through the activation block sums.
template <int NT>
static inline void q4_block(const __m256i codes, int64_t b, float dw, const ActRows& x, __m256* acc, float* corr) {
    for (int t = 0; t < NT; ++t) {
        const int8_t* xq = static_cast<const int8_t*>(x.q) + t * x.q_stride;
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + b * 32));
        const __m256i dp = madd_ones(_mm256_maddubs_epi16(codes, xv));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dp), _mm256_set1_ps(dw * x.d[t * x.b_stride + b]), acc[t]);
        corr[t] += dw * x.s[t * x.b_stride + b];
    }
}

template <int NT>
static void dot_q4_nt(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, float* out, int64_t os) {
    const int64_t nb = n / 32;
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 acc[NT];
    float corr[NT];
    for (int t = 0; t < NT; ++t) { acc[t] = _mm256_setzero_ps(); corr[t] = 0.0f; }
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        _mm_prefetch(reinterpret_cast<const char*>(wq + b * 16) + PREFETCH_BYTES, _MM_HINT_T0);
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq + b * 16));
        q4_block<NT>(_mm256_and_si256(v, low4), b, _cvtsh_ss(wd[b]), x, acc, corr);
        q4_block<NT>(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4), b + 1, _cvtsh_ss(wd[b + 1]), x, acc, corr);
    }
    if (b < nb) {
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wq + b * 16));
        const __m128i m4 = _mm_set1_epi8(0x0f);
        const __m256i codes = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
        q4_block<NT>(codes, b, _cvtsh_ss(wd[b]), x, acc, corr);
    }
    for (int t = 0; t < NT; ++t) out[t * os] = hsum8(acc[t]) - 8.0f * corr[t];
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
static void dot_q8_0(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_q8_nt, n, wq, wd, x, out, os)
}
static void dot_q4_0(int64_t n, const uint8_t* wq, const uint16_t* wd, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_q4_nt, n, wq, wd, x, out, os)
}

static void quantize_act(int64_t n, const float* x, int8_t* q, float* d, float* s) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / 32; ++b) {
        __m256 v[4];
        __m256 mx = _mm256_setzero_ps();
        for (int k = 0; k < 4; ++k) {
            v[k] = _mm256_loadu_ps(x + b * 32 + 8 * k);
            mx = _mm256_max_ps(mx, _mm256_and_ps(v[k], abs_mask));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float db = _mm_cvtss_f32(m4) / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i qi[4];
        __m256i sum = _mm256_setzero_si256();
        for (int k = 0; k < 4; ++k) {
            qi[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));  // round to nearest even
            sum = _mm256_add_epi32(sum, qi[k]);
        }
        // int32 -> int8 with saturating packs (values are within [-127, 127]), then undo the lane interleave
        const __m256i p01 = _mm256_packs_epi32(qi[0], qi[1]);
        const __m256i p23 = _mm256_packs_epi32(qi[2], qi[3]);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * 32), p);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        d[b] = db;
        s[b] = db * float(_mm_cvtsi128_si32(s4));
    }
}

static void f16_row(int64_t n, const uint16_t* x, float* y) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
    for (; i < n; ++i) y[i] = _cvtsh_ss(x[i]);
}

static void to_f16(int64_t n, const float* x, uint16_t* y) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; ++i) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

extern const KernelTable table = {
    "avx2", dot_f32, dot_bf16, dot_q8_0, dot_q4_0, nullptr, nullptr, nullptr,
    kv_to_f32_body<f16_row>, attn_block_body, quantize_act, to_f16,
};

}  // namespace avx2
}  // namespace l32
