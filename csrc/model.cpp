// model.cpp — the tensor schema, weights in memory and the Llama 3.2 forward pass, one batched entry point.
#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "dispatch.h"
#include "ops.h"

namespace l32 {

static int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

void Config::validate() const {
    L32_CHECK(n_embd > 0 && n_layer > 0 && n_head > 0 && n_head_kv > 0 && head_dim > 0 && n_ff > 0 && n_vocab > 0,
              "config: every dimension must be positive");
    L32_CHECK(n_head % n_head_kv == 0, "config: n_head must be a multiple of n_head_kv");
    L32_CHECK(head_dim % 2 == 0, "config: head_dim must be even");
    L32_CHECK(int64_t(rope_inv_freq.size()) == head_dim / 2, "config: rope_inv_freq must have head_dim/2 entries");
    L32_CHECK(std::isfinite(rms_eps) && rms_eps > 0, "config: rms_eps must be positive");
}

// THE tensor schema: fn(name, shape, matrix, vector) for every tensor of a model of config c, with w's storage for
// it (exactly one of matrix / vector is non-null). w.layers must hold c.n_layer layers.
template <class Fn>
static void for_each_tensor(const Config& c, Weights& w, Fn&& fn) {
    const int64_t E = c.n_embd;
    fn("tok_embd", {c.n_vocab, E}, &w.tok_embd, nullptr);
    fn("output_norm", {E}, nullptr, &w.output_norm);
    if (!c.tie_word_embeddings) fn("output", {c.n_vocab, E}, &w.output, nullptr);
    for (int64_t i = 0; i < c.n_layer; ++i) {
        Layer& L = w.layers[size_t(i)];
        const std::string p = "blk." + std::to_string(i) + ".";
        fn(p + "attn_norm", {E}, nullptr, &L.attn_norm);
        fn(p + "attn_q", {c.q_dim(), E}, &L.wq, nullptr);
        fn(p + "attn_k", {c.kv_dim(), E}, &L.wk, nullptr);
        fn(p + "attn_v", {c.kv_dim(), E}, &L.wv, nullptr);
        fn(p + "attn_output", {E, c.q_dim()}, &L.wo, nullptr);
        fn(p + "ffn_norm", {E}, nullptr, &L.ffn_norm);
        fn(p + "ffn_gate", {c.n_ff, E}, &L.w_gate, nullptr);
        fn(p + "ffn_up", {c.n_ff, E}, &L.w_up, nullptr);
        fn(p + "ffn_down", {E, c.n_ff}, &L.w_down, nullptr);
    }
}

std::vector<TensorSpec> tensor_specs(const Config& c) {
    Weights w;
    w.layers.resize(size_t(c.n_layer));
    std::vector<TensorSpec> out;
    for_each_tensor(c, w, [&](std::string name, std::vector<int64_t> shape, Matrix* m, std::vector<float>*) {
        out.push_back({std::move(name), std::move(shape), m ? TensorKind::Matrix : TensorKind::Vector});
    });
    return out;
}

Engine::Engine(Config cfg, int64_t n_ctx, int64_t n_seq, WType kv_type, int n_threads)
    : cfg_(std::move(cfg)), k_(&active_kernels()), n_threads_(1) {
    cfg_.validate();
    set_threads(n_threads);
    L32_CHECK(n_ctx > 0 && n_ctx <= (int64_t(1) << 22), "context_length must be in [1, 4194304]");
    L32_CHECK(n_seq > 0 && n_seq <= 4096, "number of sequences must be in [1, 4096]");
    L32_CHECK(kv_type == WType::F32 || kv_type == WType::F16 || kv_type == WType::Q8_0,
              "kv_cache must be f32, f16 or q8_0");
    L32_CHECK(kv_type != WType::Q8_0 || cfg_.head_dim % QK == 0,
              "kv_cache q8_0 needs head_dim to be a multiple of 32 (it is " + std::to_string(cfg_.head_dim) + ")");
    w_.layers.resize(size_t(cfg_.n_layer));
    kv_.layout.type = kv_type;
    kv_.layout.hd = cfg_.head_dim;
    kv_.n_layer = cfg_.n_layer;
    kv_.n_seq = n_seq;
    kv_.n_head_kv = cfg_.n_head_kv;
    kv_.n_ctx = n_ctx;
    // checked sizes: streams * positions * bytes per position, in long double to catch overflow
    const long double streams = (long double)cfg_.n_layer * n_seq * cfg_.n_head_kv;
    const long double kbytes = streams * (kv_.capacity() / KV_TILE) * kv_.layout.k_tile_bytes();
    const long double vbytes = streams * kv_.capacity() * kv_.layout.v_row_bytes();
    L32_CHECK(kbytes + vbytes < (long double)(int64_t(1) << 46), "KV cache size overflows");
    // aligned_alloc does not touch the pages: RSS grows only with the positions actually written.
    kv_.k.resize(size_t(kbytes));
    kv_.v.resize(size_t(vbytes));
    for_each_tensor(cfg_, w_, [&](std::string name, std::vector<int64_t> shape, Matrix* m, std::vector<float>* v) {
        slot_index_[name] = slots_.size();
        TensorSlot s;
        s.spec = {std::move(name), std::move(shape), m ? TensorKind::Matrix : TensorKind::Vector};
        s.matrix = m;
        s.vector = v;
        slots_.push_back(std::move(s));
    });
}

const Engine::TensorSlot* Engine::slot(const std::string& name) const {
    const auto it = slot_index_.find(name);
    return it == slot_index_.end() ? nullptr : &slots_[it->second];
}

std::vector<TensorSpec> Engine::tensor_specs() const {
    std::vector<TensorSpec> out;
    for (const TensorSlot& s : slots_) out.push_back(s.spec);
    return out;
}

const TensorSpec* Engine::spec(const std::string& name) const {
    const TensorSlot* s = slot(name);
    return s ? &s->spec : nullptr;
}

void Engine::set_threads(int n) {
    L32_CHECK(n >= 1 && n <= 1024, "threads must be in [1, 1024]");
    n_threads_ = n;
}

// One source row (any format) as f32.
static void source_row_f32(WType src, const void* data, int64_t row, int64_t cols, float* out) {
    switch (src) {
        case WType::F32: std::memcpy(out, static_cast<const float*>(data) + row * cols, size_t(cols) * 4); break;
        case WType::F16: {
            const uint16_t* p = static_cast<const uint16_t*>(data) + row * cols;
            for (int64_t i = 0; i < cols; ++i) out[i] = f16_to_f32(p[i]);
            break;
        }
        case WType::BF16: {
            const uint16_t* p = static_cast<const uint16_t*>(data) + row * cols;
            for (int64_t i = 0; i < cols; ++i) out[i] = bf16_to_f32(p[i]);
            break;
        }
        case WType::Q8_0:
        case WType::Q4_0:
        case WType::Q4_1:
        case WType::IQ4_NL:
            dequantize_row_plain(src, static_cast<const uint8_t*>(data) + size_t(row * (cols / QK)) * plain_block_bytes(src),
                                 out, cols);
            break;
    }
}

void convert_matrix(Matrix& m, int64_t rows, int64_t cols, WType src, const void* data, WType target,
                    int n_threads) {
    L32_CHECK(target != WType::F16, "in-memory matrix type must be f32, bf16, q8_0, q4_0, q4_1 or iq4_nl");
    const bool quant_src = is_quantized(src);
    const bool quant_dst = is_quantized(target);
    L32_CHECK(!(quant_src || quant_dst) || cols % QK == 0,
              "width " + std::to_string(cols) + " is not a multiple of 32 (needed by " +
                  (quant_src ? wtype_name(src) : wtype_name(target)) + ")");
    m.type = target;
    m.rows = rows;
    m.cols = cols;
    m.data.resize(m.data_bytes());
    if (quant_dst) {
        m.scales.resize(m.scales_bytes());
        zero_panels(m);
    }
    const size_t row_bytes = m.row_bytes();
    const size_t plain_row = quant_dst ? size_t(cols / QK) * plain_block_bytes(target) : 0;
    uint8_t* dst = m.data.as<uint8_t>();

    // Rows convert independently; each thread keeps one f32 row and one row of plain blocks. Quantized rows of one
    // panel share cache lines but never bytes.
#pragma omp parallel num_threads(n_threads)
    {
        std::vector<float> tmp(static_cast<size_t>(cols));
        std::vector<uint8_t> blocks_buf(plain_row);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            if (src == target && quant_src) {  // plain blocks of the same type: stored as they are, bit for bit
                store_row(m, r, static_cast<const uint8_t*>(data) + size_t(r) * plain_row);
                continue;
            }
            if (src == target) {  // f32 -> f32, bf16 -> bf16: plain copy
                std::memcpy(dst + size_t(r) * row_bytes, static_cast<const uint8_t*>(data) + size_t(r) * row_bytes, row_bytes);
                continue;
            }
            source_row_f32(src, data, r, cols, tmp.data());
            if (quant_dst) {
                quantize_row_ref(target, tmp.data(), blocks_buf.data(), cols);
                store_row(m, r, blocks_buf.data());
            } else if (target == WType::F32) {
                std::memcpy(dst + size_t(r) * row_bytes, tmp.data(), size_t(cols) * 4);
            } else {  // BF16
                uint16_t* o = reinterpret_cast<uint16_t*>(dst + size_t(r) * row_bytes);
                for (int64_t i = 0; i < cols; ++i) o[i] = f32_to_bf16(tmp[size_t(i)]);
            }
        }
    }
}

void Engine::set_tensor(const std::string& name, WType src, const void* data, const std::vector<int64_t>& shape,
                        WType target) {
    L32_CHECK(!ready_, "tensors cannot be changed after finalize()");
    const auto it = slot_index_.find(name);
    L32_CHECK(it != slot_index_.end(), "unknown tensor name '" + name + "'");
    TensorSlot& s = slots_[it->second];
    const std::vector<int64_t>& want = s.spec.shape;
    if (s.vector) {
        const int64_t n = want[0];
        L32_CHECK(shape == want, "tensor " + name + ": expected shape [" + std::to_string(n) + "]");
        L32_CHECK(src == WType::F32 || src == WType::F16 || src == WType::BF16,
                  "tensor " + name + ": a norm weight must be f32, f16 or bf16");
        s.vector->assign(size_t(n), 0.0f);
        source_row_f32(src, data, 0, n, s.vector->data());
        s.set = true;
        return;
    }
    const int64_t rows = want[0], cols = want[1];
    L32_CHECK(shape == want,
              "tensor " + name + ": expected shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    try {
        convert_matrix(*s.matrix, rows, cols, src, data, target, n_threads_);
    } catch (const Error& e) {
        throw Error("tensor " + name + ": " + e.what());
    }
    s.set = true;
}

void Engine::finalize() {
    for (const TensorSlot& s : slots_) L32_CHECK(s.set, "missing tensor '" + s.spec.name + "'");
    ready_ = true;
}

const Matrix& Engine::matrix(const std::string& name) const {
    const TensorSlot* s = slot(name);
    L32_CHECK(s && s->matrix && s->set, "no matrix named '" + name + "'");
    return *s->matrix;
}

const std::vector<float>& Engine::vector(const std::string& name) const {
    const TensorSlot* s = slot(name);
    L32_CHECK(s && s->vector && s->set, "no vector named '" + name + "'");
    return *s->vector;
}

size_t Engine::weight_bytes() const {
    size_t total = 0;
    for (const TensorSlot& s : slots_)
        if (s.matrix) total += s.matrix->data.bytes + s.matrix->scales.bytes;
    return total;
}

// Causal GQA attention for the batch rows over the cache: q in st_.q, output in st_.att. Adjacent rows of one
// sequence (a prompt) form tiles of up to ATT_ROWS rows; a worker takes a (tile, KV head) pair and runs the
// tile's queries of that KV head's group (ATT_ROWS * G of them) through attend(), so that every key block is
// converted once for all of them. A decode step is a tile of one row: its G query heads share each read of K/V.
void Engine::attention(int64_t layer, const int32_t* pos, const int32_t* seq, int64_t n) {
    constexpr int64_t ATT_ROWS = 32;
    const int64_t H = cfg_.n_head, KH = cfg_.n_head_kv, hd = cfg_.head_dim, G = H / KH;
    std::vector<std::pair<int64_t, int64_t>> tiles;  // (first row, rows)
    for (int64_t i = 0; i < n;) {
        int64_t j = i + 1;
        while (j < n && j - i < ATT_ROWS && seq[j] == seq[i]) ++j;
        tiles.emplace_back(i, j - i);
        i = j;
    }
    const int64_t nq_max = ATT_ROWS * G;
    // per thread: queries and outputs [nq][hd], limits, attend()'s scratch
    const size_t per_thread = size_t(2 * nq_max * hd + nq_max) + attend_scratch_floats(nq_max, hd);
    st_.scratch.resize(size_t(n_threads_) * per_thread * 4);
    const float* q = st_.q.as<float>();
    float* att = st_.att.as<float>();

#pragma omp parallel for num_threads(n_threads_) schedule(dynamic, 1) collapse(2)
    for (int64_t ti = 0; ti < int64_t(tiles.size()); ++ti)
        for (int64_t kh = 0; kh < KH; ++kh) {
            float* qb = st_.scratch.as<float>() + size_t(thread_id()) * per_thread;
            float* ob = qb + nq_max * hd;
            int32_t* limit = reinterpret_cast<int32_t*>(ob + nq_max * hd);
            float* scratch = ob + nq_max * hd + nq_max;
            const int64_t i0 = tiles[size_t(ti)].first, m = tiles[size_t(ti)].second;
            for (int64_t r = 0; r < m; ++r)
                for (int64_t g = 0; g < G; ++g) {
                    std::memcpy(qb + (r * G + g) * hd, q + (i0 + r) * H * hd + (kh * G + g) * hd, size_t(hd) * 4);
                    limit[r * G + g] = pos[i0 + r] + 1;
                }
            attend(*k_, kv_.layout, m * G, qb, limit, kv_.ktiles(layer, seq[i0], kh), kv_.vrows(layer, seq[i0], kh),
                   scratch, ob);
            for (int64_t r = 0; r < m; ++r)
                std::memcpy(att + (i0 + r) * H * hd + kh * G * hd, ob + r * G * hd, size_t(G * hd) * 4);
        }
}

void Engine::forward(const int32_t* tokens, const int32_t* pos, const int32_t* seq, int64_t n,
                     const int32_t* out_rows, int64_t n_out, float* logits) {
    L32_CHECK(ready_, "the model is not fully loaded");
    L32_CHECK(n > 0, "forward: empty batch");
    for (int64_t i = 0; i < n; ++i) {
        L32_CHECK(tokens[i] >= 0 && tokens[i] < cfg_.n_vocab, "forward: token id " + std::to_string(tokens[i]) +
                                                                 " out of range [0, " + std::to_string(cfg_.n_vocab) + ")");
        L32_CHECK(pos[i] >= 0 && pos[i] < kv_.n_ctx, "forward: position " + std::to_string(pos[i]) +
                                                         " outside the context of " + std::to_string(kv_.n_ctx));
        L32_CHECK(seq[i] >= 0 && seq[i] < kv_.n_seq, "forward: sequence id " + std::to_string(seq[i]) + " out of range");
    }
    for (int64_t i = 0; i < n_out; ++i)
        L32_CHECK(out_rows[i] >= 0 && out_rows[i] < n, "forward: output row out of range");

    const Config& c = cfg_;
    const int64_t d = c.n_embd, qd = c.q_dim(), kvd = c.kv_dim(), hd = c.head_dim, F = c.n_ff;
    const int nt = n_threads_;
    const KernelTable& k = *k_;
    st_.x.resize(size_t(n * d) * 4);
    st_.xb.resize(size_t(n * std::max(d, qd)) * 4);
    st_.q.resize(size_t(n * qd) * 4);
    st_.k.resize(size_t(n * kvd) * 4);
    st_.v.resize(size_t(n * kvd) * 4);
    st_.att.resize(size_t(n * std::max(d, qd)) * 4);
    st_.hb.resize(size_t(n * F) * 4);
    st_.hb2.resize(size_t(n * F) * 4);
    st_.rope_cs.resize(size_t(n * hd) * 4);
    float* x = st_.x.as<float>();    // (n, d) residual stream
    float* xb = st_.xb.as<float>();  // (n, d) normed input of a block
    float* q = st_.q.as<float>();    // (n, n_head*hd)
    float* kk = st_.k.as<float>();   // (n, n_head_kv*hd)
    float* vv = st_.v.as<float>();   // (n, n_head_kv*hd)
    float* att = st_.att.as<float>();  // (n, n_head*hd) attention output
    float* hb = st_.hb.as<float>();    // (n, n_ff)
    float* hb2 = st_.hb2.as<float>();  // (n, n_ff)
    float* cs = st_.rope_cs.as<float>();  // (n, hd): cos[hd/2] then sin[hd/2]

    // h = E[t]
    for (int64_t i = 0; i < n; ++i) embed_row(w_.tok_embd, tokens[i], x + i * d);
    // RoPE angles once per row for all layers: phi = p * w'_i, the product in f32 as Hugging Face computes it
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < hd / 2; ++j) {
            const float phi = float(pos[i]) * c.rope_inv_freq[size_t(j)];
            cs[i * hd + j] = float(std::cos(double(phi)));
            cs[i * hd + hd / 2 + j] = float(std::sin(double(phi)));
        }

    MatmulInput in;
    for (int64_t l = 0; l < c.n_layer; ++l) {
        const Layer& L = w_.layers[size_t(l)];
        // x = RMSNorm(h; g_attn); q, k, v = Wq x, Wk x, Wv x (x quantized once for all three)
        rmsnorm(x, L.attn_norm.data(), xb, n, d, c.rms_eps, nt);
        in.prepare(k, xb, n, d, L.wq.quantized(), nt);
        matmul(k, L.wq, in, q, qd, nt);
        matmul(k, L.wk, in, kk, kvd, nt);
        matmul(k, L.wv, in, vv, kvd, nt);
        // RoPE on q and k; the cache keeps rotated keys
        rope(q, n, c.n_head, hd, cs, nt);
        rope(kk, n, c.n_head_kv, hd, cs, nt);
        // different (row, head) pairs write different tile columns and V rows
#pragma omp parallel for num_threads(nt) schedule(static) collapse(2) if (n > 1)
        for (int64_t i = 0; i < n; ++i)
            for (int64_t h = 0; h < c.n_head_kv; ++h)
                kv_store(k, kv_.layout, pos[i], kk + i * kvd + h * hd, vv + i * kvd + h * hd, kv_.ktiles(l, seq[i], h),
                         kv_.vrows(l, seq[i], h));
        // o = softmax(q k^T / sqrt(hd)) v per head, causal; h = h + Wo o
        attention(l, pos, seq, n);
        in.prepare(k, att, n, qd, L.wo.quantized(), nt);
        matmul(k, L.wo, in, xb, d, nt);
        for (int64_t i = 0; i < n * d; ++i) x[i] += xb[i];
        // h = h + Wdown(silu(Wgate x) * Wup x), x = RMSNorm(h; g_ffn)
        rmsnorm(x, L.ffn_norm.data(), xb, n, d, c.rms_eps, nt);
        in.prepare(k, xb, n, d, L.w_gate.quantized(), nt);
        matmul(k, L.w_gate, in, hb, F, nt);
        matmul(k, L.w_up, in, hb2, F, nt);
        swiglu(k, hb, hb2, hb, n * F, nt);
        in.prepare(k, hb, n, F, L.w_down.quantized(), nt);
        matmul(k, L.w_down, in, xb, d, nt);
        for (int64_t i = 0; i < n * d; ++i) x[i] += xb[i];
        if (interrupt_check) interrupt_check();
    }

    // logits = E_out RMSNorm(h; g_final), for the requested rows only
    for (int64_t i = 0; i < n_out; ++i) std::memcpy(att + i * d, x + int64_t(out_rows[i]) * d, size_t(d) * 4);
    rmsnorm(att, w_.output_norm.data(), xb, n_out, d, c.rms_eps, nt);
    const Matrix& out = cfg_.tie_word_embeddings ? w_.tok_embd : w_.output;
    in.prepare(k, xb, n_out, d, out.quantized(), nt);
    matmul(k, out, in, logits, c.n_vocab, nt);
}

}  // namespace l32
