// cpu_features.h — what the CPU (and the OS) can run, read once from cpuid/xgetbv or HWCAP.
#pragma once

#include <string>

namespace l32 {

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false;                         // + OS saves ymm
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;  // + OS saves zmm
    bool avx512vnni = false, avx512bf16 = false, avx_vnni = false;
    bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
    bool neon = false, neon_dotprod = false, neon_i8mm = false;
    std::string brand;
};

const CpuFeatures& cpu_features();

}  // namespace l32
