// bindings.cpp — pybind11 module `llama32_native._core`: argument conversion and GIL release only.
// Contract: no model logic here. l32::Error becomes _core.CoreError, a subclass of llama32_native.errors.EngineError
// and of ValueError (docs/ERRORS.md); Ctrl-C during a forward surfaces as KeyboardInterrupt through the interrupt
// check between layers. The kernel-level test and benchmark entry points are in testing.cpp (`_core.testing`).
#include <cstring>
#include <memory>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "bindings.h"
#include "cpu_features.h"
#include "dispatch.h"
#include "formats.h"
#include "model.h"

namespace py = pybind11;
using namespace l32;

namespace l32 {

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
        case WType::Q4_0:
        case WType::Q4_1:
        case WType::IQ4_NL:
            L32_CHECK(last % QK == 0, std::string(wtype_name(t)) + " rows must be a multiple of 32 wide");
            return size_t(n / QK) * plain_block_bytes(t);
    }
    return 0;
}

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

}  // namespace l32

namespace {

using i32_array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

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

// The schema as Python sees it: [(name, shape tuple, "matrix" | "vector")].
py::list specs_to_python(const std::vector<TensorSpec>& specs) {
    py::list out;
    for (const TensorSpec& s : specs)
        out.append(py::make_tuple(s.name, py::tuple(py::cast(s.shape)), s.kind == TensorKind::Matrix ? "matrix" : "vector"));
    return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "llama32_native C++ core";
    // CoreError(EngineError, ValueError): an l32.Error like every exception of the package, and still a ValueError
    // (bad input reaching the core) for callers that catch that.
    const py::object engine_error = py::module_::import("llama32_native.errors").attr("EngineError");
    py::dict ns;
    ns["__module__"] = "llama32_native._core";
    ns["__doc__"] = "The C++ core refused an input or an operation (the message says why).";
    const py::object core_error = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(&PyType_Type))(
        "CoreError", py::make_tuple(engine_error, py::handle(PyExc_ValueError)), ns);
    m.attr("CoreError") = core_error;
    static PyObject* core_error_type = core_error.inc_ref().ptr();  // the module keeps it alive; so does this
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Error& e) {
            PyErr_SetString(core_error_type, e.what());
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

    m.def("tensor_specs", [](const py::dict& cfg) {
        const Config c = config_from_dict(cfg);
        c.validate();
        return specs_to_python(tensor_specs(c));
    }, py::arg("config"), "The tensor schema of a config: [(name, shape, 'matrix' | 'vector')], GGUF names, GGUF order.");

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
                 // The in-memory data in a portable form: plain ggml blocks for the quantized types, elements otherwise.
                 const TensorSpec* spec = e.spec(name);
                 if (spec && spec->kind == TensorKind::Vector) {
                     const std::vector<float>& v = e.vector(name);
                     py::array_t<float> a(py::ssize_t(v.size()));
                     std::memcpy(a.mutable_data(), v.data(), v.size() * 4);
                     return py::make_tuple("f32", a);
                 }
                 const Matrix& mat = e.matrix(name);
                 const std::string kind = wtype_name(mat.type);
                 if (mat.quantized()) {
                     const size_t bs = plain_block_bytes(mat.type);
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
        .def("tensor_specs", [](const Engine& e) { return specs_to_python(e.tensor_specs()); })
        .def_property("threads", &Engine::n_threads, &Engine::set_threads)
        .def_property_readonly("n_ctx", &Engine::n_ctx)
        .def_property_readonly("isa", [](const Engine& e) { return std::string(e.kernels().name); })
        .def_property_readonly("weight_bytes", &Engine::weight_bytes)
        .def_property_readonly("kv_bytes", &Engine::kv_bytes);

    register_testing(m);
}
