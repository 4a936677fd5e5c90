// testing.cpp — the `_core.testing` submodule: kernel-level entry points for the tests (one ISA's kernels on given
// data, the reference quantizers) and the benchmarks (random data, timing loops).
// Contract: not used by the model; every input is checked (l32::Error), the timing loops release the GIL.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "dispatch.h"
#include "formats.h"
#include "model.h"
#include "ops.h"

namespace py = pybind11;

namespace l32 {

namespace {

using i32_array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;

// Builds a matrix from plain data with the engine's own conversion.
Matrix make_matrix(const std::string& src, const py::buffer& data, int64_t rows, int64_t cols, const std::string& target) {
    const WType st = wtype_from_name(src);
    const void* p = checked_buffer(data, expected_bytes(st, {rows, cols}), "weights");
    Matrix m;
    convert_matrix(m, rows, cols, st, p, wtype_from_name(target), 1);
    return m;
}

}  // namespace

void register_testing(py::module_& core) {
    py::module_ m = core.def_submodule("testing", "Kernel-level entry points for the tests and benchmarks");
    m.def("kernel_matmul",
          [](const std::string& isa, const std::string& src, const py::buffer& w, int64_t rows, int64_t cols,
             const std::string& target, const f32_array& x) {
              const KernelTable& k = kernel_table(isa);
              L32_CHECK(x.ndim() == 2 && x.shape(1) == cols, "x must be [T, cols]");
              Matrix mat = make_matrix(src, w, rows, cols, target);
              const int64_t T = x.shape(0);
              py::array_t<float> y({T, rows});
              MatmulInput in;
              const bool quant = mat.quantized();
              in.prepare(k, x.data(), T, cols, quant, 1);
              matmul(k, mat, in, y.mutable_data(), rows, 1);
              return y;
          },
          py::arg("isa"), py::arg("src"), py::arg("w"), py::arg("rows"), py::arg("cols"), py::arg("target"), py::arg("x"));
    m.def("bench_matmul",
          [](const std::string& isa, const std::string& wtype, int64_t rows, int64_t cols, int64_t T, int iters,
             int n_threads) {
              // The kernel lab's timer: seconds per matmul (median of iters) on random data, GIL released.
              const KernelTable& k = kernel_table(isa);
              std::vector<float> w(size_t(rows * cols)), x(size_t(T * cols)), y(size_t(T * rows));
              uint32_t state = 12345;
              for (auto* v : {&w, &x})
                  for (float& f : *v) { state = state * 1664525u + 1013904223u; f = float(int32_t(state >> 8) % 2001) / 1000.0f; }
              Matrix mat;
              convert_matrix(mat, rows, cols, WType::F32, w.data(), wtype_from_name(wtype), n_threads);
              const bool quant = mat.quantized();
              std::vector<double> times;
              py::gil_scoped_release nogil;
              MatmulInput in;
              for (int it = 0; it < iters; ++it) {
                  const auto t0 = std::chrono::steady_clock::now();
                  in.prepare(k, x.data(), T, cols, quant, n_threads);
                  matmul(k, mat, in, y.data(), rows, n_threads);
                  times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
              }
              std::sort(times.begin(), times.end());
              return times[times.size() / 2];
          });
    m.def("bench_bandwidth",
          [](int64_t mib, int n_threads, int iters) {
              // Read bandwidth in bytes/s (median of iters): every thread sums its share of one large buffer.
              const int64_t n = mib * (int64_t(1) << 20) / 8;
              AlignedBuffer buf(size_t(n) * 8);
              int64_t* p = buf.as<int64_t>();
              py::gil_scoped_release nogil;
#pragma omp parallel for num_threads(n_threads) schedule(static)
              for (int64_t i = 0; i < n; ++i) p[i] = i;
              std::vector<double> times;
              volatile int64_t sink = 0;
              for (int it = 0; it < iters; ++it) {
                  const auto t0 = std::chrono::steady_clock::now();
                  int64_t total = 0;
#pragma omp parallel for num_threads(n_threads) schedule(static) reduction(+ : total)
                  for (int64_t i = 0; i < n; ++i) total += p[i];
                  times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
                  sink = sink + total;
              }
              std::sort(times.begin(), times.end());
              return double(n) * 8.0 / times[times.size() / 2];
          });
    m.def("kernel_quantize_act", [](const std::string& isa, const f32_array& x) {
        const KernelTable& k = kernel_table(isa);
        const int64_t n = x.size();
        L32_CHECK(n % QK == 0, "length must be a multiple of 32");
        py::array_t<int8_t> q(n);
        py::array_t<float> d(n / QK), s(n / QK);
        k.quantize_act(n, x.data(), q.mutable_data(), d.mutable_data(), s.mutable_data());
        return py::make_tuple(q, d, s);
    });
    m.def("kernel_silu_mul", [](const std::string& isa, const f32_array& g, const f32_array& u) {
        const KernelTable& k = kernel_table(isa);
        L32_CHECK(g.size() == u.size(), "g and u must have the same length");
        py::array_t<float> h(g.size());
        k.silu_mul(g.size(), g.data(), u.data(), h.mutable_data());
        return h;
    });
    m.def("quantize", [](const std::string& kind, const f32_array& x) {
        // The reference quantizers: x [rows, cols] f32 -> plain ggml blocks as bytes [rows, cols/32*block]
        L32_CHECK(x.ndim() == 2 && x.shape(1) % QK == 0, "x must be [rows, cols] with cols a multiple of 32");
        const int64_t rows = x.shape(0), cols = x.shape(1);
        const WType t = wtype_from_name(kind);
        L32_CHECK(is_quantized(t), "quantize: kind must be q8_0, q4_0, q4_1 or iq4_nl");
        py::array_t<uint8_t> out({rows, cols / QK * int64_t(plain_block_bytes(t))});
        for (int64_t r = 0; r < rows; ++r) quantize_row_ref(t, x.data() + r * cols, out.mutable_data(r, 0), cols);
        return out;
    });
    m.def("kernel_attend", [](const std::string& isa, const std::string& kv_type, const f32_array& q,
                              const i32_array& limit,
                              const f32_array& keys, const f32_array& values) {
        // attend() on one ISA: keys/values [L, hd] stored into a one-stream cache of kv_type, queries [nq, hd]
        const KernelTable& k = kernel_table(isa);
        L32_CHECK(q.ndim() == 2 && keys.ndim() == 2 && values.ndim() == 2 && limit.ndim() == 1,
                  "q, keys, values must be 2-D and limit 1-D");
        const int64_t nq = q.shape(0), hd = q.shape(1), L = keys.shape(0);
        L32_CHECK(keys.shape(1) == hd && values.shape(0) == L && values.shape(1) == hd && limit.shape(0) == nq,
                  "shapes of q, limit, keys, values disagree");
        KVLayout kv;
        kv.type = wtype_from_name(kv_type);
        kv.hd = hd;
        L32_CHECK(kv.type == WType::F32 || kv.type == WType::F16 || (kv.type == WType::Q8_0 && hd % QK == 0),
                  "kv_type must be f32, f16 or q8_0 (head_dim a multiple of 32)");
        for (int64_t u = 0; u < nq; ++u) L32_CHECK(limit.at(u) >= 1 && limit.at(u) <= L, "limit out of range");
        const int64_t cap = (L + KV_TILE - 1) / KV_TILE * KV_TILE;
        AlignedBuffer kt, vr, scratch;
        kt.resize(size_t(cap / KV_TILE) * kv.k_tile_bytes());
        vr.resize(size_t(cap) * kv.v_row_bytes());
        std::memset(kt.as<uint8_t>(), 0xff, kt.bytes);  // unwritten slots hold NaN patterns: they must not leak
        std::memset(vr.as<uint8_t>(), 0xff, vr.bytes);
        for (int64_t j = 0; j < L; ++j)
            kv_store(k, kv, j, keys.data() + j * hd, values.data() + j * hd, kt.as<uint8_t>(), vr.as<uint8_t>());
        scratch.resize(attend_scratch_floats(nq, hd) * 4);
        py::array_t<float> out({nq, hd});
        {
            py::gil_scoped_release release;
            attend(k, kv, nq, q.data(), limit.data(), kt.as<uint8_t>(), vr.as<uint8_t>(), scratch.as<float>(),
                   out.mutable_data());
        }
        return out;
    });
}

}  // namespace l32
