// ops.cpp — operators over the active kernels; owns the OpenMP loops and the cache blocking of matmul.
#include "ops.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

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

// Quantized weights: one kernel call per (GEMM_ROWS weight rows, tile of GEMM_NT activation rows) over groups of
// consecutive panels. Decode (T <= GEMM_NT) streams each panel once, one group per thread (a static split): a
// contiguous run for the prefetchers. For more rows a group small enough to stay in L2 (~256 KiB) sees every activation tile before the
// next group, so each weight byte comes from DRAM once per matmul and an activation tile stays in L1 across the
// group; the groups are handed out dynamically, since on a shared machine one thread often runs slower and a static
// split made the other wait at every matmul's barrier.
static void matmul_quant(const KernelTable& k, const Matrix& w, const MatmulInput& in, float* y, int64_t ldy,
                         int n_threads) {
    const int64_t K = w.cols, T = in.T, nb = K / QK, n_panels = w.panels();
    const auto gemm = w.type == WType::Q4_0 ? k.gemm_q4_0 : w.type == WType::Q4_1 ? k.gemm_q4_1
                      : w.type == WType::IQ4_NL ? k.gemm_iq4_nl : k.gemm_q8_0;
    const int64_t panel_scales = nb * PANEL_ROWS * scale_planes(w.type);  // f16 scales per panel
    const size_t panel_bytes = size_t(nb) * w.panel_block_bytes();
    const uint8_t* codes = w.data.as<uint8_t>();
    const uint16_t* scales = w.scales.as<uint16_t>();
    const ActRows x = quant_rows(in.acts.qs.as<int8_t>(), in.acts.d.as<float>(), in.acts.sum.as<float>(), K, nb);
    const int64_t per_thread = (n_panels + n_threads - 1) / n_threads;
    const int64_t fit = std::max<int64_t>(GEMM_ROWS / PANEL_ROWS, int64_t((256 << 10) / panel_bytes));
    const bool decode = T <= GEMM_NT;
    const int64_t group = decode ? per_thread : std::min(per_thread, fit);
    const int64_t n_groups = (n_panels + group - 1) / group;
    // Decode streams one panel a call (two DRAM streams, codes and scales); prefill, with the panels in L2, gives the
    // kernel GEMM_ROWS so that one activation broadcast feeds two panels.
    const int64_t call_panels = decode ? 1 : GEMM_ROWS / PANEL_ROWS;
    const auto run_group = [&](int64_t g) {
        const int64_t p0 = g * group, p1 = std::min(n_panels, p0 + group);
        for (int64_t t = 0; t < T; t += GEMM_NT) {
            const ActRows xt = rows_from(x, t);
            const int nt = int(std::min<int64_t>(GEMM_NT, T - t));
            for (int64_t p = p0; p < p1; p += call_panels) {
                const int64_t r0 = p * PANEL_ROWS;
                const int64_t rows = std::min({call_panels * PANEL_ROWS, (p1 - p) * PANEL_ROWS, w.rows - r0});
                gemm(nb, codes + size_t(p) * panel_bytes, scales + p * panel_scales, xt, nt, int(rows),
                     y + t * ldy + r0, ldy);
            }
        }
    };
    if (decode) {  // static: a dynamic loop let one thread take both runs when the other woke late
#pragma omp parallel for num_threads(n_threads) schedule(static)
        for (int64_t g = 0; g < n_groups; ++g) run_group(g);
    } else {
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
        for (int64_t g = 0; g < n_groups; ++g) run_group(g);
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
            const ActRows xt = float_rows(in.x + t * K, K);
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
    if (w.quantized()) return matmul_quant(k, w, in, y, ldy, n_threads);
    const bool float_gemm = w.type == WType::F32 ? k.gemm_f32 != nullptr : w.type == WType::BF16 && k.gemm_bf16;
    if (float_gemm && T >= GEMM_MIN_ROWS) return matmul_float(k, w, in, y, ldy, n_threads);
    const size_t row_bytes = w.row_bytes();
    const uint8_t* wdata = w.data.as<uint8_t>();

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
                    const ActRows xt = float_rows(in.x + t * K, K);
                    float* out = y + t * ldy + r;
                    if (w.type == WType::F32)
                        k.dot_f32(K, reinterpret_cast<const float*>(wrow), xt, nt, out, ldy);
                    else
                        k.dot_bf16(K, reinterpret_cast<const uint16_t*>(wrow), xt, nt, out, ldy);
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

void swiglu(const KernelTable& k, const float* g, const float* u, float* h, int64_t n, int n_threads) {
    constexpr int64_t CHUNK = 16384;
    const int64_t n_chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n_chunks > 4)
    for (int64_t c = 0; c < n_chunks; ++c) k.silu_mul(std::min(CHUNK, n - c * CHUNK), g + c * CHUNK, u + c * CHUNK, h + c * CHUNK);
}

void embed_row(const Matrix& w, int64_t row, float* out) {
    const int64_t K = w.cols;
    if (w.quantized()) return dequantize_row(w, row, out);
    const uint8_t* base = w.data.as<uint8_t>() + size_t(row) * w.row_bytes();
    if (w.type == WType::F32) {
        std::memcpy(out, base, size_t(K) * 4);
        return;
    }
    const uint16_t* p = reinterpret_cast<const uint16_t*>(base);
    for (int64_t i = 0; i < K; ++i) out[i] = w.type == WType::BF16 ? bf16_to_f32(p[i]) : f16_to_f32(p[i]);
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
