// neon_check.cpp — differential test of every NEON kernel against the scalar table on random data.
// Build (cross): aarch64-linux-gnu-g++ -O2 -std=c++17 -Icsrc scripts/neon_check.cpp csrc/dispatch.cpp
//   csrc/cpu_features.cpp csrc/formats.cpp csrc/kernels/scalar.cpp csrc/kernels/neon.cpp -o neon_check
//   with -march=armv8.2-a+dotprod+fp16 on neon.cpp alone, as CMakeLists.txt does (scripts/qemu_isa.sh --neon).
// Run: qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu ./neon_check   (scripts/qemu_isa.sh does both)
// The tables come through dispatch.cpp's kernel_table(), which checks the CPU features and that every required
// entry is set. Exit status 0 when every case is within tolerance (quantize_act and f32_to_f16 bit-exact).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "common.h"
#include "dispatch.h"
#include "formats.h"
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
    ActRows float_rows() const { return ::l32::float_rows(f.data(), n); }
    ActRows quant_rows() const { return ::l32::quant_rows(q.data(), d.data(), s.data(), n, n / 32); }
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

// Two panels of random codes and scales (every byte pattern is a valid code) against nt activation rows; outputs at
// row stride ldy = 37 so that a kernel writing past its rows would be caught.
void check_quant_gemm(const KernelTable& k, int64_t n, int nt, int rows) {
    const Acts a = make_acts(n, nt);
    const int64_t nb = n / 32;
    const std::vector<uint16_t> sc = f16_scales(2 * nb * PANEL_ROWS);
    const std::vector<uint8_t> q8 = randbytes(2 * nb * 512), q4 = randbytes(2 * nb * 256);
    constexpr int64_t LDY = 37;
    float mag = 0;
    for (int64_t i = 0; i < n * nt; ++i) mag += std::fabs(a.f[i]) * 128 * 0.05f;
    for (bool q4_0 : {false, true}) {
        std::vector<float> got(GEMM_NT * LDY, 7.0f), want(GEMM_NT * LDY, 7.0f);
        const auto fn = q4_0 ? &KernelTable::gemm_q4_0 : &KernelTable::gemm_q8_0;
        const uint8_t* codes = q4_0 ? q4.data() : q8.data();
        (k.*fn)(nb, codes, sc.data(), a.quant_rows(), nt, rows, got.data(), LDY);
        (scalar::table.*fn)(nb, codes, sc.data(), a.quant_rows(), nt, rows, want.data(), LDY);
        for (int t = 0; t < GEMM_NT; ++t)
            for (int r = 0; r < LDY; ++r)
                expect_close(q4_0 ? "gemm_q4_0" : "gemm_q8_0", n, nt, got[t * LDY + r], want[t * LDY + r], mag);
    }
}

// Q4_1 / IQ4_NL (kernels.h): bit-exact with scalar, on random codes and scales (Q4_1: two planes, signed mins).
void check_q4x_gemm(const KernelTable& k, int64_t n, int nt, int rows) {
    const Acts a = make_acts(n, nt);
    const int64_t nb = n / 32;
    std::vector<uint16_t> sc = f16_scales(2 * nb * PANEL_ROWS * 2);
    for (size_t i = 0; i < sc.size(); i += 3) sc[i] ^= 0x8000u;  // some negative scales and mins
    const std::vector<uint8_t> codes = randbytes(2 * nb * 256);
    constexpr int64_t LDY = 37;
    for (bool q4_1 : {false, true}) {
        std::vector<float> got(GEMM_NT * LDY, 7.0f), want(GEMM_NT * LDY, 7.0f);
        const auto fn = q4_1 ? &KernelTable::gemm_q4_1 : &KernelTable::gemm_iq4_nl;
        (k.*fn)(nb, codes.data(), sc.data(), a.quant_rows(), nt, rows, got.data(), LDY);
        (scalar::table.*fn)(nb, codes.data(), sc.data(), a.quant_rows(), nt, rows, want.data(), LDY);
        expect_equal_bytes(q4_1 ? "gemm_q4_1" : "gemm_iq4_nl", n, got.data(), want.data(), got.size() * 4);
    }
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

// kv_to_f32 (exact: bit-equal to scalar) on random tiles of every cache type, then attn_block over the key blocks of
// a causal query tile; m, l and the unnormalized output must agree with scalar.
void check_attention(const KernelTable& k, int64_t nq, int64_t hd, int64_t L) {
    const int64_t ntile = (L + KV_TILE - 1) / KV_TILE;
    const std::vector<float> q = randn(nq * hd);
    std::vector<int32_t> limit(nq);
    for (int64_t u = 0; u < nq; ++u) limit[u] = int32_t(std::max<int64_t>(1, L - (nq - 1 - u) * 13));
    for (int type : {int(WType::F32), int(WType::F16), int(WType::Q8_0)}) {
        if (type == int(WType::Q8_0) && hd % 32) continue;
        const size_t e = size_t(hd) * KV_TILE;
        const size_t kt_bytes = type == int(WType::F32) ? e * 4 : type == int(WType::F16) ? e * 2 : e + hd / 32 * KV_TILE * 2;
        const size_t v_bytes = type == int(WType::F32) ? hd * 4 : type == int(WType::F16) ? hd * 2 : hd / 32 * 34;
        std::vector<uint8_t> kt = randbytes(ntile * kt_bytes), vr = randbytes(ntile * KV_TILE * v_bytes);
        // random bytes are fine for int8 codes; floats and f16 scales get finite values
        const auto fill_f16 = [&](uint8_t* p, int64_t n) {
            const std::vector<float> f = randn(n, 0.5f);
            scalar::table.f32_to_f16(n, f.data(), reinterpret_cast<uint16_t*>(p));
        };
        if (type == int(WType::F32)) {
            std::vector<float> f = randn(kt.size() / 4); std::memcpy(kt.data(), f.data(), kt.size());
            f = randn(vr.size() / 4); std::memcpy(vr.data(), f.data(), vr.size());
        } else if (type == int(WType::F16)) {
            fill_f16(kt.data(), kt.size() / 2);
            fill_f16(vr.data(), vr.size() / 2);
        } else {
            for (int64_t t = 0; t < ntile; ++t) fill_f16(kt.data() + t * kt_bytes + e, hd / 32 * KV_TILE);
            for (int64_t r = 0; r < ntile * KV_TILE * hd / 32; ++r) fill_f16(vr.data() + r * 34, 1);
        }
        std::vector<float> kf1(ATT_KEYS * hd), kf2(ATT_KEYS * hd), vf1(ATT_KEYS * hd), vf2(ATT_KEYS * hd);
        std::vector<float> s(nq * ATT_KEYS), m1(nq, -INFINITY), m2(nq, -INFINITY), l1(nq, 0), l2(nq, 0);
        std::vector<float> o1(nq * hd, 0), o2(nq * hd, 0);
        for (int64_t j0 = 0; j0 < L; j0 += ATT_KEYS) {
            const int64_t nk = std::min<int64_t>(ATT_KEYS, L - j0);
            const uint8_t* kp = kt.data() + j0 / KV_TILE * kt_bytes;
            const uint8_t* vp = vr.data() + j0 * v_bytes;
            k.kv_to_f32(type, hd, nk, kp, vp, kf1.data(), vf1.data());
            scalar::table.kv_to_f32(type, hd, nk, kp, vp, kf2.data(), vf2.data());
            const int64_t nkt = (nk + KV_TILE - 1) / KV_TILE * KV_TILE;
            expect_equal_bytes("kv_to_f32.k", nk, kf1.data(), kf2.data(), size_t(nkt * hd) * 4);
            expect_equal_bytes("kv_to_f32.v", nk, vf1.data(), vf2.data(), size_t(nk * hd) * 4);
            k.attn_block(nq, hd, q.data(), limit.data(), j0, nk, kf2.data(), vf2.data(), 0.125f, s.data(), m1.data(), l1.data(), o1.data());
            scalar::table.attn_block(nq, hd, q.data(), limit.data(), j0, nk, kf2.data(), vf2.data(), 0.125f, s.data(), m2.data(), l2.data(), o2.data());
        }
        for (int64_t u = 0; u < nq; ++u) {
            expect_close("attn_block.m", L, int(nq), m1[u], m2[u], std::fabs(m2[u]) + 1);
            expect_close("attn_block.l", L, int(nq), l1[u], l2[u], l2[u]);
            for (int64_t d = 0; d < hd; ++d) expect_close("attn_block.o", L, int(nq), o1[u * hd + d], o2[u * hd + d], l2[u] * 4);
        }
    }
}

void check_silu(const KernelTable& k, int64_t n) {
    const std::vector<float> g = randn(n, 8.0f), u = randn(n);
    std::vector<float> h1(n), h2(n);
    k.silu_mul(n, g.data(), u.data(), h1.data());
    scalar::table.silu_mul(n, g.data(), u.data(), h2.data());
    for (int64_t i = 0; i < n; ++i) expect_close("silu_mul", n, 1, h1[i], h2[i], std::fabs(h2[i]));
}

void check_f16(const KernelTable& k, int64_t n) {
    const std::vector<float> b = randn(n);
    std::vector<uint16_t> bh(n), bh2(n);
    k.f32_to_f16(n, b.data(), bh.data());
    scalar::table.f32_to_f16(n, b.data(), bh2.data());
    expect_equal_bytes("f32_to_f16", n, bh.data(), bh2.data(), 2 * n);
}

}  // namespace

int main() {
    const KernelTable* table = nullptr;
    try {
        table = &kernel_table("neon");
        kernel_table("scalar");
    } catch (const Error& e) {
        std::printf("FAIL kernel_table: %s\n", e.what());
        return 1;
    }
    const KernelTable& k = *table;
    std::printf("kernel table: %s vs %s\n", k.name, scalar::table.name);
    {  // the completeness check behind kernel_table(): a required entry left unset is named, an optional one is not
        KernelTable broken = k;
        broken.attn_block = nullptr;
        broken.gemm_f32 = nullptr;
        const std::vector<const char*> missing = missing_kernels(broken);
        ++checks;
        if (!missing_kernels(k).empty() || missing.size() != 1 || std::strcmp(missing[0], "attn_block") != 0) {
            ++failures;
            std::printf("FAIL missing_kernels\n");
        }
    }
    for (int rep = 0; rep < 3; ++rep) {  // each case 3x: a fault of one execution still shows
        for (int64_t n : {1, 7, 15, 16, 17, 63, 64, 65, 1000, 4097})
            for (int nt = 1; nt <= MAX_NT; ++nt) check_float_dots(k, n, nt);
        for (int64_t n : {32, 64, 96, 2048, 8192})
            for (int nt = 1; nt <= GEMM_NT; ++nt)
                for (int rows : {1, 5, 8, 13, 16, 17, 29, 32}) {
                    check_quant_gemm(k, n, nt, rows);
                    check_q4x_gemm(k, n, nt, rows);
                }
        for (int64_t n : {32, 64, 96, 2048, 4096}) check_quantize(k, n);
        for (int64_t n : {1, 3, 7, 8, 9, 16, 63, 64, 65, 128, 4097}) check_f16(k, n);
        for (int64_t n : {1, 17, 1000}) check_silu(k, n);
        for (int64_t nq : {1, 3, 4, 7, 96})
            for (int64_t hd : {32, 48, 64, 128})
                for (int64_t L : {1, 17, 128, 300}) check_attention(k, nq, hd, L);
    }
    std::printf("%d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
