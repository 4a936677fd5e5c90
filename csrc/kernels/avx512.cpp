// kernels/avx512.cpp — AVX-512 F/BW/VL/DQ + VNNI kernels (Ice Lake, Sapphire Rapids, Zen 4/5).
// Contract: same results as kernels/scalar.cpp (quantize_act bit-exact). Compiled with its own -m flags;
// only reached when dispatch.cpp has seen these features in cpuid and the OS saves the zmm state.
#include <immintrin.h>

#include <cstring>

#include "attention_tile.h"
#include "shared.h"

namespace l32 {
namespace avx512 {

static inline __mmask16 tail_mask16(int64_t k) { return k >= 16 ? __mmask16(0xffff) : __mmask16((1u << k) - 1u); }

template <int NT>
static void dot_f32_nt(int64_t n, const float* w, const ActRows& x, float* out, int64_t os) {
    const float* xr[NT];
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) { xr[t] = f_row(x, t); acc[t] = _mm512_setzero_ps(); }
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask16(n - i);
        const __m512 wv = _mm512_maskz_loadu_ps(m, w + i);
        for (int t = 0; t < NT; ++t) acc[t] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, xr[t] + i), acc[t]);
    }
    for (int t = 0; t < NT; ++t) out[t * os] = _mm512_reduce_add_ps(acc[t]);
}

// Weight streams are prefetched this far ahead: with several activation rows per weight row (batched decode),
// hardware prefetch alone left the bus idle between rows.
constexpr int64_t PREFETCH_BYTES = 4096;

template <int NT>
static void dot_bf16_nt(int64_t n, const uint16_t* w, const ActRows& x, float* out, int64_t os) {
    // Two accumulators per row (32 weights per step): one FMA chain per row would cap the kernel at one FMA per
    // FMA latency, below the memory bus for bf16 weights. The weight stream is prefetched as in the int8 dots.
    const float* xr[NT];
    __m512 acc0[NT], acc1[NT];
    for (int t = 0; t < NT; ++t) {
        xr[t] = f_row(x, t);
        acc0[t] = _mm512_setzero_ps();
        acc1[t] = _mm512_setzero_ps();
    }
    // bf16 -> f32: widen to 32 bits and shift into the high half
    const auto widen = [](__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); };
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        _mm_prefetch(reinterpret_cast<const char*>(w + i) + PREFETCH_BYTES, _MM_HINT_T0);
        const __m512 w0 = widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i)));
        const __m512 w1 = widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i + 16)));
        for (int t = 0; t < NT; ++t) {
            acc0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xr[t] + i), acc0[t]);
            acc1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr[t] + i + 16), acc1[t]);
        }
    }
    for (; i < n; i += 16) {
        const __mmask16 m = tail_mask16(n - i);
        const __m512 wv = widen(_mm256_maskz_loadu_epi16(m, w + i));
        for (int t = 0; t < NT; ++t) acc0[t] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, xr[t] + i), acc0[t]);
    }
    for (int t = 0; t < NT; ++t) out[t * os] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[t], acc1[t]));
}

// Float GEMM tile: FGEMM_ROWS weight rows x FGEMM_NT activation rows, 24 accumulators in zmm registers, 16 columns
// per step; a short tile repeats its last row/activation and stores only the real ones. Each accumulator is
// reduced once at the end.
template <bool BF16>
static void gemm_float(int64_t n, const void* w, int64_t wstride, int rows, const ActRows& x, int nt, float* y,
                       int64_t ldy) {
    constexpr int R = FGEMM_ROWS, NT = FGEMM_NT;
    const float* xr[NT];
    for (int t = 0; t < NT; ++t) xr[t] = f_row(x, t < nt ? t : nt - 1);
    const uint16_t* wb[R];
    const float* wf[R];
    for (int r = 0; r < R; ++r) {
        const int64_t rr = r < rows ? r : rows - 1;
        wb[r] = static_cast<const uint16_t*>(w) + rr * wstride;
        wf[r] = static_cast<const float*>(w) + rr * wstride;
    }
    __m512 acc[R][NT];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_setzero_ps();
    const auto load_w = [&](int r, int64_t i, __mmask16 m) {
        return BF16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, wb[r] + i)), 16))
                    : _mm512_maskz_loadu_ps(m, wf[r] + i);
    };
    const auto step = [&](int64_t i, __mmask16 m) {
        __m512 wv[R];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) wv[r] = load_w(r, i, m);
#pragma GCC unroll 6
        for (int t = 0; t < NT; ++t) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, xr[t] + i);
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    };
    // the weight rows are prefetched as in the dots: with few activation rows the tile streams them from DRAM
    const auto prefetch = [&](int64_t i) {
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            const char* p = BF16 ? reinterpret_cast<const char*>(wb[r] + i) : reinterpret_cast<const char*>(wf[r] + i);
            _mm_prefetch(p + PREFETCH_BYTES, _MM_HINT_T0);
            if (!BF16) _mm_prefetch(p + PREFETCH_BYTES + 64, _MM_HINT_T0);
        }
    };
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {  // 32 columns: one cache line of each bf16 row, two of each f32 row
        prefetch(i);
        step(i, __mmask16(0xffff));
        step(i + 16, __mmask16(0xffff));
    }
    for (; i < n; i += 16) step(i, tail_mask16(n - i));
    // reduce every accumulator with compile-time indices (a runtime-bounded loop over acc would make the compiler
    // keep acc in memory and store it on every step), then store the real outputs
    float res[R][NT];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 6
        for (int t = 0; t < NT; ++t) res[r][t] = _mm512_reduce_add_ps(acc[r][t]);
    for (int t = 0; t < nt; ++t)
        for (int r = 0; r < rows; ++r) y[t * ldy + r] = res[r][t];
}

static void gemm_f32(int64_t n, const float* w, int64_t wstride, int rows, const ActRows& x, int nt, float* y,
                     int64_t ldy) {
    gemm_float<false>(n, w, wstride, rows, x, nt, y, ldy);
}

static void gemm_bf16(int64_t n, const uint16_t* w, int64_t wstride, int rows, const ActRows& x, int nt, float* y,
                      int64_t ldy) {
    gemm_float<true>(n, w, wstride, rows, x, nt, y, ldy);
}

// Quantized GEMM on NP consecutive panels (formats.h): per block, 8 VNNI dots per panel and activation row (one
// per group of 4 codes, the 4 activation bytes broadcast) accumulate the block in int32 lanes, one per weight row;
// then its 16 scales apply at once: acc += dw * (dx * dot - OFFSET * s). vpdpbusd multiplies unsigned codes
// (q + OFFSET) by signed activations; the block sum s = dx * sum(xq) removes the offset. Two panels per pass make
// each broadcast feed two dots: with one, the loads (a broadcast per dot) bound the kernel, not the dots. With few
// activation rows the groups alternate between two int32 chains, so that a block is not 8 dependent dots.
template <int NP, int NT, bool Q4>
static void gemm_q_nt(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int rows, float* y,
                      int64_t ldy) {
    constexpr int64_t BLOCK = panel_block_bytes(Q4);
    constexpr float OFFSET = Q4 ? 8.0f : 128.0f;
    constexpr int CH = NT >= 4 ? 1 : 2;
    const int8_t* xq[NT];
    const float* xd[NT];
    const float* xs[NT];
    __m512 acc[NP][NT];
    for (int t = 0; t < NT; ++t) {
        xq[t] = q_row(x, t);
        xd[t] = d_row(x, t);
        xs[t] = s_row(x, t);
        for (int p = 0; p < NP; ++p) acc[p][t] = _mm512_setzero_ps();
    }
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* pb[NP];
        const uint16_t* sb[NP];
        for (int p = 0; p < NP; ++p) {
            pb[p] = codes + (p * nb + b) * BLOCK;
            sb[p] = scales + (p * nb + b) * PANEL_ROWS;
            // decode streams the panels from DRAM: every line of the block PREFETCH_BYTES ahead, and the scales
            // (32 bytes a block) as far ahead in blocks
            for (int64_t l = 0; l < BLOCK; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pb[p]) + PREFETCH_BYTES + l, _MM_HINT_T0);
            if ((b & 1) == 0) _mm_prefetch(reinterpret_cast<const char*>(sb[p]) + PREFETCH_BYTES * 32 / BLOCK, _MM_HINT_T0);
        }
        __m512i dot[CH][NP][NT];
        for (int c = 0; c < CH; ++c)
            for (int p = 0; p < NP; ++p)
                for (int t = 0; t < NT; ++t) dot[c][p][t] = _mm512_setzero_si512();
        for (int c = 0; c < 4; ++c) {  // groups c and c + 4
            __m512i lo[NP], hi[NP];
            for (int p = 0; p < NP; ++p) {
                if (Q4) {
                    const __m512i v = _mm512_load_si512(reinterpret_cast<const void*>(pb[p] + c * 64));
                    lo[p] = _mm512_and_si512(v, low4);
                    hi[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
                } else {
                    lo[p] = _mm512_load_si512(reinterpret_cast<const void*>(pb[p] + c * 64));
                    hi[p] = _mm512_load_si512(reinterpret_cast<const void*>(pb[p] + (c + 4) * 64));
                }
            }
            for (int t = 0; t < NT; ++t) {
                int32_t xlo, xhi;
                std::memcpy(&xlo, xq[t] + b * QK + 4 * c, 4);
                std::memcpy(&xhi, xq[t] + b * QK + 16 + 4 * c, 4);
                const __m512i vlo = _mm512_set1_epi32(xlo), vhi = _mm512_set1_epi32(xhi);
                for (int p = 0; p < NP; ++p) {
                    dot[0][p][t] = _mm512_dpbusd_epi32(dot[0][p][t], lo[p], vlo);
                    dot[CH - 1][p][t] = _mm512_dpbusd_epi32(dot[CH - 1][p][t], hi[p], vhi);
                }
            }
        }
        for (int p = 0; p < NP; ++p) {
            const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb[p])));
            for (int t = 0; t < NT; ++t) {
                const __m512i d = CH == 2 ? _mm512_add_epi32(dot[0][p][t], dot[CH - 1][p][t]) : dot[0][p][t];
                const __m512 v = _mm512_fmsub_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(xd[t][b]), _mm512_set1_ps(OFFSET * xs[t][b]));
                acc[p][t] = _mm512_fmadd_ps(dw, v, acc[p][t]);
            }
        }
    }
    for (int p = 0; p < NP; ++p) {
        const __mmask16 m = tail_mask16(rows - p * PANEL_ROWS);
        for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy + p * PANEL_ROWS, m, acc[p][t]);
    }
}

// One panel (decode, where ops.cpp streams one panel a call): activation rows in tiles of 8 (8 int32 and 8 f32
// accumulators). Two panels (prefill): tiles of 4 (2 x 4 of each; the codes and a broadcast still fit the 32 zmm
// registers); a tile of fewer than 4 rows takes the panels one at a time.
template <bool Q4>
static void gemm_q(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt, int rows,
                   float* y, int64_t ldy) {
    constexpr int64_t BLOCK = panel_block_bytes(Q4);
    const int tile = rows > PANEL_ROWS ? 4 : 8;
    for (int t0 = 0; t0 < nt; t0 += tile) {
        const ActRows xt = rows_from(x, t0);
        float* yt = y + t0 * ldy;
        const int n = nt - t0 < tile ? nt - t0 : tile;
        if (n == 4 && rows > PANEL_ROWS) {
            gemm_q_nt<2, 4, Q4>(nb, codes, scales, xt, rows, yt, ldy);
            continue;
        }
        for (int p = 0; p * PANEL_ROWS < rows; ++p) {
            const uint8_t* pc = codes + p * nb * BLOCK;
            const uint16_t* ps = scales + p * nb * PANEL_ROWS;
            const int pr = rows - p * PANEL_ROWS;
            float* yp = yt + p * PANEL_ROWS;
            switch (n) {
                case 1: gemm_q_nt<1, 1, Q4>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 2: gemm_q_nt<1, 2, Q4>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 3: gemm_q_nt<1, 3, Q4>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 4: gemm_q_nt<1, 4, Q4>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 5: gemm_q_nt<1, 5, Q4>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 6: gemm_q_nt<1, 6, Q4>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 7: gemm_q_nt<1, 7, Q4>(nb, pc, ps, xt, pr, yp, ldy); break;
                default: gemm_q_nt<1, 8, Q4>(nb, pc, ps, xt, pr, yp, ldy); break;
            }
        }
    }
}

// Q4_1 / IQ4_NL panels (kernels.h: bit-exact with scalar): the Q4_0 loop above with the float step of the spec.
// Q4_1's nibbles are its unsigned codes, so vpdpbusd takes them as they are. IQ4_NL's nibbles index the grid: one
// vpshufb per 64 bytes looks up grid + 128 (unsigned, 1..241), and the exact integer dot is then
// dot - 128 * sum(xq), the block's integer sum taken with one vpsadbw.
template <int NP, int NT, WType F>
static void gemm_q4x_nt(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int rows, float* y,
                        int64_t ldy) {
    constexpr int64_t BLOCK = panel_block_bytes(true);
    constexpr int64_t SB = PANEL_ROWS * scale_planes(F);  // f16 scales a block
    constexpr bool IQ = F == WType::IQ4_NL;
    constexpr int CH = NT >= 4 ? 1 : 2;
    const int8_t* xq[NT];
    const float* xd[NT];
    const float* xs[NT];
    __m512 acc[NP][NT];
    for (int t = 0; t < NT; ++t) {
        xq[t] = q_row(x, t);
        xd[t] = d_row(x, t);
        xs[t] = s_row(x, t);
        for (int p = 0; p < NP; ++p) acc[p][t] = _mm512_setzero_ps();
    }
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(
        char(IQ4_GRID[0] + 128), char(IQ4_GRID[1] + 128), char(IQ4_GRID[2] + 128), char(IQ4_GRID[3] + 128),
        char(IQ4_GRID[4] + 128), char(IQ4_GRID[5] + 128), char(IQ4_GRID[6] + 128), char(IQ4_GRID[7] + 128),
        char(IQ4_GRID[8] + 128), char(IQ4_GRID[9] + 128), char(IQ4_GRID[10] + 128), char(IQ4_GRID[11] + 128),
        char(IQ4_GRID[12] + 128), char(IQ4_GRID[13] + 128), char(IQ4_GRID[14] + 128), char(IQ4_GRID[15] + 128)));
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* pb[NP];
        const uint16_t* sb[NP];
        for (int p = 0; p < NP; ++p) {
            pb[p] = codes + (p * nb + b) * BLOCK;
            sb[p] = scales + (p * nb + b) * SB;
            for (int64_t l = 0; l < BLOCK; l += 64) _mm_prefetch(reinterpret_cast<const char*>(pb[p]) + PREFETCH_BYTES + l, _MM_HINT_T0);
            if (SB == 32 || (b & 1) == 0)
                _mm_prefetch(reinterpret_cast<const char*>(sb[p]) + PREFETCH_BYTES * SB * 2 / BLOCK, _MM_HINT_T0);
        }
        __m512i dot[CH][NP][NT];
        for (int c = 0; c < CH; ++c)
            for (int p = 0; p < NP; ++p)
                for (int t = 0; t < NT; ++t) dot[c][p][t] = _mm512_setzero_si512();
        for (int c = 0; c < 4; ++c) {  // groups c and c + 4
            __m512i lo[NP], hi[NP];
            for (int p = 0; p < NP; ++p) {
                const __m512i v = _mm512_load_si512(reinterpret_cast<const void*>(pb[p] + c * 64));
                lo[p] = _mm512_and_si512(v, low4);
                hi[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
                if (IQ) {
                    lo[p] = _mm512_shuffle_epi8(lut, lo[p]);
                    hi[p] = _mm512_shuffle_epi8(lut, hi[p]);
                }
            }
            for (int t = 0; t < NT; ++t) {
                int32_t xlo, xhi;
                std::memcpy(&xlo, xq[t] + b * QK + 4 * c, 4);
                std::memcpy(&xhi, xq[t] + b * QK + 16 + 4 * c, 4);
                const __m512i vlo = _mm512_set1_epi32(xlo), vhi = _mm512_set1_epi32(xhi);
                for (int p = 0; p < NP; ++p) {
                    dot[0][p][t] = _mm512_dpbusd_epi32(dot[0][p][t], lo[p], vlo);
                    dot[CH - 1][p][t] = _mm512_dpbusd_epi32(dot[CH - 1][p][t], hi[p], vhi);
                }
            }
        }
        __m512i off[NT];  // IQ4_NL: 128 * sum(xq) of the block
        if (IQ)
            for (int t = 0; t < NT; ++t) {
                const __m256i u = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[t] + b * QK)),
                                                   _mm256_set1_epi8(char(0x80)));  // xq + 128, unsigned
                const __m256i s4 = _mm256_sad_epu8(u, _mm256_setzero_si256());
                __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(s4), _mm256_extracti128_si256(s4, 1));
                s2 = _mm_add_epi64(s2, _mm_unpackhi_epi64(s2, s2));
                off[t] = _mm512_set1_epi32(128 * (_mm_cvtsi128_si32(s2) - 32 * 128));
            }
        for (int p = 0; p < NP; ++p) {
            const __m512 dw = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb[p])));
            const __m512 mw = SB == 32 ? _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(sb[p] + 16)))
                                       : _mm512_setzero_ps();
            for (int t = 0; t < NT; ++t) {
                __m512i d = CH == 2 ? _mm512_add_epi32(dot[0][p][t], dot[CH - 1][p][t]) : dot[0][p][t];
                if (IQ) d = _mm512_sub_epi32(d, off[t]);
                const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(xd[t][b]));
                acc[p][t] = _mm512_fmadd_ps(dw, v, acc[p][t]);
                if (!IQ) acc[p][t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(xs[t][b]), acc[p][t]);
            }
        }
    }
    for (int p = 0; p < NP; ++p) {
        const __mmask16 m = tail_mask16(rows - p * PANEL_ROWS);
        for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + t * ldy + p * PANEL_ROWS, m, acc[p][t]);
    }
}

// gemm_q's tiling for the Q4_1 / IQ4_NL kernel.
template <WType F>
static void gemm_q4x(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt, int rows,
                     float* y, int64_t ldy) {
    constexpr int64_t BLOCK = panel_block_bytes(true);
    constexpr int64_t SB = PANEL_ROWS * scale_planes(F);
    const int tile = rows > PANEL_ROWS ? 4 : 8;
    for (int t0 = 0; t0 < nt; t0 += tile) {
        const ActRows xt = rows_from(x, t0);
        float* yt = y + t0 * ldy;
        const int n = nt - t0 < tile ? nt - t0 : tile;
        if (n == 4 && rows > PANEL_ROWS) {
            gemm_q4x_nt<2, 4, F>(nb, codes, scales, xt, rows, yt, ldy);
            continue;
        }
        for (int p = 0; p * PANEL_ROWS < rows; ++p) {
            const uint8_t* pc = codes + p * nb * BLOCK;
            const uint16_t* ps = scales + p * nb * SB;
            const int pr = rows - p * PANEL_ROWS;
            float* yp = yt + p * PANEL_ROWS;
            switch (n) {
                case 1: gemm_q4x_nt<1, 1, F>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 2: gemm_q4x_nt<1, 2, F>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 3: gemm_q4x_nt<1, 3, F>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 4: gemm_q4x_nt<1, 4, F>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 5: gemm_q4x_nt<1, 5, F>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 6: gemm_q4x_nt<1, 6, F>(nb, pc, ps, xt, pr, yp, ldy); break;
                case 7: gemm_q4x_nt<1, 7, F>(nb, pc, ps, xt, pr, yp, ldy); break;
                default: gemm_q4x_nt<1, 8, F>(nb, pc, ps, xt, pr, yp, ldy); break;
            }
        }
    }
}

static void dot_f32(int64_t n, const float* w, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_f32_nt, n, w, x, out, os)
}
static void dot_bf16(int64_t n, const uint16_t* w, const ActRows& x, int nt, float* out, int64_t os) {
    L32_DISPATCH_NT(dot_bf16_nt, n, w, x, out, os)
}
static void quantize_act(int64_t n, const float* x, int8_t* q, float* d, float* s) {
    const __m512 sign_off = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / 32; ++b) {
        const __m512 a = _mm512_loadu_ps(x + b * 32);
        const __m512 c = _mm512_loadu_ps(x + b * 32 + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(a, sign_off), _mm512_and_ps(c, sign_off)));
        const float db = amax / 127.0f;
        const float id = db != 0.0f ? 1.0f / db : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, vid));  // round to nearest even
        const __m512i qc = _mm512_cvtps_epi32(_mm512_mul_ps(c, vid));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * 32), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * 32 + 16), _mm512_cvtepi32_epi8(qc));
        d[b] = db;
        s[b] = db * float(_mm512_reduce_add_epi32(_mm512_add_epi32(qa, qc)));
    }
}

static void f16_row(int64_t n, const uint16_t* x, float* y) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)));
    }
}

static void to_f16(int64_t n, const float* x, uint16_t* y) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask16(n - i);
        const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(y + i, m, h);
    }
}

// e^x for x <= 0 (softmax after the max is subtracted): x = n ln2 + r, |r| <= ln2/2, e^r by its degree-6 Taylor
// polynomial (relative error < 2e-7), times 2^n by scalef.
static inline __m512 exp_nonpositive(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// kernels/attention_tile.h's attn_block with explicit registers: 4 queries x 16 keys of scores, then 4 queries x 64
// dims of output, accumulated in zmm registers while K^T tiles / V rows stream by; the softmax is vectorized.
static void attn_block(int64_t nq, int64_t hd, const float* q, const int32_t* limit, int64_t j0, int64_t nk,
                       const float* kt, const float* v, float scale, float* s, float* m, float* l, float* o) {
    constexpr int64_t QB = 4;
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t u0 = 0; u0 < nq; u0 += QB) {
        const int64_t ub = nq - u0 < QB ? nq - u0 : QB;
        int64_t vis[QB], lmax = 0;
        for (int64_t uu = 0; uu < QB; ++uu) {
            vis[uu] = uu < ub ? visible_keys(limit[u0 + uu], j0, nk) : 0;
            lmax = vis[uu] > lmax ? vis[uu] : lmax;
        }
        if (lmax == 0) continue;
        const float* qr[QB];
        float* sr[QB];
        for (int64_t uu = 0; uu < QB; ++uu) {
            const int64_t u = u0 + (uu < ub ? uu : ub - 1);  // a short group repeats its last query
            qr[uu] = q + u * hd;
            sr[uu] = s + u * ATT_KEYS;
        }
        for (int64_t j = 0; j < lmax; j += 16) {
            const float* tile = kt + (j / 16) * hd * 16;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t d = 0; d < hd; ++d) {
                const __m512 kv = _mm512_loadu_ps(tile + d * 16);
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(qr[0][d]), kv, a0);
                a1 = _mm512_fmadd_ps(_mm512_set1_ps(qr[1][d]), kv, a1);
                a2 = _mm512_fmadd_ps(_mm512_set1_ps(qr[2][d]), kv, a2);
                a3 = _mm512_fmadd_ps(_mm512_set1_ps(qr[3][d]), kv, a3);
            }
            // stores in reverse so that a repeated tail query leaves the real one's scores
            _mm512_storeu_ps(sr[3] + j, _mm512_mul_ps(a3, vscale));
            _mm512_storeu_ps(sr[2] + j, _mm512_mul_ps(a2, vscale));
            _mm512_storeu_ps(sr[1] + j, _mm512_mul_ps(a1, vscale));
            _mm512_storeu_ps(sr[0] + j, _mm512_mul_ps(a0, vscale));
        }
        // online softmax per query: p = e^(s - m_new) on its visible keys, 0 on the rest up to lmax (a select, so
        // that scores of unwritten cache slots never reach the output); the old sum and output scale by e^(m - m_new)
        __m512 corr[QB];
        for (int64_t uu = 0; uu < QB; ++uu) {
            corr[uu] = _mm512_set1_ps(1.0f);
            if (uu >= ub) continue;
            float* su = sr[uu];
            const int64_t c = vis[uu], u = u0 + uu;
            if (c == 0) {
                for (int64_t j = 0; j < lmax; j += 16) _mm512_storeu_ps(su + j, _mm512_setzero_ps());
                continue;
            }
            __m512 mx = _mm512_set1_ps(m[u]);
            for (int64_t j = 0; j < c; j += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask16(c - j), su + j));
            const float mnew = _mm512_reduce_max_ps(mx);
            const __m512 vmx = _mm512_set1_ps(mnew);
            __m512 sum = _mm512_setzero_ps();
            for (int64_t j = 0; j < lmax; j += 16) {
                const __mmask16 k = j < c ? tail_mask16(c - j) : __mmask16(0);
                const __m512 e = _mm512_maskz_mov_ps(k, exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(su + j), vmx)));
                sum = _mm512_add_ps(sum, e);
                _mm512_storeu_ps(su + j, e);
            }
            corr[uu] = exp_nonpositive(_mm512_set1_ps(m[u] - mnew));
            l[u] = l[u] * _mm512_cvtss_f32(corr[uu]) + _mm512_reduce_add_ps(sum);
            m[u] = mnew;
        }
        for (int64_t d0 = 0; d0 < hd; d0 += 64) {  // o = corr * o + P V, 64 dims (4 zmm) x 4 queries at a time
            __mmask16 mk[4];
            for (int c = 0; c < 4; ++c) mk[c] = d0 + 16 * c < hd ? tail_mask16(hd - d0 - 16 * c) : __mmask16(0);
            __m512 acc[QB][4];
            for (int64_t uu = 0; uu < QB; ++uu)
                for (int c = 0; c < 4; ++c)
                    acc[uu][c] = uu < ub ? _mm512_mul_ps(corr[uu], _mm512_maskz_loadu_ps(mk[c], o + (u0 + uu) * hd + d0 + 16 * c))
                                         : _mm512_setzero_ps();
            for (int64_t j = 0; j < lmax; ++j) {
                const float* vj = v + j * hd + d0;
                __m512 vv[4];
                for (int c = 0; c < 4; ++c) vv[c] = _mm512_maskz_loadu_ps(mk[c], vj + 16 * c);
                for (int64_t uu = 0; uu < QB; ++uu) {
                    const __m512 p = _mm512_set1_ps(sr[uu][j]);
                    for (int c = 0; c < 4; ++c) acc[uu][c] = _mm512_fmadd_ps(p, vv[c], acc[uu][c]);
                }
            }
            for (int64_t uu = 0; uu < ub; ++uu)
                for (int c = 0; c < 4; ++c) _mm512_mask_storeu_ps(o + (u0 + uu) * hd + d0 + 16 * c, mk[c], acc[uu][c]);
        }
    }
}

// silu(g) * u with e = e^-|g| <= 1 (no overflow): sigmoid(g) = 1 / (1 + e) for g >= 0, e / (1 + e) below. A NaN g
// stays NaN through the final product with g.
static void silu_mul(int64_t n, const float* g, const float* u, float* h) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask16(n - i);
        const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_and_ps(gv, abs_mask)));
        const __m512 num = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(gv, _mm512_setzero_ps(), _CMP_LT_OQ), one, e);
        const __m512 sig = _mm512_div_ps(num, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(h + i, m, _mm512_mul_ps(_mm512_mul_ps(gv, sig), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

// The table, filled by field name (kernels.h: every entry required but gemm_f32/gemm_bf16).
static constexpr KernelTable make_table() {
    KernelTable t;
    t.name = "avx512";
    t.dot_f32 = dot_f32;
    t.dot_bf16 = dot_bf16;
    t.gemm_q8_0 = gemm_q<false>;
    t.gemm_q4_0 = gemm_q<true>;
    t.gemm_q4_1 = gemm_q4x<WType::Q4_1>;
    t.gemm_iq4_nl = gemm_q4x<WType::IQ4_NL>;
    t.gemm_f32 = gemm_f32;
    t.gemm_bf16 = gemm_bf16;
    t.kv_to_f32 = kv_to_f32_body<f16_row>;
    t.attn_block = attn_block;
    t.quantize_act = quantize_act;
    t.f32_to_f16 = to_f16;
    t.silu_mul = silu_mul;
    return t;
}

constexpr KernelTable table = make_table();  // built at compile time; external linkage from kernels.h

}  // namespace avx512
}  // namespace l32
