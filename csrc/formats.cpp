// formats.cpp — reference (scalar) quantizers and the plain-block <-> split-layout conversions.
// Contract: these define the bit patterns; SIMD quantizers and the NumPy reference must match them exactly.
#include "formats.h"

#include <cmath>
#include <limits>

// The 4-bit scale searches below compare f32 sums that quant.py recomputes in the same order: no contraction of a
// multiply and an add into one rounding, on any compiler or target.
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#else
#pragma GCC optimize("fp-contract=off")
#endif

namespace l32 {

const char* wtype_name(WType t) {
    switch (t) {
        case WType::F32: return "f32";
        case WType::BF16: return "bf16";
        case WType::Q8_0: return "q8_0";
        case WType::Q4_0: return "q4_0";
        case WType::F16: return "f16";
        case WType::Q4_1: return "q4_1";
        case WType::IQ4_NL: return "iq4_nl";
    }
    return "?";
}

WType wtype_from_name(const std::string& name) {
    if (name == "f32") return WType::F32;
    if (name == "bf16") return WType::BF16;
    if (name == "q8_0") return WType::Q8_0;
    if (name == "q4_0") return WType::Q4_0;
    if (name == "f16") return WType::F16;
    if (name == "q4_1") return WType::Q4_1;
    if (name == "iq4_nl") return WType::IQ4_NL;
    throw Error("unknown weight type '" + name + "' (expected f32, f16, bf16, q8_0, q4_0, q4_1 or iq4_nl)");
}

size_t Matrix::row_bytes() const {
    switch (type) {
        case WType::F32: return size_t(cols) * 4;
        case WType::BF16:
        case WType::F16: return size_t(cols) * 2;
        case WType::Q8_0:
        case WType::Q4_0:
        case WType::Q4_1:
        case WType::IQ4_NL: break;  // panels, not rows
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

// The value of largest magnitude in a block (the first of equal magnitudes).
static inline float signed_max(const float* xb) {
    float amax = 0.0f, m = 0.0f;
    for (int j = 0; j < QK; ++j)
        if (std::fabs(xb[j]) > amax) { amax = std::fabs(xb[j]); m = xb[j]; }
    return m;
}

static inline float f16_round(float v) { return f16_to_f32(f32_to_f16(v)); }

// rint(v) clamped to [lo, hi], for |v| < 2^22: the integer is read from the bits of v + 1.5 * 2^23 (no float to
// int conversion, so no undefined case; integer selects vectorize where float min/max would not).
static inline float rint_clamp(float v, int32_t lo, int32_t hi) {
    const float r = v + 12582912.0f;
    int32_t q;
    std::memcpy(&q, &r, 4);
    q -= 0x4B400000;
    q = q < lo ? lo : q;
    q = q > hi ? hi : q;
    return float(q);
}

// The sum of 32 values in the one order quant.py repeats: 8 lanes (index mod 8) accumulate in index order, then
// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). Lanes let the compiler use vectors; the order stays fixed.
static inline float sum32(const float* v) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int j0 = 0; j0 < QK; j0 += 8)
        for (int k = 0; k < 8; ++k) a[k] += v[j0 + k];
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// Symmetric 4-bit blocks (Q4_0, IQ4_NL): for each target t of the list, the codes l = level(x * (t / m)) (m: the
// signed max), then d = sum(x*l) / sum(l*l) (least squares), rounded to f16 as dd; its squared error is
// e = (sxx - 2*(dd*sum(x*l))) + (dd*dd)*sum(l*l). The least e wins (the first of equals); returns its t / m, and
// sets d. Sums are sum32's, in f32.
template <class Level>
static float search_symmetric(const float* xb, float m, int n_targets, float (*target)(int), float& d) {
    const Level level;
    float xx[QK], xl[QK], ll[QK];
    for (int j = 0; j < QK; ++j) xx[j] = xb[j] * xb[j];
    const float sxx = sum32(xx);
    float best_e = std::numeric_limits<float>::infinity(), best_is = 0.0f;
    d = 0.0f;
    for (int s = 0; s < n_targets; ++s) {
        const float is = target(s) / m;
        for (int j = 0; j < QK; ++j) {
            const float l = level(xb[j] * is);
            xl[j] = xb[j] * l;
            ll[j] = l * l;
        }
        const float sumlx = sum32(xl), suml2 = sum32(ll);
        if (!(suml2 > 0.0f)) continue;
        const float dfit = sumlx / suml2, dd = f16_round(dfit);
        const float a = dd * sumlx;
        const float e = (sxx - (a + a)) + (dd * dd) * suml2;
        if (e < best_e) { best_e = e; best_is = is; d = dfit; }
    }
    return best_is;
}

static float q4_0_target(int s) { return float(2 * s - 89) / 10.0f; }  // -8.9, -8.7 .. -7.1: m lands near level -8
static inline float q4_0_level(float v) { return rint_clamp(v, -8, 7); }
struct Q4_0Level {
    float operator()(float v) const { return q4_0_level(v); }
};

void quantize_row_q4_0_ref(const float* x, block_q4_0* y, int64_t n) {
    for (int64_t b = 0; b < n / QK; ++b) {
        const float* xb = x + b * QK;
        const float m = signed_max(xb);
        float d = 0.0f, is = 0.0f;
        if (m != 0.0f) is = search_symmetric<Q4_0Level>(xb, m, 10, q4_0_target, d);
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < QK / 2; ++j) {
            const int i0 = int(q4_0_level(xb[j] * is)) + 8, i1 = int(q4_0_level(xb[j + QK / 2] * is)) + 8;
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

// Q4_1: for each target t of 14.1, 14.3 .. 15.9, the codes l = clamp(rint((x - lo) * (t / (hi - lo))), 0, 15), then d
// and m by least squares (den = 32*sum(l*l) - sum(l)^2, exact), rounded to f16 as dd, mm; the squared error is
// expanded as below, in this order. The least wins (the first of equals). A flat block is d = 0, m = lo.
static inline float q4_1_level(float v) { return rint_clamp(v, 0, 15); }

void quantize_row_q4_1_ref(const float* x, block_q4_1* y, int64_t n) {
    for (int64_t b = 0; b < n / QK; ++b) {
        const float* xb = x + b * QK;
        float lo = xb[0], hi = xb[0];
        for (int j = 1; j < QK; ++j) {
            lo = std::fmin(lo, xb[j]);
            hi = std::fmax(hi, xb[j]);
        }
        float best_d = 0.0f, best_m = lo, best_is = 0.0f;
        if (hi > lo) {
            float xx[QK], lv[QK], ll[QK], lx[QK], c[QK];
            for (int j = 0; j < QK; ++j) {
                xx[j] = xb[j] * xb[j];
                c[j] = xb[j] - lo;
            }
            const float sx = sum32(xb), sxx = sum32(xx);
            float best_e = std::numeric_limits<float>::infinity();
            for (int s = 0; s < 10; ++s) {
                const float is = (float(2 * s + 141) / 10.0f) / (hi - lo);
                for (int j = 0; j < QK; ++j) {
                    lv[j] = q4_1_level(c[j] * is);
                    ll[j] = lv[j] * lv[j];
                    lx[j] = lv[j] * xb[j];
                }
                const float sl = sum32(lv), sll = sum32(ll), slx = sum32(lx);
                const float den = 32.0f * sll - sl * sl;
                if (!(den > 0.0f)) continue;
                const float d = (32.0f * slx - sl * sx) / den, mn = (sll * sx - sl * slx) / den;
                const float dd = f16_round(d), mm = f16_round(mn);
                float e = sxx;
                e = e + (dd * dd) * sll;
                e = e + (mm * mm) * 32.0f;
                const float r = dd * slx;
                e = e - (r + r);
                const float u = mm * sx;
                e = e - (u + u);
                const float v = (dd * mm) * sl;
                e = e + (v + v);
                if (e < best_e) { best_e = e; best_d = d; best_m = mn; best_is = is; }
            }
        }
        y[b].d = f32_to_f16(best_d);
        y[b].m = f32_to_f16(best_m);
        for (int j = 0; j < QK / 2; ++j) {
            const int i0 = int(q4_1_level((xb[j] - lo) * best_is)), i1 = int(q4_1_level((xb[j + QK / 2] - lo) * best_is));
            y[b].qs[j] = uint8_t(i0 | (i1 << 4));
        }
    }
}

// The grid level nearest v: the number of midpoints between levels that v exceeds (a tie goes to the lower level),
// by binary search over the 15 midpoints.
static inline int iq4_nearest(float v) {
    static const float mids[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
                                   7.0f,    19.0f,  31.5f,  45.5f,  61.0f,  79.0f,  101.0f};
    int i = 0;
    if (v > mids[i + 7]) i += 8;
    if (v > mids[i + 3]) i += 4;
    if (v > mids[i + 1]) i += 2;
    if (v > mids[i]) i += 1;
    return i;
}
static float iq4_target(int s) { return float(2 * s - 137); }  // -137, -135 .. -117: m lands near level -127
struct Iq4Level {  // IQ4_GRID[iq4_nearest(v)] as arithmetic (the steps between levels that v passes), so it vectorizes
    float operator()(float v) const {
        static constexpr float mids[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
                                           7.0f,    19.0f,  31.5f,  45.5f,  61.0f,  79.0f,  101.0f};
        float l = float(IQ4_GRID[0]);
        for (int k = 0; k < 15; ++k) l += v > mids[k] ? float(IQ4_GRID[k + 1] - IQ4_GRID[k]) : 0.0f;
        return l;
    }
};

// IQ4_NL: the symmetric search over targets -137, -135 .. -117 (search_symmetric), levels on the grid.
void quantize_row_iq4_nl_ref(const float* x, block_iq4_nl* y, int64_t n) {
    for (int64_t b = 0; b < n / QK; ++b) {
        const float* xb = x + b * QK;
        const float m = signed_max(xb);
        float d = 0.0f, is = 0.0f;
        if (m != 0.0f) is = search_symmetric<Iq4Level>(xb, m, 11, iq4_target, d);
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < QK / 2; ++j)
            y[b].qs[j] = uint8_t(iq4_nearest(xb[j] * is) | (iq4_nearest(xb[j + QK / 2] * is) << 4));
    }
}

void dequantize_row_plain(WType t, const void* blocks, float* y, int64_t n) {
    switch (t) {
        case WType::Q8_0: return dequantize_row_q8_0(static_cast<const block_q8_0*>(blocks), y, n);
        case WType::Q4_0: return dequantize_row_q4_0(static_cast<const block_q4_0*>(blocks), y, n);
        case WType::Q4_1:
            for (int64_t b = 0; b < n / QK; ++b) {
                const block_q4_1& blk = static_cast<const block_q4_1*>(blocks)[b];
                const float d = f16_to_f32(blk.d), m = f16_to_f32(blk.m);
                for (int j = 0; j < QK / 2; ++j) {
                    y[b * QK + j] = d * float(blk.qs[j] & 0x0f) + m;
                    y[b * QK + j + QK / 2] = d * float(blk.qs[j] >> 4) + m;
                }
            }
            return;
        case WType::IQ4_NL:
            for (int64_t b = 0; b < n / QK; ++b) {
                const block_iq4_nl& blk = static_cast<const block_iq4_nl*>(blocks)[b];
                const float d = f16_to_f32(blk.d);
                for (int j = 0; j < QK / 2; ++j) {
                    y[b * QK + j] = d * float(IQ4_GRID[blk.qs[j] & 0x0f]);
                    y[b * QK + j + QK / 2] = d * float(IQ4_GRID[blk.qs[j] >> 4]);
                }
            }
            return;
        default: throw Error("dequantize_row_plain: not a quantized type");
    }
}

void quantize_row_ref(WType t, const float* x, void* blocks, int64_t n) {
    switch (t) {
        case WType::Q8_0: return quantize_row_q8_0_ref(x, static_cast<block_q8_0*>(blocks), n);
        case WType::Q4_0: return quantize_row_q4_0_ref(x, static_cast<block_q4_0*>(blocks), n);
        case WType::Q4_1: return quantize_row_q4_1_ref(x, static_cast<block_q4_1*>(blocks), n);
        case WType::IQ4_NL: return quantize_row_iq4_nl_ref(x, static_cast<block_iq4_nl*>(blocks), n);
        default: throw Error("quantize_row_ref: not a quantized type");
    }
}

void zero_panels(Matrix& m) {
    // Only the last panel can hold padding rows; every other byte is written by store_row. Zeroing the whole matrix
    // was one more pass over it at load (1.7 GiB for the 3B in q4_0).
    if (m.rows % PANEL_ROWS == 0) return;
    const size_t nb = size_t(m.blocks_per_row()), last = size_t(m.panels() - 1);
    const size_t scales = nb * PANEL_ROWS * size_t(scale_planes(m.type));
    std::memset(m.data.as<uint8_t>() + last * nb * m.panel_block_bytes(), 0, nb * m.panel_block_bytes());
    std::memset(m.scales.as<uint16_t>() + last * scales, 0, scales * 2);
}

// Where block b of row r starts in the codes (lane offset included), and the index of its scale (plane 0: d;
// Q4_1's plane 1: m).
static inline size_t code_offset(const Matrix& m, int64_t r, int64_t b) {
    const int64_t nb = m.blocks_per_row();
    return size_t((r / PANEL_ROWS) * nb + b) * m.panel_block_bytes() + size_t(r % PANEL_ROWS) * 4;
}
static inline size_t scale_index(const Matrix& m, int64_t r, int64_t b, int plane = 0) {
    return (size_t((r / PANEL_ROWS) * m.blocks_per_row() + b) * scale_planes(m.type) + size_t(plane)) * PANEL_ROWS +
           size_t(r % PANEL_ROWS);
}

// A plain block's f16 fields and its 16 nibble bytes (the 4-bit types) or 32 codes (Q8_0).
struct PlainView {
    uint16_t* d;
    uint16_t* m;  // Q4_1 only
    uint8_t* qs;
};
static inline PlainView plain_view(WType t, void* blocks, int64_t b) {
    uint8_t* p = static_cast<uint8_t*>(blocks) + size_t(b) * plain_block_bytes(t);
    if (t == WType::Q4_1) return {reinterpret_cast<uint16_t*>(p), reinterpret_cast<uint16_t*>(p + 2), p + 4};
    return {reinterpret_cast<uint16_t*>(p), nullptr, p + 2};
}

void store_row(Matrix& m, int64_t r, const void* blocks) {
    uint8_t* codes = m.data.as<uint8_t>();
    uint16_t* scales = m.scales.as<uint16_t>();
    for (int64_t b = 0; b < m.blocks_per_row(); ++b) {
        uint8_t* dst = codes + code_offset(m, r, b);
        const PlainView v = plain_view(m.type, const_cast<void*>(blocks), b);
        std::memcpy(&scales[scale_index(m, r, b)], v.d, 2);
        if (v.m) std::memcpy(&scales[scale_index(m, r, b, 1)], v.m, 2);
        if (m.type == WType::Q8_0) {
            for (int k = 0; k < QK; ++k) dst[(k / 4) * 64 + k % 4] = v.qs[k] ^ 0x80u;  // q + 128
        } else {
            for (int c = 0; c < 4; ++c) std::memcpy(dst + c * 64, v.qs + 4 * c, 4);
        }
    }
}

void load_row(const Matrix& m, int64_t r, void* blocks) {
    const uint8_t* codes = m.data.as<uint8_t>();
    const uint16_t* scales = m.scales.as<uint16_t>();
    for (int64_t b = 0; b < m.blocks_per_row(); ++b) {
        const uint8_t* src = codes + code_offset(m, r, b);
        const PlainView v = plain_view(m.type, blocks, b);
        std::memcpy(v.d, &scales[scale_index(m, r, b)], 2);
        if (v.m) std::memcpy(v.m, &scales[scale_index(m, r, b, 1)], 2);
        if (m.type == WType::Q8_0) {
            for (int k = 0; k < QK; ++k) v.qs[k] = src[(k / 4) * 64 + k % 4] ^ 0x80u;
        } else {
            for (int c = 0; c < 4; ++c) std::memcpy(v.qs + 4 * c, src + c * 64, 4);
        }
    }
}

void dequantize_row(const Matrix& m, int64_t r, float* out) {
    const int64_t nb = m.blocks_per_row();
    const int rr = int(r % PANEL_ROWS);
    const uint16_t* scales = m.scales.as<uint16_t>();
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = m.data.as<uint8_t>() + size_t((r / PANEL_ROWS) * nb + b) * m.panel_block_bytes();
        const float d = f16_to_f32(scales[scale_index(m, r, b)]);
        switch (m.type) {
            case WType::Q8_0:
                for (int k = 0; k < QK; ++k) out[b * QK + k] = d * float(panel_q8_value(blk, rr, k));
                break;
            case WType::Q4_0:
                for (int k = 0; k < QK; ++k) out[b * QK + k] = d * float(panel_q4_value(blk, rr, k));
                break;
            case WType::Q4_1: {
                const float mn = f16_to_f32(scales[scale_index(m, r, b, 1)]);
                for (int k = 0; k < QK; ++k) out[b * QK + k] = d * float(panel_nibble(blk, rr, k)) + mn;
                break;
            }
            case WType::IQ4_NL:
                for (int k = 0; k < QK; ++k) out[b * QK + k] = d * float(panel_iq4_value(blk, rr, k));
                break;
            default: throw Error("dequantize_row: not a quantized matrix");
        }
    }
}

void unpack_rows(const Matrix& m, void* dst_blocks) {
    L32_CHECK(m.quantized(), "unpack_rows: not a quantized matrix");
    const size_t row = size_t(m.blocks_per_row()) * plain_block_bytes(m.type);
    for (int64_t r = 0; r < m.rows; ++r) load_row(m, r, static_cast<uint8_t*>(dst_blocks) + size_t(r) * row);
}

}  // namespace l32
