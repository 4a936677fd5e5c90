// formats.cpp — reference (scalar) quantizers and the plain-block <-> split-layout conversions.
// Contract: these define the bit patterns; SIMD quantizers and the NumPy reference must match them exactly.
#include "formats.h"

#include <cmath>

namespace l32 {

const char* wtype_name(WType t) {
    switch (t) {
        case WType::F32: return "f32";
        case WType::BF16: return "bf16";
        case WType::Q8_0: return "q8_0";
        case WType::Q4_0: return "q4_0";
        case WType::F16: return "f16";
    }
    return "?";
}

WType wtype_from_name(const std::string& name) {
    if (name == "f32") return WType::F32;
    if (name == "bf16") return WType::BF16;
    if (name == "q8_0") return WType::Q8_0;
    if (name == "q4_0") return WType::Q4_0;
    if (name == "f16") return WType::F16;
    throw Error("unknown weight type '" + name + "' (expected f32, f16, bf16, q8_0 or q4_0)");
}

size_t Matrix::row_bytes() const {
    switch (type) {
        case WType::F32: return size_t(cols) * 4;
        case WType::BF16:
        case WType::F16: return size_t(cols) * 2;
        case WType::Q8_0:
        case WType::Q4_0: break;  // panels, not rows
    }
    return 0;
}

size_t Matrix::data_bytes() const {
    if (quantized()) return size_t(panels() * blocks_per_row()) * panel_block_bytes();
    return row_bytes() * size_t(rows);
}

void quantize_row_q8_0_ref(const float* x, block_q8_0* y, int64_t n) {
    for (int64_t b = 0; b < n / QK; ++b) {
        const float* xb = x + b * QK;
        float amax = 0.0f;
        for (int j = 0; j < QK; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < QK; ++j) y[b].qs[j] = int8_t(std::nearbyint(xb[j] * id));
    }
}

void quantize_row_q4_0_ref(const float* x, block_q4_0* y, int64_t n) {
    for (int64_t b = 0; b < n / QK; ++b) {
        const float* xb = x + b * QK;
        float amax = 0.0f, m = 0.0f;  // m: the signed value of largest magnitude (first one wins)
        for (int j = 0; j < QK; ++j) {
            if (std::fabs(xb[j]) > amax) { amax = std::fabs(xb[j]); m = xb[j]; }
        }
        const float d = m / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < QK / 2; ++j) {
            float q0 = std::nearbyint(xb[j] * id) + 8.0f;
            float q1 = std::nearbyint(xb[j + QK / 2] * id) + 8.0f;
            int i0 = int(std::fmin(15.0f, std::fmax(0.0f, q0)));
            int i1 = int(std::fmin(15.0f, std::fmax(0.0f, q1)));
            y[b].qs[j] = uint8_t(i0 | (i1 << 4));
        }
    }
}

void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t n) {
    for (int64_t b = 0; b < n / QK; ++b) {
        const float d = f16_to_f32(x[b].d);
        for (int j = 0; j < QK; ++j) y[b * QK + j] = d * float(x[b].qs[j]);
    }
}

void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t n) {
    for (int64_t b = 0; b < n / QK; ++b) {
        const float d = f16_to_f32(x[b].d);
        for (int j = 0; j < QK / 2; ++j) {
            y[b * QK + j] = d * float(int(x[b].qs[j] & 0x0f) - 8);
            y[b * QK + j + QK / 2] = d * float(int(x[b].qs[j] >> 4) - 8);
        }
    }
}

void zero_panels(Matrix& m) {
    std::memset(m.data.ptr, 0, m.data_bytes());
    std::memset(m.scales.ptr, 0, m.scales_bytes());
}

// Where block b of row r starts in the codes (lane offset included), and the index of its scale.
static inline size_t code_offset(const Matrix& m, int64_t r, int64_t b) {
    const int64_t nb = m.blocks_per_row();
    return size_t((r / PANEL_ROWS) * nb + b) * m.panel_block_bytes() + size_t(r % PANEL_ROWS) * 4;
}
static inline size_t scale_index(const Matrix& m, int64_t r, int64_t b) {
    return size_t((r / PANEL_ROWS) * m.blocks_per_row() + b) * PANEL_ROWS + size_t(r % PANEL_ROWS);
}

void store_row(Matrix& m, int64_t r, const void* blocks) {
    uint8_t* codes = m.data.as<uint8_t>();
    uint16_t* scales = m.scales.as<uint16_t>();
    for (int64_t b = 0; b < m.blocks_per_row(); ++b) {
        uint8_t* dst = codes + code_offset(m, r, b);
        if (m.type == WType::Q8_0) {
            const block_q8_0& blk = static_cast<const block_q8_0*>(blocks)[b];
            scales[scale_index(m, r, b)] = blk.d;
            for (int k = 0; k < QK; ++k) dst[(k / 4) * 64 + k % 4] = uint8_t(blk.qs[k]) ^ 0x80u;  // q + 128
        } else {
            const block_q4_0& blk = static_cast<const block_q4_0*>(blocks)[b];
            scales[scale_index(m, r, b)] = blk.d;
            for (int c = 0; c < 4; ++c) std::memcpy(dst + c * 64, blk.qs + 4 * c, 4);
        }
    }
}

void load_row(const Matrix& m, int64_t r, void* blocks) {
    const uint8_t* codes = m.data.as<uint8_t>();
    const uint16_t* scales = m.scales.as<uint16_t>();
    for (int64_t b = 0; b < m.blocks_per_row(); ++b) {
        const uint8_t* src = codes + code_offset(m, r, b);
        if (m.type == WType::Q8_0) {
            block_q8_0& blk = static_cast<block_q8_0*>(blocks)[b];
            blk.d = scales[scale_index(m, r, b)];
            for (int k = 0; k < QK; ++k) blk.qs[k] = int8_t(src[(k / 4) * 64 + k % 4] ^ 0x80u);
        } else {
            block_q4_0& blk = static_cast<block_q4_0*>(blocks)[b];
            blk.d = scales[scale_index(m, r, b)];
            for (int c = 0; c < 4; ++c) std::memcpy(blk.qs + 4 * c, src + c * 64, 4);
        }
    }
}

void dequantize_row(const Matrix& m, int64_t r, float* out) {
    const int64_t nb = m.blocks_per_row();
    const int rr = int(r % PANEL_ROWS);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = m.data.as<uint8_t>() + size_t((r / PANEL_ROWS) * nb + b) * m.panel_block_bytes();
        const float d = f16_to_f32(m.scales.as<uint16_t>()[scale_index(m, r, b)]);
        for (int k = 0; k < QK; ++k)
            out[b * QK + k] = d * float(m.type == WType::Q8_0 ? panel_q8_value(blk, rr, k) : panel_q4_value(blk, rr, k));
    }
}

void unpack_rows(const Matrix& m, void* dst_blocks) {
    L32_CHECK(m.quantized(), "unpack_rows: not a quantized matrix");
    const size_t row = size_t(m.blocks_per_row()) * (m.type == WType::Q8_0 ? sizeof(block_q8_0) : sizeof(block_q4_0));
    for (int64_t r = 0; r < m.rows; ++r) load_row(m, r, static_cast<uint8_t*>(dst_blocks) + size_t(r) * row);
}

}  // namespace l32
