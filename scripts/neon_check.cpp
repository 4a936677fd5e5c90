// neon_check.cpp — differential test of every NEON kernel against the scalar table on random data.
// Build (cross): aarch64-linux-gnu-g++ -O2 -std=c++17 -march=armv8.2-a+dotprod+fp16 -Icsrc
//   scripts/neon_check.cpp csrc/kernels/neon.cpp csrc/kernels/scalar.cpp csrc/formats.cpp -o neon_check
// Run: qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu ./neon_check   (scripts/qemu_isa.sh does both)
// Exit status 0 when every case is within tolerance (quantize_act and f32_to_f16 must be bit-exact).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels.h"

using namespace l32;

namespace {

std::mt19937 rng(1234);
int failures = 0, checks = 0;

std::vector<float> randn(int64_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

std::vector<uint8_t> randbytes(int64_t n) {
    std::uniform_int_distribution<int> d(0, 255);
    std::vector<uint8_t> v(n);
    for (auto& x : v) x = uint8_t(d(rng));
    return v;
}

void expect_close(const char* what, int64_t n, int nt, float got, float want, float mag) {
    ++checks;
    const float tol = 2e-5f * mag + 1e-6f;
    if (!(std::fabs(got - want) <= tol)) {
        ++failures;
        if (failures < 20) std::printf("FAIL %s n=%lld nt=%d got=%.9g want=%.9g tol=%.3g\n", what, (long long)n, nt, got, want, tol);
    }
}

void expect_equal_bytes(const char* what, int64_t n, const void* a, const void* b, size_t bytes) {
    ++checks;
    if (std::memcmp(a, b, bytes) != 0) {
        ++failures;
        std::printf("FAIL %s n=%lld: not bit-exact\n", what, (long long)n);
    }
}

struct Acts {  // nt activation rows, float and int8-quantized (by the scalar quantizer)
    int64_t n;
    std::vector<float> f, d, s;
    std::vector<int8_t> q;
    ActRows float_rows() const { return {f.data(), nullptr, nullptr, n, 0}; }
    ActRows quant_rows() const { return {q.data(), d.data(), s.data(), n, n / 32}; }
};

Acts make_acts(int64_t n, int nt) {
    Acts a{n, randn(n * nt), {}, {}, {}};
    if (n % 32 == 0) {
        a.q.resize(n * nt); a.d.resize(n / 32 * nt); a.s.resize(n / 32 * nt);
        for (int t = 0; t < nt; ++t)
            scalar::table.quantize_act(n, a.f.data() + t * n, a.q.data() + t * n, a.d.data() + t * n / 32, a.s.data() + t * n / 32);
    }
    return a;
}

std::vector<uint16_t> f16_scales(int64_t nb) {
    std::vector<float> s = randn(nb, 0.02f);
    for (auto& x : s) x = std::fabs(x) + 1e-3f;
    std::vector<uint16_t> h(nb);
    scalar::table.f32_to_f16(nb, s.data(), h.data());
    return h;
}

void check_float_dots(const KernelTable& k, int64_t n, int nt) {
    const Acts a = make_acts(n, nt);
    const std::vector<float> w = randn(n);
    std::vector<uint16_t> wb(n);
    for (int64_t i = 0; i < n; ++i) { uint32_t u; std::memcpy(&u, &w[i], 4); wb[i] = uint16_t(u >> 16); }
    float got[3 * MAX_NT], want[3 * MAX_NT];
    const auto compare = [&](const char* what) {  // got/want hold rows t at stride 3
        for (int t = 0; t < nt; ++t) {
            float mag = 0;
            for (int64_t i = 0; i < n; ++i) mag += std::fabs(w[i] * a.f[t * n + i]);
            expect_close(what, n, nt, got[3 * t], want[3 * t], mag);
        }
    };
    k.dot_f32(n, w.data(), a.float_rows(), nt, got, 3);
    scalar::table.dot_f32(n, w.data(), a.float_rows(), nt, want, 3);
    compare("dot_f32");
    k.dot_bf16(n, wb.data(), a.float_rows(), nt, got, 3);
    scalar::table.dot_bf16(n, wb.data(), a.float_rows(), nt, want, 3);
    compare("dot_bf16");
}

void check_quant_dots(const KernelTable& k, int64_t n, int nt) {
    const Acts a = make_acts(n, nt);
    const std::vector<uint16_t> wd = f16_scales(n / 32);
    const std::vector<uint8_t> q8 = randbytes(n), q4 = randbytes(n / 2);
    float got[3 * MAX_NT], want[3 * MAX_NT];
    float mag = 0;
    for (int64_t i = 0; i < n * nt; ++i) mag += std::fabs(a.f[i]) * 128 * 0.05f;
    k.dot_q8_0(n, q8.data(), wd.data(), a.quant_rows(), nt, got, 3);
    scalar::table.dot_q8_0(n, q8.data(), wd.data(), a.quant_rows(), nt, want, 3);
    for (int t = 0; t < nt; ++t) expect_close("dot_q8_0", n, nt, got[3 * t], want[3 * t], mag);
    k.dot_q4_0(n, q4.data(), wd.data(), a.quant_rows(), nt, got, 3);
    scalar::table.dot_q4_0(n, q4.data(), wd.data(), a.quant_rows(), nt, want, 3);
    for (int t = 0; t < nt; ++t) expect_close("dot_q4_0", n, nt, got[3 * t], want[3 * t], mag);
}

void check_quantize(const KernelTable& k, int64_t n) {
    std::vector<float> x = randn(n, 3.0f);
    if (n >= 64) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
    std::vector<int8_t> q1(n), q2(n);
    std::vector<float> d1(n / 32), d2(n / 32), s1(n / 32), s2(n / 32);
    k.quantize_act(n, x.data(), q1.data(), d1.data(), s1.data());
    scalar::table.quantize_act(n, x.data(), q2.data(), d2.data(), s2.data());
    expect_equal_bytes("quantize_act.q", n, q1.data(), q2.data(), n);
    expect_equal_bytes("quantize_act.d", n, d1.data(), d2.data(), 4 * (n / 32));
    for (int64_t b = 0; b < n / 32; ++b) expect_close("quantize_act.s", n, 1, s1[b], s2[b], std::fabs(s2[b]) + d2[b] * 32);
}

void check_attention(const KernelTable& k, int64_t n) {
    const std::vector<float> a = randn(n), b = randn(n);
    std::vector<uint16_t> bh(n), bh2(n);
    k.f32_to_f16(n, b.data(), bh.data());
    scalar::table.f32_to_f16(n, b.data(), bh2.data());
    expect_equal_bytes("f32_to_f16", n, bh.data(), bh2.data(), 2 * n);
    float mag = 0;
    for (int64_t i = 0; i < n; ++i) mag += std::fabs(a[i] * b[i]);
    expect_close("dot_f32_f32", n, 1, k.dot_f32_f32(n, a.data(), b.data()), scalar::table.dot_f32_f32(n, a.data(), b.data()), mag);
    expect_close("dot_f32_f16", n, 1, k.dot_f32_f16(n, a.data(), bh2.data()), scalar::table.dot_f32_f16(n, a.data(), bh2.data()), mag + 1e-3f * n);
    std::vector<float> y1 = randn(n), y2 = y1;
    k.axpy_f32(n, 0.37f, a.data(), y1.data());
    scalar::table.axpy_f32(n, 0.37f, a.data(), y2.data());
    for (int64_t i = 0; i < n; ++i) expect_close("axpy_f32", n, 1, y1[i], y2[i], std::fabs(y2[i]) + 1);
    y1 = randn(n); y2 = y1;
    k.axpy_f16(n, -1.25f, bh2.data(), y1.data());
    scalar::table.axpy_f16(n, -1.25f, bh2.data(), y2.data());
    for (int64_t i = 0; i < n; ++i) expect_close("axpy_f16", n, 1, y1[i], y2[i], std::fabs(y2[i]) + 1);
}

}  // namespace

int main() {
    const KernelTable& k = neon::table;
    std::printf("kernel table: %s vs %s\n", k.name, scalar::table.name);
    for (int rep = 0; rep < 3; ++rep) {  // RELIABILITY.md K1: each case 3x
        for (int64_t n : {1, 7, 15, 16, 17, 63, 64, 65, 1000, 4097})
            for (int nt = 1; nt <= MAX_NT; ++nt) check_float_dots(k, n, nt);
        for (int64_t n : {32, 64, 96, 2048, 4096, 8192})
            for (int nt = 1; nt <= MAX_NT; ++nt) check_quant_dots(k, n, nt);
        for (int64_t n : {32, 64, 96, 2048, 4096}) check_quantize(k, n);
        for (int64_t n : {1, 3, 7, 8, 9, 16, 63, 64, 65, 128, 4097}) check_attention(k, n);
    }
    std::printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
