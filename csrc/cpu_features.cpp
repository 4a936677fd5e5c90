// cpu_features.cpp — cpuid + xgetbv on x86 (a feature counts only if the OS saves its registers),
// HWCAP on Linux/aarch64.
#include "cpu_features.h"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace l32 {

#if defined(__x86_64__) || defined(_M_X64)
static unsigned long long read_xcr0() {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<unsigned long long>(edx) << 32) | eax;
}

static CpuFeatures detect() {
    CpuFeatures f;
    unsigned int a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
    const unsigned int max_leaf = a;
    __get_cpuid(1, &a, &b, &c, &d);
    const bool osxsave = (c >> 27) & 1;
    const bool avx = (c >> 28) & 1;
    f.fma = (c >> 12) & 1;
    f.f16c = (c >> 29) & 1;
    const unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
    const bool os_ymm = (xcr0 & 0x6) == 0x6;
    const bool os_zmm = (xcr0 & 0xe6) == 0xe6;
    const bool os_amx = (xcr0 & (3ull << 17)) == (3ull << 17);  // XTILECFG + XTILEDATA
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        f.avx2 = avx && os_ymm && ((b >> 5) & 1);
        f.avx512f = os_zmm && ((b >> 16) & 1);
        f.avx512dq = os_zmm && ((b >> 17) & 1);
        f.avx512bw = os_zmm && ((b >> 30) & 1);
        f.avx512vl = os_zmm && ((b >> 31) & 1);
        f.avx512vnni = os_zmm && ((c >> 11) & 1);
        f.amx_bf16 = os_amx && ((d >> 22) & 1);
        f.amx_tile = os_amx && ((d >> 24) & 1);
        f.amx_int8 = os_amx && ((d >> 25) & 1);
        __cpuid_count(7, 1, a, b, c, d);
        f.avx_vnni = os_ymm && ((a >> 4) & 1);
        f.avx512bf16 = os_zmm && ((a >> 5) & 1);
    }
    f.fma = f.fma && os_ymm;
    f.f16c = f.f16c && os_ymm;
    char brand[49] = {0};
    if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
        for (unsigned int i = 0; i < 3; ++i) {
            __get_cpuid(0x80000002 + i, &a, &b, &c, &d);
            std::memcpy(brand + 16 * i, &a, 4);
            std::memcpy(brand + 16 * i + 4, &b, 4);
            std::memcpy(brand + 16 * i + 8, &c, 4);
            std::memcpy(brand + 16 * i + 12, &d, 4);
        }
    }
    f.brand = brand;
    while (!f.brand.empty() && f.brand.back() == ' ') f.brand.pop_back();
    return f;
}
#elif defined(__aarch64__)
static CpuFeatures detect() {
    CpuFeatures f;
    f.neon = true;  // Advanced SIMD is mandatory on AArch64
#if defined(__linux__)
    const unsigned long hw = getauxval(AT_HWCAP);
    f.neon_dotprod = (hw & HWCAP_ASIMDDP) != 0;
#ifdef HWCAP2_I8MM
    f.neon_i8mm = (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0;
#endif
#elif defined(__APPLE__)
    f.neon_dotprod = true;  // every Apple arm64 chip has it
#endif
    f.brand = "aarch64";
    return f;
}
#else
static CpuFeatures detect() { return CpuFeatures{}; }
#endif

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = detect();
    return f;
}

}  // namespace l32
