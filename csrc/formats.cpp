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
        case WType::Q8_0: return size_t(cols);
        case WType::Q4_0: return size_t(cols) / 2;
    }
    return 0;
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

void pack_q8_0_row(const block_q8_0* src, int64_t nb, uint8_t* codes, uint16_t* scales) {
    for (int64_t b = 0; b < nb; ++b) {
        scales[b] = src[b].d;
        for (int j = 0; j < QK; ++j) codes[b * QK + j] = uint8_t(src[b].qs[j]) ^ 0x80u;  // q + 128
    }
}

void pack_q4_0_row(const block_q4_0* src, int64_t nb, uint8_t* codes, uint16_t* scales) {
    for (int64_t b = 0; b < nb; ++b) scales[b] = src[b].d;
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        uint8_t* out = codes + b * 16;
        for (int j = 0; j < 16; ++j) {
            const uint8_t e = src[b].qs[j], o = src[b + 1].qs[j];
            out[j] = uint8_t((e & 0x0f) | (o << 4));                // elements j of both blocks
            out[j + 16] = uint8_t((e >> 4) | (o & 0xf0));           // elements j+16 of both blocks
        }
    }
    if (b < nb) std::memcpy(codes + b * 16, src[b].qs, 16);
}

void unpack_rows(const Matrix& m, void* dst_blocks) {
    const int64_t nb = m.blocks_per_row();
    const uint8_t* q = m.data.as<uint8_t>();
    const uint16_t* d = m.scales.as<uint16_t>();
    if (m.type == WType::Q8_0) {
        auto* dst = static_cast<block_q8_0*>(dst_blocks);
        for (int64_t b = 0; b < m.rows * nb; ++b) {
            dst[b].d = d[b];
            for (int j = 0; j < QK; ++j) dst[b].qs[j] = int8_t(q[b * QK + j] ^ 0x80u);
        }
    } else if (m.type == WType::Q4_0) {
        auto* dst = static_cast<block_q4_0*>(dst_blocks);
        for (int64_t r = 0; r < m.rows; ++r) {
            const uint8_t* row = q + r * nb * 16;
            for (int64_t b = 0; b < nb; ++b) {
                block_q4_0& o = dst[r * nb + b];
                o.d = d[r * nb + b];
                for (int j = 0; j < 16; ++j)
                    o.qs[j] = uint8_t(q4_code(row, nb, b, j) | (q4_code(row, nb, b, j + 16) << 4));
            }
        }
    } else {
        throw Error("unpack_rows: not a quantized matrix");
    }
}

}  // namespace l32
