// dispatch.cpp — picks the kernel table once, from cpu_features() and the LLAMA32_NATIVE_ISA override.
// Contract: the only file that knows every ISA; a forced ISA the CPU lacks, or a table with a required entry unset,
// is an error (l32::Error), never a SIGILL or a null call.
#include "dispatch.h"

#include <cstdlib>
#include <utility>

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

std::vector<const char*> missing_kernels(const KernelTable& t) {
    // Each entry by name; a new KernelTable entry must be added here (the size check below fails until it is).
    static_assert(sizeof(KernelTable) == 14 * sizeof(void*), "KernelTable changed: update missing_kernels()");
    const std::pair<const char*, bool> required[] = {
        {"name", t.name != nullptr},
        {"dot_f32", t.dot_f32 != nullptr},
        {"dot_bf16", t.dot_bf16 != nullptr},
        {"gemm_q8_0", t.gemm_q8_0 != nullptr},
        {"gemm_q4_0", t.gemm_q4_0 != nullptr},
        {"gemm_q4_1", t.gemm_q4_1 != nullptr},
        {"gemm_iq4_nl", t.gemm_iq4_nl != nullptr},
        // gemm_f32, gemm_bf16: optional (nullptr: matmul uses dot_f32 / dot_bf16)
        {"kv_to_f32", t.kv_to_f32 != nullptr},
        {"attn_block", t.attn_block != nullptr},
        {"quantize_act", t.quantize_act != nullptr},
        {"f32_to_f16", t.f32_to_f16 != nullptr},
        {"silu_mul", t.silu_mul != nullptr},
    };
    std::vector<const char*> missing;
    for (const auto& e : required)
        if (!e.second) missing.push_back(e.first);
    return missing;
}

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
            std::string missing;
            for (const char* m : missing_kernels(*e.table)) missing += std::string(missing.empty() ? "" : ", ") + m;
            if (!missing.empty()) throw Error("the " + isa + " kernel table lacks: " + missing);
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
