// bindings.cpp — pybind11 module `llama32_native._core`: argument conversion and GIL release only.
// Contract: no model logic here. l32::Error becomes _core.CoreError (a ValueError); Ctrl-C during a forward
// surfaces as KeyboardInterrupt through the interrupt check between layers.
#include <algorithm>
#include <chrono>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_features.h"
#include "dispatch.h"
#include "formats.h"
#include "model.h"
#include "ops.h"

namespace py = pybind11;
using namespace l32;

namespace {

using i32_array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;

size_t expected_bytes(WType t, const std::vector<int64_t>& shape) {
    long double n = 1;
    for (int64_t s : shape) {
        L32_CHECK(s >= 0, "negative dimension");
        n *= (long double)s;
    }
    L32_CHECK(n < (long double)(int64_t(1) << 50), "tensor too large");
    const int64_t last = shape.empty() ? 1 : shape.back();
    switch (t) {
        case WType::F32: return size_t(n) * 4;
        case WType::F16:
        case WType::BF16: return size_t(n) * 2;
        case WType::Q8_0:
            L32_CHECK(last % QK == 0, "q8_0 rows must be a multiple of 32 wide");
            return size_t(n / QK) * sizeof(block_q8_0);
        case WType::Q4_0:
            L32_CHECK(last % QK == 0, "q4_0 rows must be a multiple of 32 wide");
            return size_t(n / QK) * sizeof(block_q4_0);
    }
    return 0;
}

// A C-contiguous buffer's pointer after checking it holds exactly `bytes` bytes.
const void* checked_buffer(const py::buffer& b, size_t bytes, const std::string& what) {
    py::buffer_info info = b.request();
    size_t total = size_t(info.itemsize);
    for (auto s : info.shape) total *= size_t(s);
    L32_CHECK(total == bytes, what + ": buffer holds " + std::to_string(total) + " bytes, expected " + std::to_string(bytes));
    ssize_t expect = info.itemsize;
    for (ssize_t i = info.ndim - 1; i >= 0; --i) {
        L32_CHECK(info.shape[size_t(i)] <= 1 || info.strides[size_t(i)] == expect, what + ": buffer must be C-contiguous");
        expect *= info.shape[size_t(i)];
    }
    return info.ptr;
}

Config config_from_dict(const py::dict& d) {
    Config c;
    c.n_embd = d["n_embd"].cast<int64_t>();
    c.n_layer = d["n_layer"].cast<int64_t>();
    c.n_head = d["n_head"].cast<int64_t>();
    c.n_head_kv = d["n_head_kv"].cast<int64_t>();
    c.head_dim = d["head_dim"].cast<int64_t>();
    c.n_ff = d["n_ff"].cast<int64_t>();
    c.n_vocab = d["n_vocab"].cast<int64_t>();
    c.rms_eps = d["rms_eps"].cast<float>();
    c.rope_inv_freq = d["rope_inv_freq"].cast<std::vector<float>>();
    c.tie_word_embeddings = d["tie_word_embeddings"].cast<bool>();
    return c;
}

// Builds a matrix from plain data with the engine's own conversion (for kernel tests).
Matrix make_matrix(const std::string& src, const py::buffer& data, int64_t rows, int64_t cols, const std::string& target) {
    const WType st = wtype_from_name(src);
    const void* p = checked_buffer(data, expected_bytes(st, {rows, cols}), "weights");
    Matrix m;
    convert_matrix(m, rows, cols, st, p, wtype_from_name(target), 1);
    return m;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "llama32_native C++ core";
    static py::exception<Error> core_error(m, "CoreError", PyExc_ValueError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error& e) {
            py::set_error(core_error, e.what());
        }
    });

    active_kernels();  // choose the ISA now: a bad LLAMA32_NATIVE_ISA fails the import, clearly

    m.def("system_info", [] {
        const CpuFeatures& f = cpu_features();
        py::dict d;
        d["isa"] = active_kernels().name;
        d["available_isas"] = available_isas();
        d["cpu"] = f.brand;
#ifdef _OPENMP
        d["openmp"] = true;
        d["max_threads"] = omp_get_max_threads();
#else
        d["openmp"] = false;
        d["max_threads"] = 1;
#endif
        py::dict feats;
        feats["avx2"] = f.avx2; feats["fma"] = f.fma; feats["f16c"] = f.f16c;
        feats["avx512f"] = f.avx512f; feats["avx512bw"] = f.avx512bw; feats["avx512vl"] = f.avx512vl;
        feats["avx512dq"] = f.avx512dq; feats["avx512vnni"] = f.avx512vnni; feats["avx512bf16"] = f.avx512bf16;
        feats["avx_vnni"] = f.avx_vnni; feats["amx_tile"] = f.amx_tile; feats["amx_int8"] = f.amx_int8;
        feats["amx_bf16"] = f.amx_bf16; feats["neon"] = f.neon; feats["neon_dotprod"] = f.neon_dotprod;
        feats["neon_i8mm"] = f.neon_i8mm;
        d["features"] = feats;
        return d;
    });

    py::class_<Engine>(m, "Engine")
        .def(py::init([](const py::dict& cfg, int64_t n_ctx, int64_t n_seq, const std::string& kv, int n_threads) {
                 auto e = std::make_unique<Engine>(config_from_dict(cfg), n_ctx, n_seq, wtype_from_name(kv), n_threads);
                 e->interrupt_check = [] {
                     py::gil_scoped_acquire gil;
                     if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                 };
                 return e;
             }),
             py::arg("config"), py::arg("n_ctx"), py::arg("n_seq"), py::arg("kv_type"), py::arg("n_threads"))
        .def("set_tensor",
             [](Engine& e, const std::string& name, const std::string& src, const py::buffer& data,
                const std::vector<int64_t>& shape, const std::string& target) {
                 const WType st = wtype_from_name(src);
                 const void* p = checked_buffer(data, expected_bytes(st, shape), "tensor " + name);
                 const WType tt = wtype_from_name(target);
                 py::gil_scoped_release nogil;
                 std::lock_guard<std::mutex> lock(e.mutex());
                 e.set_tensor(name, st, p, shape, tt);
             })
        .def("finalize", &Engine::finalize)
        .def("forward",
             [](Engine& e, const i32_array& tokens, const i32_array& pos, const i32_array& seq, const i32_array& out_rows) {
                 const int64_t n = tokens.size();
                 L32_CHECK(tokens.ndim() == 1 && pos.size() == n && seq.size() == n,
                           "forward: tokens, positions and sequence ids must be 1-D and of one length");
                 const int64_t n_out = out_rows.size();
                 py::array_t<float> logits({n_out, e.config().n_vocab});
                 float* out = logits.mutable_data();
                 {
                     py::gil_scoped_release nogil;
                     std::lock_guard<std::mutex> lock(e.mutex());
                     e.forward(tokens.data(), pos.data(), seq.data(), n, out_rows.data(), n_out, out);
                 }
                 return logits;
             })
        .def("tensor",
             [](const Engine& e, const std::string& name) -> py::tuple {
                 // The in-memory data in a portable form: plain ggml blocks for q8_0/q4_0, elements otherwise.
                 int64_t dummy;
                 (void)dummy;
                 try {
                     const std::vector<float>& v = e.vector(name);
                     py::array_t<float> a(py::ssize_t(v.size()));
                     std::memcpy(a.mutable_data(), v.data(), v.size() * 4);
                     return py::make_tuple("f32", a);
                 } catch (const Error&) {
                 }
                 const Matrix& mat = e.matrix(name);
                 const std::string kind = wtype_name(mat.type);
                 if (mat.quantized()) {
                     const size_t bs = mat.type == WType::Q8_0 ? sizeof(block_q8_0) : sizeof(block_q4_0);
                     py::array_t<uint8_t> a({mat.rows, mat.blocks_per_row() * int64_t(bs)});
                     unpack_rows(mat, a.mutable_data());
                     return py::make_tuple(kind, a);
                 }
                 if (mat.type == WType::F32) {
                     py::array_t<float> a({mat.rows, mat.cols});
                     std::memcpy(a.mutable_data(), mat.data.ptr, size_t(mat.rows * mat.cols) * 4);
                     return py::make_tuple(kind, a);
                 }
                 py::array_t<uint16_t> a({mat.rows, mat.cols});
                 std::memcpy(a.mutable_data(), mat.data.ptr, size_t(mat.rows * mat.cols) * 2);
                 return py::make_tuple(kind, a);
             })
        .def("matrix_type", [](const Engine& e, const std::string& name) { return std::string(wtype_name(e.matrix(name).type)); })
        .def_property("threads", &Engine::n_threads, &Engine::set_threads)
        .def_property_readonly("n_ctx", &Engine::n_ctx)
        .def_property_readonly("n_seq", &Engine::n_seq)
        .def_property_readonly("isa", [](const Engine& e) { return std::string(e.kernels().name); })
        .def_property_readonly("weight_bytes", &Engine::weight_bytes)
        .def_property_readonly("kv_bytes", &Engine::kv_bytes);

    // ---- kernel-level entry points for the tests: run one ISA's kernels on given data ----
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
        L32_CHECK(t == WType::Q8_0 || t == WType::Q4_0, "quantize: kind must be q8_0 or q4_0");
        const size_t bs = t == WType::Q8_0 ? sizeof(block_q8_0) : sizeof(block_q4_0);
        py::array_t<uint8_t> out({rows, cols / QK * int64_t(bs)});
        for (int64_t r = 0; r < rows; ++r) {
            if (t == WType::Q8_0)
                quantize_row_q8_0_ref(x.data() + r * cols, reinterpret_cast<block_q8_0*>(out.mutable_data(r, 0)), cols);
            else
                quantize_row_q4_0_ref(x.data() + r * cols, reinterpret_cast<block_q4_0*>(out.mutable_data(r, 0)), cols);
        }
        return out;
    });
    m.def("kernel_attend", [](const std::string& isa, const std::string& kv_type, const f32_array& q,
                              const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& limit,
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
