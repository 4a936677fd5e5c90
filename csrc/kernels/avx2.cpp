// kernels/avx2.cpp — AVX2 + FMA + F16C kernels (Haswell and later, Zen 1 and later).
// Contract: same results as kernels/scalar.cpp (quantize_act bit-exact). Compiled with its own -m flags.
#include <immintrin.h>

#include <cstring>

#include "attention_tile.h"
#include "elementwise.h"
#include "shared.h"

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
    for (int t = 0; t < NT; ++t) { xr[t] = f_row(x, t); acc[t] = _mm256_setzero_ps(); }
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
    for (int t = 0; t < NT; ++t) { xr[t] = f_row(x, t); acc[t] = _mm256_setzero_ps(); }
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

constexpr int64_t PREFETCH_BYTES = 1024;  // the weight stream, as in avx512.cpp

// Quantized GEMM on one panel (formats.h) in two passes of 8 rows (the bytes 32h..32h+31 of each 64-byte group),
// up to 4 activation rows at a time. maddubs multiplies unsigned by signed bytes into int16 pairs, madd with ones
// sums them into each row's int32 lane.
// q4_0: codes 0..15 (q + 8), so the 8 maddubs of a block cannot overflow int16 (8 * 2 * 15 * 127 < 32767) and
// are summed before one madd; the +8 goes through the activation block sums. q8_0: codes q + 128 would saturate,
// so they are flipped back to signed q and multiplied with the sign trick, |q| * (x * sign(q)), no offset.
template <int NT, bool Q4>
static void gemm_q_nt(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int rows, float* y,
                      int64_t ldy) {
    constexpr int64_t BLOCK = panel_block_bytes(Q4);
    const __m256i low4 = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8(char(0x80)), ones = _mm256_set1_epi16(1);
    const auto bcast = [](const int8_t* p) {
        int32_t v;
        std::memcpy(&v, p, 4);
        return _mm256_set1_epi32(v);
    };
    for (int h = 0; h < 2 && 8 * h < rows; ++h) {
        __m256 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* pb = codes + b * BLOCK + 32 * h;
            if (h == 0)
                for (int64_t l = 0; l < BLOCK; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pb) + PREFETCH_BYTES + l, _MM_HINT_T0);
            __m256i dot[NT];
            if (Q4) {
                __m256i s16[NT];
                for (int t = 0; t < NT; ++t) s16[t] = _mm256_setzero_si256();
                for (int c = 0; c < 4; ++c) {  // groups c (low nibbles) and c + 4 (high nibbles)
                    const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(pb + c * 64));
                    const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                    for (int t = 0; t < NT; ++t) {
                        const int8_t* xb = q_row(x, t) + b * QK;
                        s16[t] = _mm256_add_epi16(s16[t], _mm256_add_epi16(_mm256_maddubs_epi16(lo, bcast(xb + 4 * c)),
                                                                           _mm256_maddubs_epi16(hi, bcast(xb + 16 + 4 * c))));
                    }
                }
                for (int t = 0; t < NT; ++t) dot[t] = _mm256_madd_epi16(s16[t], ones);
            } else {
                for (int t = 0; t < NT; ++t) dot[t] = _mm256_setzero_si256();
                for (int g = 0; g < 8; ++g) {
                    const __m256i w = _mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(pb + g * 64)), flip);
                    const __m256i wabs = _mm256_sign_epi8(w, w);
                    for (int t = 0; t < NT; ++t) {
                        const int8_t* xb = q_row(x, t) + b * QK;
                        const __m256i p = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(bcast(xb + 4 * g), w));
                        dot[t] = _mm256_add_epi32(dot[t], _mm256_madd_epi16(p, ones));
                    }
                }
            }
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + b * PANEL_ROWS + 8 * h)));
            for (int t = 0; t < NT; ++t) {
                const __m256 xd = _mm256_set1_ps(d_row(x, t)[b]);
                const __m256 v = Q4 ? _mm256_fmsub_ps(_mm256_cvtepi32_ps(dot[t]), xd, _mm256_set1_ps(8.0f * s_row(x, t)[b]))
                                    : _mm256_mul_ps(_mm256_cvtepi32_ps(dot[t]), xd);
                acc[t] = _mm256_fmadd_ps(dw, v, acc[t]);
            }
        }
        const int n = rows - 8 * h < 8 ? rows - 8 * h : 8;
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int t = 0; t < NT; ++t) _mm256_maskstore_ps(y + t * ldy + 8 * h, keep, acc[t]);
    }
}

// Q4_1 / IQ4_NL panels (kernels.h: bit-exact with scalar), in the passes of gemm_q_nt. Q4_1: codes 0..15 as Q4_0's
// (the 8 maddubs of a block fit int16). IQ4_NL: vpshufb looks the grid up as signed bytes and the sign trick
// multiplies |w| by x * sign(w) (|w|, |x| <= 127: one maddubs fits int16), each group widened to int32 at once.
template <int NT, WType F>
static void gemm_q4x_nt(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int rows, float* y,
                        int64_t ldy) {
    constexpr int64_t BLOCK = panel_block_bytes(true);
    constexpr int64_t SB = PANEL_ROWS * scale_planes(F);
    const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const __m256i grid = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(IQ4_GRID)));
    const auto bcast = [](const int8_t* p) {
        int32_t v;
        std::memcpy(&v, p, 4);
        return _mm256_set1_epi32(v);
    };
    for (int h = 0; h < 2 && 8 * h < rows; ++h) {
        __m256 acc[NT];
        for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const uint8_t* pb = codes + b * BLOCK + 32 * h;
            if (h == 0)
                for (int64_t l = 0; l < BLOCK; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pb) + PREFETCH_BYTES + l, _MM_HINT_T0);
            __m256i dot[NT];
            if (F == WType::Q4_1) {
                __m256i s16[NT];
                for (int t = 0; t < NT; ++t) s16[t] = _mm256_setzero_si256();
                for (int c = 0; c < 4; ++c) {
                    const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(pb + c * 64));
                    const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                    for (int t = 0; t < NT; ++t) {
                        const int8_t* xb = q_row(x, t) + b * QK;
                        s16[t] = _mm256_add_epi16(s16[t], _mm256_add_epi16(_mm256_maddubs_epi16(lo, bcast(xb + 4 * c)),
                                                                           _mm256_maddubs_epi16(hi, bcast(xb + 16 + 4 * c))));
                    }
                }
                for (int t = 0; t < NT; ++t) dot[t] = _mm256_madd_epi16(s16[t], ones);
            } else {
                for (int t = 0; t < NT; ++t) dot[t] = _mm256_setzero_si256();
                for (int c = 0; c < 4; ++c) {
                    const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(pb + c * 64));
                    const __m256i w[2] = {_mm256_shuffle_epi8(grid, _mm256_and_si256(v, low4)),
                                          _mm256_shuffle_epi8(grid, _mm256_and_si256(_mm256_srli_epi16(v, 4), low4))};
                    for (int half = 0; half < 2; ++half) {
                        const __m256i wabs = _mm256_sign_epi8(w[half], w[half]);
                        for (int t = 0; t < NT; ++t) {
                            const int8_t* xb = q_row(x, t) + b * QK + 16 * half + 4 * c;
                            const __m256i p = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(bcast(xb), w[half]));
                            dot[t] = _mm256_add_epi32(dot[t], _mm256_madd_epi16(p, ones));
                        }
                    }
                }
            }
            const uint16_t* sb = scales + b * SB + 8 * h;
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sb)));
            const __m256 mw = SB == 32 ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sb + 16)))
                                       : _mm256_setzero_ps();
            for (int t = 0; t < NT; ++t) {
                const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(dot[t]), _mm256_set1_ps(d_row(x, t)[b]));
                acc[t] = _mm256_fmadd_ps(dw, v, acc[t]);
                if (F == WType::Q4_1) acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(s_row(x, t)[b]), acc[t]);
            }
        }
        const int n = rows - 8 * h < 8 ? rows - 8 * h : 8;
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int t = 0; t < NT; ++t) _mm256_maskstore_ps(y + t * ldy + 8 * h, keep, acc[t]);
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

// The table, filled by field name (kernels.h: every entry required but gemm_f32/gemm_bf16).
static constexpr KernelTable make_table() {
    KernelTable t;
    t.name = "avx2";
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

}  // namespace avx2
}  // namespace l32
