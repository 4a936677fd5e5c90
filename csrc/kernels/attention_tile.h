// kernels/attention_tile.h — the body of KernelTable::attn_tile, included by every kernel file so that each
// compiles these plain loops with its own ISA flags (the loops are written to auto-vectorize: unit stride over
// keys for the scores, over head_dim for the values; no horizontal reductions).
#pragma once

#include <cmath>
#include <cstdint>

namespace l32 {

// nq query vectors q[u * hd ...] attend over keys 0..limit[u]-1: kt is K transposed (hd rows of ldk floats),
// v is [keys][hd]. s: scratch of nq * lds floats; out[u * hd ...] = softmax(scale * q.K^T) V.
static inline void attn_tile_body(int64_t nq, int64_t hd, const float* q, const int32_t* limit, const float* kt,
                                  int64_t ldk, const float* v, float* s, int64_t lds, float scale, float* out) {
    constexpr int64_t JB = 256;  // keys per pass: a chunk of scores stays in L1 while hd rows of K^T stream by
    for (int64_t u = 0; u < nq; ++u) {
        const float* qu = q + u * hd;
        float* su = s + u * lds;
        const int64_t L = limit[u];
        for (int64_t j0 = 0; j0 < L; j0 += JB) {
            const int64_t j1 = j0 + JB < L ? j0 + JB : L;
            for (int64_t j = j0; j < j1; ++j) su[j] = 0.0f;
            for (int64_t d = 0; d < hd; ++d) {
                const float qd = qu[d] * scale;
                const float* kd = kt + d * ldk;
                for (int64_t j = j0; j < j1; ++j) su[j] += qd * kd[j];
            }
        }
        float mx = su[0];
        for (int64_t j = 1; j < L; ++j) mx = su[j] > mx ? su[j] : mx;
        float sum = 0.0f;
        for (int64_t j = 0; j < L; ++j) {
            su[j] = std::exp(su[j] - mx);
            sum += su[j];
        }
        const float inv = 1.0f / sum;
        float* ou = out + u * hd;
        for (int64_t d = 0; d < hd; ++d) ou[d] = 0.0f;
        for (int64_t j = 0; j < L; ++j) {
            const float p = su[j] * inv;
            const float* vj = v + j * hd;
            for (int64_t d = 0; d < hd; ++d) ou[d] += p * vj[d];
        }
    }
}

}  // namespace l32
