// kernels/attention_tile.h — KernelTable::kv_to_f32 and ::attn_block as plain loops. Every kernel file includes this
// header and puts these functions in its table, so each compiles them with its own ISA flags (written to
// auto-vectorize: unit stride over keys for the scores, over head_dim for the values, no horizontal reductions).
// avx512.cpp has its own attn_block with explicit registers; the conversion is shared by all.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "../formats.h"
#include "../kernels.h"

namespace l32 {

// F16Row(n, x, y): n f16 values to f32, the ISA's vector conversion (exact).
template <void (*F16Row)(int64_t, const uint16_t*, float*)>
static inline void kv_to_f32_body(int kv_type, int64_t hd, int64_t nk, const uint8_t* ktiles, const uint8_t* vrows,
                                  float* kt, float* v) {
    const int64_t ntile = (nk + KV_TILE - 1) / KV_TILE, tile_elems = hd * KV_TILE;
    if (kv_type == int(WType::F32)) {
        std::memcpy(kt, ktiles, size_t(ntile * tile_elems) * 4);
        std::memcpy(v, vrows, size_t(nk * hd) * 4);
    } else if (kv_type == int(WType::F16)) {
        F16Row(ntile * tile_elems, reinterpret_cast<const uint16_t*>(ktiles), kt);
        F16Row(nk * hd, reinterpret_cast<const uint16_t*>(vrows), v);
    } else {  // Q8_0: a K tile is hd x 16 int8 codes, then (hd/32) x 16 f16 scales; a V row is hd/32 ggml blocks
        const int64_t nb = hd / QK;
        const size_t tile_bytes = size_t(tile_elems) + size_t(nb * KV_TILE) * 2;
        for (int64_t t = 0; t < ntile; ++t) {
            const int8_t* codes = reinterpret_cast<const int8_t*>(ktiles + size_t(t) * tile_bytes);
            const uint16_t* dh = reinterpret_cast<const uint16_t*>(codes + tile_elems);
            float d[KV_TILE];
            float* out = kt + t * tile_elems;
            for (int64_t b = 0; b < nb; ++b) {
                F16Row(KV_TILE, dh + b * KV_TILE, d);
                for (int64_t e = b * QK * KV_TILE; e < (b + 1) * QK * KV_TILE; e += KV_TILE)
                    for (int jj = 0; jj < KV_TILE; ++jj) out[e + jj] = float(codes[e + jj]) * d[jj];
            }
        }
        const block_q8_0* vb = reinterpret_cast<const block_q8_0*>(vrows);
        for (int64_t r = 0; r < nk * nb; ++r) {
            const float d = f16_to_f32(vb[r].d);
            for (int jj = 0; jj < QK; ++jj) v[r * QK + jj] = float(vb[r].qs[jj]) * d;
        }
    }
}

// Keys of the block that query u sees: j0 .. min(j0 + nk, limit) - 1.
static inline int64_t visible_keys(int32_t limit, int64_t j0, int64_t nk) {
    const int64_t c = int64_t(limit) - j0;
    return c < 0 ? 0 : (c > nk ? nk : c);
}

// Queries go QB at a time and keys/dims 16 at a time, so that the accumulators of a (4 x 16) block stay in
// registers while K^T tiles or V rows stream by: one load feeds QB FMAs.
static inline void attn_block_body(int64_t nq, int64_t hd, const float* q, const int32_t* limit, int64_t j0, int64_t nk,
                                   const float* kt, const float* v, float scale, float* s, float* m, float* l, float* o) {
    constexpr int64_t QB = 4, W = KV_TILE;
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
        // scores: s[u][j] = scale * q_u . k_j, one K tile (16 keys) x QB queries per register block
        for (int64_t j = 0; j < lmax; j += W) {
            const float* tile = kt + (j / W) * hd * W;
            float acc[QB][W] = {};
            for (int64_t d = 0; d < hd; ++d)
                for (int64_t uu = 0; uu < QB; ++uu) {
                    const float qd = qr[uu][d];
                    for (int64_t jj = 0; jj < W; ++jj) acc[uu][jj] += qd * tile[d * W + jj];
                }
            for (int64_t uu = ub - 1; uu >= 0; --uu)
                for (int64_t jj = 0; jj < W; ++jj) sr[uu][j + jj] = acc[uu][jj] * scale;
        }
        // online softmax: new max, rescale of the old sum and output by e^(m_old - m_new), probabilities of the
        // keys a query does not see are 0 up to lmax
        float corr[QB];
        for (int64_t uu = 0; uu < QB; ++uu) {
            corr[uu] = 1.0f;
            if (uu >= ub) continue;
            float* su = sr[uu];
            const int64_t c = vis[uu];
            for (int64_t j = c; j < lmax; ++j) su[j] = 0.0f;
            if (c == 0) continue;
            const int64_t u = u0 + uu;
            float mx = m[u];
            for (int64_t j = 0; j < c; ++j) mx = su[j] > mx ? su[j] : mx;
            float sum = 0.0f;
            for (int64_t j = 0; j < c; ++j) {
                su[j] = std::exp(su[j] - mx);
                sum += su[j];
            }
            corr[uu] = std::exp(m[u] - mx);
            l[u] = l[u] * corr[uu] + sum;
            m[u] = mx;
        }
        // o[u] = corr * o[u] + sum_j p[u][j] v_j, 16 dims x QB queries per register block
        for (int64_t d0 = 0; d0 < hd; d0 += W) {
            const int64_t w = hd - d0 < W ? hd - d0 : W;
            float acc[QB][W] = {};
            for (int64_t uu = 0; uu < ub; ++uu)
                for (int64_t dd = 0; dd < w; ++dd) acc[uu][dd] = corr[uu] * o[(u0 + uu) * hd + d0 + dd];
            if (w == W) {
                for (int64_t j = 0; j < lmax; ++j) {
                    const float* vj = v + j * hd + d0;
                    for (int64_t uu = 0; uu < QB; ++uu) {
                        const float p = sr[uu][j];
                        for (int64_t dd = 0; dd < W; ++dd) acc[uu][dd] += p * vj[dd];
                    }
                }
            } else {  // head_dim not a multiple of 16
                for (int64_t j = 0; j < lmax; ++j)
                    for (int64_t uu = 0; uu < QB; ++uu)
                        for (int64_t dd = 0; dd < w; ++dd) acc[uu][dd] += sr[uu][j] * v[j * hd + d0 + dd];
            }
            for (int64_t uu = 0; uu < ub; ++uu)
                for (int64_t dd = 0; dd < w; ++dd) o[(u0 + uu) * hd + d0 + dd] = acc[uu][dd];
        }
    }
}

}  // namespace l32
