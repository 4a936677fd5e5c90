// dispatch.h — the one place that chooses a kernel table for this CPU.
#pragma once

#include <string>
#include <vector>

#include "kernels.h"

namespace l32 {

// ISAs this CPU can run, best first (always ends with "scalar").
std::vector<std::string> available_isas();
// The table for a named ISA; throws Error if the name is unknown or the CPU cannot run it.
const KernelTable& kernel_table(const std::string& isa);
// The table in use: the best available, or LLAMA32_NATIVE_ISA if set. Chosen once.
const KernelTable& active_kernels();

}  // namespace l32
