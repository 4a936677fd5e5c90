// kernels/attention_tile.h — the body of KernelTable::attn_tile, included by every kernel file so that each
// compiles these plain loops with its own ISA flags (the loops are written to auto-vectorize: unit stride over
// keys for the scores, over head_dim for the values; no horizontal reductions).
#pragma once

#include <cmath>
#include <cstdint>

namespace l32 {

// nq query vectors q[u * hd ...] attend over keys 0..limit[u]-1: kt is K transposed (hd rows of ldk floats, ldk a
// multiple of 16 and >= every limit), v is [keys][hd]. s: scratch of nq * lds floats; out[u * hd ...] =
// softmax(scale * q.K^T) V. Queries go QB at a time and keys/dims 16 at a time, so that the accumulators of a
// (4 x 16) block stay in registers while K^T rows or V rows stream by: one load feeds QB FMAs.
static inline void attn_tile_body(int64_t nq, int64_t hd, const float* q, const int32_t* limit, const float* kt,
                                  int64_t ldk, const float* v, float* s, int64_t lds, float scale, float* out) {
    constexpr int64_t QB = 4, W = 16;
    for (int64_t u0 = 0; u0 < nq; u0 += QB) {
        const int64_t ub = nq - u0 < QB ? nq - u0 : QB;
        int64_t lmax = 0;
        for (int64_t uu = 0; uu < ub; ++uu) lmax = limit[u0 + uu] > lmax ? limit[u0 + uu] : lmax;
        const float* qr[QB];
        for (int64_t uu = 0; uu < QB; ++uu) qr[uu] = q + (u0 + (uu < ub ? uu : ub - 1)) * hd;  // tail: repeat
        // scores: s[u][j] = scale * q_u . k_j, 16 keys x QB queries per register block
        for (int64_t j0 = 0; j0 < lmax; j0 += W) {
            float acc[QB][W] = {};
            for (int64_t d = 0; d < hd; ++d) {
                const float* kd = kt + d * ldk + j0;
                for (int64_t uu = 0; uu < QB; ++uu) {
                    const float qd = qr[uu][d];
                    for (int64_t jj = 0; jj < W; ++jj) acc[uu][jj] += qd * kd[jj];
                }
            }
            for (int64_t uu = 0; uu < ub; ++uu)
                for (int64_t jj = 0; jj < W; ++jj) s[(u0 + uu) * lds + j0 + jj] = acc[uu][jj] * scale;
        }
        // softmax per query over its own keys; probabilities of keys it must not see are 0 up to the block end
        const int64_t lpad = (lmax + W - 1) / W * W;
        for (int64_t uu = 0; uu < ub; ++uu) {
            float* su = s + (u0 + uu) * lds;
            const int64_t L = limit[u0 + uu];
            float mx = su[0];
            for (int64_t j = 1; j < L; ++j) mx = su[j] > mx ? su[j] : mx;
            float sum = 0.0f;
            for (int64_t j = 0; j < L; ++j) {
                su[j] = std::exp(su[j] - mx);
                sum += su[j];
            }
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j < L; ++j) su[j] *= inv;
            for (int64_t j = L; j < lpad; ++j) su[j] = 0.0f;
        }
        // out[u] = sum_j p[u][j] v_j, 16 dims x QB queries per register block
        const float* pr[QB];
        for (int64_t uu = 0; uu < QB; ++uu) pr[uu] = s + (u0 + (uu < ub ? uu : ub - 1)) * lds;
        for (int64_t d0 = 0; d0 < hd; d0 += W) {
            const int64_t w = hd - d0 < W ? hd - d0 : W;
            float acc[QB][W] = {};
            if (w == W) {
                for (int64_t j = 0; j < lmax; ++j) {
                    const float* vj = v + j * hd + d0;
                    for (int64_t uu = 0; uu < QB; ++uu) {
                        const float p = pr[uu][j];
                        for (int64_t dd = 0; dd < W; ++dd) acc[uu][dd] += p * vj[dd];
                    }
                }
            } else {  // head_dim not a multiple of 16
                for (int64_t j = 0; j < lmax; ++j)
                    for (int64_t uu = 0; uu < QB; ++uu)
                        for (int64_t dd = 0; dd < w; ++dd) acc[uu][dd] += pr[uu][j] * v[j * hd + d0 + dd];
            }
            for (int64_t uu = 0; uu < ub; ++uu)
                for (int64_t dd = 0; dd < w; ++dd) out[(u0 + uu) * hd + d0 + dd] = acc[uu][dd];
        }
    }
}

}  // namespace l32
