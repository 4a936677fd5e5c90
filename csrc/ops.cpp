// ops.cpp — operators over the active kernels; owns the OpenMP loops and the cache blocking of matmul.
#include "ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

namespace l32 {

void MatmulInput::prepare(const KernelTable& k, const float* x_, int64_t T_, int64_t K_, bool need_quant,
                          int n_threads) {
    x = x_;
    T = T_;
    K = K_;
    quantized = need_quant;
    if (!need_quant) return;
    const int64_t nb = K / QK;
    acts.rows = T;
    acts.cols = K;
    acts.qs.resize(size_t(T * K));
    acts.d.resize(size_t(T * nb) * 4);
    acts.sum.resize(size_t(T * nb) * 4);
    int8_t* q = acts.qs.as<int8_t>();
    float* d = acts.d.as<float>();
    float* s = acts.sum.as<float>();
#pragma omp parallel for num_threads(n_threads) schedule(static) if (T > 1)
    for (int64_t t = 0; t < T; ++t) k.quantize_act(K, x + t * K, q + t * K, d + t * nb, s + t * nb);
}

#if defined(__SSE2__)
// Codes 4g..4g+15 (groups g..g+3) of four consecutive rows in, groups g..g+3 of those rows out: a 4x4 transpose
// of dwords, stored at dst + j*16 for group g+j (dst = &out[b*128 + g*16 + r]).
static inline void transpose_store4(__m128i a, __m128i b, __m128i c, __m128i d, uint32_t* dst) {
    const __m128i ab_lo = _mm_unpacklo_epi32(a, b), cd_lo = _mm_unpacklo_epi32(c, d);
    const __m128i ab_hi = _mm_unpackhi_epi32(a, b), cd_hi = _mm_unpackhi_epi32(c, d);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm_unpacklo_epi64(ab_lo, cd_lo));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), _mm_unpackhi_epi64(ab_lo, cd_lo));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 32), _mm_unpacklo_epi64(ab_hi, cd_hi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 48), _mm_unpackhi_epi64(ab_hi, cd_hi));
}

static inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// Four f16 (low half of h) to f32, exactly as f16_to_f32: exponent and mantissa shifted into place and scaled by
// 2^112 (rebiases normals, normalizes subnormals), inf/NaN get the f32 all-ones exponent, then the sign.
static inline __m128 f16x4_to_f32(__m128i h) {
    const __m128i x = _mm_unpacklo_epi16(h, _mm_setzero_si128());
    const __m128i em = _mm_slli_epi32(_mm_and_si128(x, _mm_set1_epi32(0x7fff)), 13);
    const __m128i sign = _mm_slli_epi32(_mm_and_si128(x, _mm_set1_epi32(0x8000)), 16);
    const __m128 scaled = _mm_mul_ps(_mm_castsi128_ps(em), _mm_castsi128_ps(_mm_set1_epi32(0x77800000)));  // 2^112
    const __m128i infnan = _mm_and_si128(_mm_cmpgt_epi32(em, _mm_set1_epi32(0x0f7fffff)), _mm_set1_epi32(0x7f800000));
    return _mm_castsi128_ps(_mm_or_si128(_mm_or_si128(_mm_castps_si128(scaled), infnan), sign));
}

// dw[b * 16 + r] for the 16 rows of a full panel: each row's f16 scales converted 4 at a time.
static int64_t pack_scales_sse2(const uint16_t* scales, int64_t nb, float* dw) {
    const int64_t done = nb & ~int64_t(3);
    for (int r = 0; r < PANEL_ROWS; ++r)
        for (int64_t b = 0; b < done; b += 4) {
            alignas(16) float v[4];
            _mm_store_ps(v, f16x4_to_f32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + r * nb + b))));
            for (int j = 0; j < 4; ++j) dw[(b + j) * PANEL_ROWS + r] = v[j];
        }
    return done;
}

// The codes of a full panel (16 rows inside the matrix), four rows at a time, the weight stream prefetched.
// Batched decode (8+ rows) runs as GEMMs too, so the repack must cost a few activation rows: with this, 8 rows
// of a q4_0 8192x2048 matmul take 0.71x the dot kernels' time, 16 rows 0.47x (bench_matmul, 1 thread).
// Returns the first block left to the scalar loop (q4_0's trailing odd block).
static int64_t pack_codes_sse2(const uint8_t* rows, size_t rb, int64_t nb, bool q4, uint32_t* out) {
    const int64_t done = q4 ? (nb & ~int64_t(1)) : nb;
    const __m128i low = _mm_set1_epi8(0x0f);
    for (int r = 0; r < PANEL_ROWS; r += 4) {
        const uint8_t* p0 = rows + size_t(r) * rb;
        const uint8_t *p1 = p0 + rb, *p2 = p1 + rb, *p3 = p2 + rb;
        if (!q4) {
            for (int64_t b = 0; b < nb; ++b)
                for (int h = 0; h < 2; ++h) {  // groups 0-3, then 4-7 of block b
                    const int64_t o = b * QK + h * 16;
                    for (const uint8_t* q : {p0, p1, p2, p3}) _mm_prefetch(reinterpret_cast<const char*>(q + o + 512), _MM_HINT_T0);
                    transpose_store4(load16(p0 + o), load16(p1 + o), load16(p2 + o), load16(p3 + o),
                                     out + b * 128 + h * 64 + r);
                }
            continue;
        }
        for (int64_t b = 0; b < done; b += 2)  // a pair's byte j: element j of block b (low), of block b+1 (high)
            for (int h = 0; h < 2; ++h) {
                const int64_t o = b * 16 + h * 16;
                for (const uint8_t* q : {p0, p1, p2, p3}) _mm_prefetch(reinterpret_cast<const char*>(q + o + 512), _MM_HINT_T0);
                const __m128i v0 = load16(p0 + o), v1 = load16(p1 + o), v2 = load16(p2 + o), v3 = load16(p3 + o);
                transpose_store4(_mm_and_si128(v0, low), _mm_and_si128(v1, low), _mm_and_si128(v2, low),
                                 _mm_and_si128(v3, low), out + b * 128 + h * 64 + r);
                transpose_store4(_mm_and_si128(_mm_srli_epi16(v0, 4), low), _mm_and_si128(_mm_srli_epi16(v1, 4), low),
                                 _mm_and_si128(_mm_srli_epi16(v2, 4), low), _mm_and_si128(_mm_srli_epi16(v3, 4), low),
                                 out + (b + 1) * 128 + h * 64 + r);
            }
    }
    return done;
}
#endif

void pack_panel(const Matrix& w, int64_t r0, uint8_t* panel, float* dw) {
    const int64_t nb = w.blocks_per_row();
    const size_t rb = w.row_bytes();
    const uint16_t* scales = w.scales.as<uint16_t>();
    const bool q4 = w.type == WType::Q4_0;
    uint32_t* out = reinterpret_cast<uint32_t*>(panel);  // out[b * 128 + g * 16 + r]: codes 4g..4g+3 of row r
    int64_t b_scalar = 0, b_scales = 0;  // codes and scales of blocks from here on: the scalar loops
#if defined(__SSE2__)
    if (r0 + PANEL_ROWS <= w.rows) {
        b_scalar = pack_codes_sse2(w.data.as<uint8_t>() + size_t(r0) * rb, rb, nb, q4, out);
        b_scales = pack_scales_sse2(scales + r0 * nb, nb, dw);
    }
#endif
    for (int r = 0; r < PANEL_ROWS; ++r) {
        if (r0 + r >= w.rows) {  // rows past the matrix: zero codes and scales, so they add nothing
            for (int64_t b = 0; b < nb; ++b) {
                dw[b * PANEL_ROWS + r] = 0.0f;
                for (int g = 0; g < 8; ++g) out[b * 128 + g * 16 + r] = 0;
            }
            continue;
        }
        const uint8_t* row = w.data.as<uint8_t>() + size_t(r0 + r) * rb;
        for (int64_t b = b_scales; b < nb; ++b) dw[b * PANEL_ROWS + r] = f16_to_f32(scales[(r0 + r) * nb + b]);
        if (!q4) {  // q8_0 codes are bytes already: move them 4 at a time
            for (int64_t b = b_scalar; b < nb; ++b)
                for (int g = 0; g < 8; ++g) std::memcpy(&out[b * 128 + g * 16 + r], row + b * QK + g * 4, 4);
            continue;
        }
        const int64_t paired = nb & ~int64_t(1);
        for (int64_t b = b_scalar; b < paired; b += 2)  // a pair's byte j: element j of block b (low), of b+1 (high)
            for (int g = 0; g < 8; ++g) {
                uint32_t v;
                std::memcpy(&v, row + b * 16 + g * 4, 4);
                out[b * 128 + g * 16 + r] = v & 0x0f0f0f0fu;
                out[(b + 1) * 128 + g * 16 + r] = (v >> 4) & 0x0f0f0f0fu;
            }
        if (paired < nb)  // trailing odd block, ggml order
            for (int g = 0; g < 8; ++g) {
                uint32_t v = 0;
                for (int j = 0; j < 4; ++j) v |= uint32_t(q4_code(row, nb, paired, g * 4 + j)) << (8 * j);
                out[paired * 128 + g * 16 + r] = v;
            }
    }
}

// Many activation rows against a quantized matrix: each thread repacks 16 weight rows at a time into a panel
// (once per matmul) and runs every activation row over it, GEMM_NT at a time.
static void matmul_panels(const KernelTable& k, const Matrix& w, const MatmulInput& in, float* y, int64_t ldy,
                          int n_threads) {
    const int64_t K = w.cols, T = in.T, nb = K / QK;
    const int64_t n_panels = (w.rows + PANEL_ROWS - 1) / PANEL_ROWS;
    const float offset = w.type == WType::Q4_0 ? 8.0f : 128.0f;
    const ActRows x{in.acts.qs.ptr, in.acts.d.as<float>(), in.acts.sum.as<float>(), K, nb};
    const size_t panel_bytes = size_t(nb) * 512, dw_bytes = size_t(nb) * PANEL_ROWS * 4;
    const int n_workers = int(std::max<int64_t>(1, std::min<int64_t>(n_threads, n_panels)));
    AlignedBuffer scratch(size_t(n_workers) * (panel_bytes + dw_bytes));  // allocated here: nothing throws inside
#pragma omp parallel num_threads(n_workers)
    {
        const int tid = omp_get_thread_num();
        uint8_t* panel = scratch.as<uint8_t>() + size_t(tid) * (panel_bytes + dw_bytes);
        float* dw = reinterpret_cast<float*>(panel + panel_bytes);
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n_panels; ++p) {
            const int64_t r0 = p * PANEL_ROWS;
            const int rows = int(std::min<int64_t>(PANEL_ROWS, w.rows - r0));
            pack_panel(w, r0, panel, dw);
            for (int64_t t = 0; t < T; t += GEMM_NT) {
                ActRows xt = x;
                xt.q = static_cast<const int8_t*>(x.q) + t * K;
                xt.d = x.d + t * nb;
                xt.s = x.s + t * nb;
                k.gemm_panel(nb, panel, dw, offset, xt, int(std::min<int64_t>(GEMM_NT, T - t)), rows, y + t * ldy + r0,
                             ldy);
            }
        }
    }
}

// f32/bf16 weights with many activation rows: a thread's block of weight rows stays in L2 while the activations
// pass over it FGEMM_NT rows at a time (those stay in L1/L2), FGEMM_ROWS x FGEMM_NT outputs per kernel call.
static void matmul_float(const KernelTable& k, const Matrix& w, const MatmulInput& in, float* y, int64_t ldy,
                         int n_threads) {
    const int64_t R = w.rows, K = w.cols, T = in.T;
    const size_t row_bytes = w.row_bytes();
    const int64_t per_thread = (R + n_threads - 1) / n_threads;
    const int64_t fit = std::max<int64_t>(1, int64_t((256 << 10) / std::max<size_t>(row_bytes, 1)) / FGEMM_ROWS);
    const int64_t row_block = FGEMM_ROWS * std::min<int64_t>((per_thread + FGEMM_ROWS - 1) / FGEMM_ROWS, fit);
    const int64_t n_blocks = (R + row_block - 1) / row_block;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const int64_t r0 = blk * row_block, r1 = std::min(R, r0 + row_block);
        for (int64_t t = 0; t < T; t += FGEMM_NT) {
            const int nt = int(std::min<int64_t>(FGEMM_NT, T - t));
            const ActRows xt{in.x + t * K, nullptr, nullptr, K, 0};
            for (int64_t r = r0; r < r1; r += FGEMM_ROWS) {
                const int rows = int(std::min<int64_t>(FGEMM_ROWS, r1 - r));
                float* out = y + t * ldy + r;
                if (w.type == WType::F32)
                    k.gemm_f32(K, w.data.as<float>() + r * K, K, rows, xt, nt, out, ldy);
                else
                    k.gemm_bf16(K, w.data.as<uint16_t>() + r * K, K, rows, xt, nt, out, ldy);
            }
        }
    }
}

void matmul(const KernelTable& k, const Matrix& w, const MatmulInput& in, float* y, int64_t ldy, int n_threads) {
    const int64_t R = w.rows, K = w.cols, T = in.T;
    const bool quant = w.type == WType::Q8_0 || w.type == WType::Q4_0;
    if (quant && k.gemm_panel && T >= GEMM_MIN_ROWS) return matmul_panels(k, w, in, y, ldy, n_threads);
    const bool float_gemm = w.type == WType::F32 ? k.gemm_f32 != nullptr : w.type == WType::BF16 && k.gemm_bf16;
    if (float_gemm && T >= GEMM_MIN_ROWS) return matmul_float(k, w, in, y, ldy, n_threads);
    ActRows x{};
    if (quant) {
        x = ActRows{in.acts.qs.ptr, in.acts.d.as<float>(), in.acts.sum.as<float>(), K, K / QK};
    } else {
        x = ActRows{in.x, nullptr, nullptr, K, 0};
    }
    const size_t row_bytes = w.row_bytes();
    const uint8_t* wdata = w.data.as<uint8_t>();
    const uint16_t* wscales = w.scales.as<uint16_t>();
    const int64_t nb = K / QK;

    // Cache blocking: a thread takes a block of weight rows small enough to stay in L2 (~128 KiB) and runs
    // every token tile over it, so each weight byte comes from DRAM once per matmul.
    const int64_t per_thread = (R + n_threads - 1) / n_threads;
    const int64_t fit = std::max<int64_t>(4, int64_t((128 << 10) / std::max<size_t>(row_bytes, 1)));
    const int64_t row_block = T == 1 ? per_thread : std::min(per_thread, fit);
    const int64_t n_blocks = (R + row_block - 1) / row_block;
    constexpr int64_t TOKEN_TILE = 64;

#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
        const int64_t r0 = blk * row_block, r1 = std::min(R, r0 + row_block);
        for (int64_t t0 = 0; t0 < T; t0 += TOKEN_TILE) {
            const int64_t t1 = std::min(T, t0 + TOKEN_TILE);
            for (int64_t r = r0; r < r1; ++r) {
                const uint8_t* wrow = wdata + size_t(r) * row_bytes;
                for (int64_t t = t0; t < t1; t += MAX_NT) {
                    const int nt = int(std::min<int64_t>(MAX_NT, t1 - t));
                    ActRows xt = x;
                    xt.q = static_cast<const uint8_t*>(x.q) + t * K * (quant ? 1 : 4);
                    if (quant) { xt.d = x.d + t * nb; xt.s = x.s + t * nb; }
                    float* out = y + t * ldy + r;
                    switch (w.type) {
                        case WType::F32: k.dot_f32(K, reinterpret_cast<const float*>(wrow), xt, nt, out, ldy); break;
                        case WType::BF16: k.dot_bf16(K, reinterpret_cast<const uint16_t*>(wrow), xt, nt, out, ldy); break;
                        case WType::Q8_0: k.dot_q8_0(K, wrow, wscales + r * nb, xt, nt, out, ldy); break;
                        case WType::Q4_0: k.dot_q4_0(K, wrow, wscales + r * nb, xt, nt, out, ldy); break;
                        case WType::F16: break;  // never a matmul weight (rejected at load)
                    }
                }
            }
        }
    }
}

void rmsnorm(const float* x, const float* g, float* y, int64_t rows, int64_t n, float eps, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * n;
        float* yr = y + r * n;
        double ss = 0.0;  // f64 sum: one rounding for the mean square, the same at every thread count
        for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
        const float inv = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
        for (int64_t i = 0; i < n; ++i) yr[i] = g[i] * (xr[i] * inv);
    }
}

void rope(float* x, int64_t T, int64_t n_heads, int64_t hd, const float* cs, int n_threads) {
    const int64_t half = hd / 2;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (T > 1)
    for (int64_t t = 0; t < T; ++t) {
        const float* c = cs + t * hd;
        const float* s = c + half;
        for (int64_t h = 0; h < n_heads; ++h) {
            float* v = x + (t * n_heads + h) * hd;
            for (int64_t i = 0; i < half; ++i) {
                const float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i] + a * s[i];
            }
        }
    }
}

void swiglu(const float* g, const float* u, float* h, int64_t n, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void embed_row(const Matrix& w, int64_t row, float* out) {
    const int64_t K = w.cols;
    const uint8_t* base = w.data.as<uint8_t>() + size_t(row) * w.row_bytes();
    const uint16_t* sc = w.scales.as<uint16_t>() + row * w.blocks_per_row();
    switch (w.type) {
        case WType::F32: std::memcpy(out, base, size_t(K) * 4); break;
        case WType::BF16:
        case WType::F16: {
            const uint16_t* p = reinterpret_cast<const uint16_t*>(base);
            for (int64_t i = 0; i < K; ++i) out[i] = w.type == WType::BF16 ? bf16_to_f32(p[i]) : f16_to_f32(p[i]);
            break;
        }
        case WType::Q8_0:
            for (int64_t i = 0; i < K; ++i) out[i] = f16_to_f32(sc[i / QK]) * float(int8_t(base[i] ^ 0x80u));
            break;
        case WType::Q4_0:
            for (int64_t i = 0; i < K; ++i)
                out[i] = f16_to_f32(sc[i / QK]) * float(q4_code(base, K / QK, i / QK, int(i % QK)) - 8);
            break;
    }
}

size_t KVLayout::k_tile_bytes() const {
    const size_t e = size_t(hd) * KV_TILE;
    return type == WType::F32 ? e * 4 : type == WType::F16 ? e * 2 : e + size_t(hd / QK) * KV_TILE * 2;
}

size_t KVLayout::v_row_bytes() const {
    return type == WType::F32 ? size_t(hd) * 4 : type == WType::F16 ? size_t(hd) * 2 : size_t(hd / QK) * sizeof(block_q8_0);
}

void kv_store(const KernelTable& k, const KVLayout& kv, int64_t pos, const float* key, const float* value,
              uint8_t* ktiles, uint8_t* vrows) {
    const int64_t hd = kv.hd, jj = pos % KV_TILE;
    uint8_t* tile = ktiles + size_t(pos / KV_TILE) * kv.k_tile_bytes();
    uint8_t* vrow = vrows + size_t(pos) * kv.v_row_bytes();
    if (kv.type == WType::F32) {
        float* t = reinterpret_cast<float*>(tile);
        for (int64_t d = 0; d < hd; ++d) t[d * KV_TILE + jj] = key[d];
        std::memcpy(vrow, value, size_t(hd) * 4);
    } else if (kv.type == WType::F16) {
        uint16_t h[256];  // keys go through the vector conversion in pieces, then into their column
        uint16_t* t = reinterpret_cast<uint16_t*>(tile);
        for (int64_t d0 = 0; d0 < hd; d0 += 256) {
            const int64_t n = std::min<int64_t>(256, hd - d0);
            k.f32_to_f16(n, key + d0, h);
            for (int64_t d = 0; d < n; ++d) t[(d0 + d) * KV_TILE + jj] = h[d];
        }
        k.f32_to_f16(hd, value, reinterpret_cast<uint16_t*>(vrow));
    } else {
        const int64_t nb = hd / QK;
        int8_t* codes = reinterpret_cast<int8_t*>(tile);
        uint16_t* scales = reinterpret_cast<uint16_t*>(tile + size_t(hd) * KV_TILE);
        for (int64_t b = 0; b < nb; ++b) {
            block_q8_0 blk;
            quantize_row_q8_0_ref(key + b * QK, &blk, QK);
            scales[b * KV_TILE + jj] = blk.d;
            for (int e = 0; e < QK; ++e) codes[(b * QK + e) * KV_TILE + jj] = blk.qs[e];
        }
        quantize_row_q8_0_ref(value, reinterpret_cast<block_q8_0*>(vrow), hd);
    }
}

size_t attend_scratch_floats(int64_t nq, int64_t hd) { return size_t(2 * ATT_KEYS * hd + nq * ATT_KEYS + 2 * nq); }

void attend(const KernelTable& k, const KVLayout& kv, int64_t nq, const float* q, const int32_t* limit,
            const uint8_t* ktiles, const uint8_t* vrows, float* scratch, float* out) {
    const int64_t hd = kv.hd;
    float* kt = scratch;
    float* v = kt + ATT_KEYS * hd;
    float* s = v + ATT_KEYS * hd;
    float* m = s + nq * ATT_KEYS;
    float* l = m + nq;
    int64_t L = 0;
    for (int64_t u = 0; u < nq; ++u) {
        L = std::max<int64_t>(L, limit[u]);
        m[u] = -INFINITY;
        l[u] = 0.0f;
    }
    std::fill(out, out + nq * hd, 0.0f);
    const float scale = 1.0f / std::sqrt(float(hd));
    for (int64_t j0 = 0; j0 < L; j0 += ATT_KEYS) {
        const int64_t nk = std::min<int64_t>(ATT_KEYS, L - j0);
        k.kv_to_f32(int(kv.type), hd, nk, ktiles + size_t(j0 / KV_TILE) * kv.k_tile_bytes(),
                    vrows + size_t(j0) * kv.v_row_bytes(), kt, v);
        k.attn_block(nq, hd, q, limit, j0, nk, kt, v, scale, s, m, l, out);
    }
    for (int64_t u = 0; u < nq; ++u) {
        const float inv = 1.0f / l[u];
        for (int64_t d = 0; d < hd; ++d) out[u * hd + d] *= inv;
    }
}

}  // namespace l32
