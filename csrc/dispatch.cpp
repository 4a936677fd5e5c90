// dispatch.cpp — picks the kernel table once, from cpu_features() and the LLAMA32_NATIVE_ISA override.
// Contract: the only file that knows every ISA; a forced ISA the CPU lacks is an error, never a SIGILL.
#include "dispatch.h"

#include <cstdlib>

#include "common.h"
#include "cpu_features.h"

namespace l32 {

namespace {
struct IsaEntry {
    const char* name;
    const KernelTable* table;
    bool (*supported)(const CpuFeatures&);
};

const IsaEntry kIsas[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {"avx512", &avx512::table,
     [](const CpuFeatures& f) {
         return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.fma && f.f16c;
     }},
    {"avx2", &avx2::table, [](const CpuFeatures& f) { return f.avx2 && f.fma && f.f16c; }},
#endif
#if defined(__aarch64__)
    {"neon", &neon::table, [](const CpuFeatures& f) { return f.neon && f.neon_dotprod; }},
#endif
    {"scalar", &scalar::table, [](const CpuFeatures&) { return true; }},
};
}  // namespace

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    for (const auto& e : kIsas)
        if (e.supported(cpu_features())) out.push_back(e.name);
    return out;
}

const KernelTable& kernel_table(const std::string& isa) {
    std::string known;
    for (const auto& e : kIsas) {
        if (isa == e.name) {
            if (!e.supported(cpu_features()))
                throw Error("ISA '" + isa + "' is not supported by this CPU (" + cpu_features().brand + ")");
            return *e.table;
        }
        known += std::string(known.empty() ? "" : ", ") + e.name;
    }
    throw Error("unknown ISA '" + isa + "' (this build knows: " + known + ")");
}

const KernelTable& active_kernels() {
    static const KernelTable& table = [] () -> const KernelTable& {
        const char* forced = std::getenv("LLAMA32_NATIVE_ISA");
        if (forced && *forced) return kernel_table(forced);
        return kernel_table(available_isas().front());
    }();
    return table;
}

}  // namespace l32
