// bindings.h — what the two files of the pybind11 module share: buffer checks and the testing submodule.
// Contract: argument conversion only; failures throw l32::Error (CoreError in Python).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>

#include "formats.h"

namespace l32 {

// Bytes of a tensor of type t and this shape (elements, or plain ggml blocks for the quantized types); throws Error on a
// negative or absurd size or a quantized row width that is not a multiple of 32.
size_t expected_bytes(WType t, const std::vector<int64_t>& shape);
// A C-contiguous buffer's pointer after checking it holds exactly `bytes` bytes.
const void* checked_buffer(const pybind11::buffer& b, size_t bytes, const std::string& what);

// Registers `_core.testing`: kernel-level entry points for the tests and benchmarks (testing.cpp).
void register_testing(pybind11::module_& m);

}  // namespace l32
