// vnni_peak.cpp — the int8 compute ceiling of one core: 12 independent vpdpbusd chains (no loads), GMAC/s.
// Build and run: g++ -O2 -mavx512f -mavx512bw -mavx512vnni bench/vnni_peak.cpp -o /tmp/vnni_peak && /tmp/vnni_peak
// (AVX-512 VNNI CPUs only.) bench/RESULTS.md ("Kernels") compares the int8 GEMM with it.
#include <immintrin.h>

#include <chrono>
#include <cstdio>

int main() {
    constexpr int CHAINS = 12;  // more than latency x throughput, so the dot units never wait
    __m512i acc[CHAINS];
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_set1_epi32(i);
    __m512i w = _mm512_set1_epi8(3);
    const __m512i x = _mm512_set1_epi8(5);
    const long steps = 20000000;
    const auto t0 = std::chrono::steady_clock::now();
    for (long n = 0; n < steps; ++n) {
#pragma GCC unroll 12
        for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], w, x);
        __asm__ volatile("" : "+v"(w));  // keeps the loop from being folded away
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int sink = 0;
    for (int i = 0; i < CHAINS; ++i) sink += _mm512_reduce_add_epi32(acc[i]);
    std::printf("vpdpbusd/s %.3g  int8 GMAC/s %.1f  (sink %d)\n", steps * CHAINS / s, steps * CHAINS * 64.0 / s / 1e9, sink);
    return 0;
}
