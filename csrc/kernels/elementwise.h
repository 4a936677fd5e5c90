// kernels/elementwise.h — KernelTable::silu_mul as a plain loop, the reference body; the scalar, AVX2 and NEON tables
// use it as it is (avx512.cpp has a vector exp).
#pragma once

#include <cmath>
#include <cstdint>

namespace l32 {

static inline void silu_mul_body(int64_t n, const float* g, const float* u, float* h) {
    for (int64_t i = 0; i < n; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace l32
