// formats.h — the quantized block formats and how quantized matrices live in memory.
// Contract: a Q8_0/Q4_0 *block* is bit-compatible with ggml's; in memory a matrix is stored "split":
// all quants of a row contiguous, the f16 scales in a separate array, so SIMD loads never straddle a scale.
#pragma once

#include <cstdint>

#include "common.h"

namespace l32 {

constexpr int QK = 32;  // elements per block (Q8_0 and Q4_0)

// ggml block_q8_0: y[j] = d * qs[j]
struct block_q8_0 {
    uint16_t d;  // f16 scale
    int8_t qs[QK];
};
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must be 34 bytes (ggml Q8_0)");

// ggml block_q4_0: byte j holds element j (low nibble) and element j+16 (high nibble);
// y = d * (nibble - 8)
struct block_q4_0 {
    uint16_t d;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must be 18 bytes (ggml Q4_0)");

enum class WType : int { F32 = 0, BF16 = 1, Q8_0 = 2, Q4_0 = 3, F16 = 4 };

const char* wtype_name(WType t);
WType wtype_from_name(const std::string& name);  // throws Error on an unknown name

// A weight matrix [rows, cols] (PyTorch [out, in]) in one of the in-memory formats.
//  F32:  data = float[rows*cols]
//  BF16: data = uint16[rows*cols]
//  Q8_0: data = uint8[rows*cols] holding (q + 128): unsigned so that VNNI's u8*s8 dot applies directly;
//        scales = f16[rows*cols/32]
//  Q4_0: data = uint8[rows*cols/2], scales = f16[rows*cols/32]. Blocks go in pairs: byte j (0..31) of a
//        pair holds element j of block 2p in its low nibble and element j of block 2p+1 in its high nibble,
//        so one 32-byte load, a shift and a mask give both blocks' codes in element order. A trailing odd
//        block keeps ggml's order (byte j: element j low, element j+16 high).
struct Matrix {
    WType type = WType::F32;
    int64_t rows = 0, cols = 0;
    AlignedBuffer data;
    AlignedBuffer scales;

    int64_t blocks_per_row() const { return cols / QK; }
    size_t row_bytes() const;  // bytes of one row in `data`
};

// Quantized activations: rows of int8 blocks with one f32 scale and the block's sum of quants
// (the sum lets kernels use unsigned weight codes: dot(q_w + off, x) - off * sum(x)).
struct QuantizedActs {
    int64_t rows = 0, cols = 0;
    AlignedBuffer qs;   // int8 [rows, cols]
    AlignedBuffer d;    // float [rows, cols/32]
    AlignedBuffer sum;  // float [rows, cols/32]: d * sum(qs), the block's dequantized sum
};

// --- scalar reference quantizers: THE spec, bit-exact with the NumPy reference (round half to even) ---
// Q8_0: d = amax/127, q = rint(x * (1/d)).  Q4_0: m = the value of largest |x|, d = m / -8,
// q = clamp(rint(x * (1/d)) + 8, 0, 15).
void quantize_row_q8_0_ref(const float* x, block_q8_0* y, int64_t n);
void quantize_row_q4_0_ref(const float* x, block_q4_0* y, int64_t n);
void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t n);
void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t n);

// One row of plain ggml blocks <-> the in-memory layout (lossless).
void pack_q8_0_row(const block_q8_0* src, int64_t nb, uint8_t* codes, uint16_t* scales);
void pack_q4_0_row(const block_q4_0* src, int64_t nb, uint8_t* codes, uint16_t* scales);
void unpack_rows(const Matrix& m, void* dst_blocks);  // Q8_0 -> block_q8_0[], Q4_0 -> block_q4_0[]

// Code (0..15) of element j of block b in a packed q4_0 row of nb blocks.
static inline int q4_code(const uint8_t* row, int64_t nb, int64_t b, int j) {
    if ((b & 1) == 0 && b + 1 == nb) {  // trailing odd block: ggml order
        const uint8_t v = row[b * 16 + (j & 15)];
        return j < 16 ? (v & 0x0f) : (v >> 4);
    }
    const uint8_t v = row[(b & ~int64_t(1)) * 16 + j];
    return (b & 1) ? (v >> 4) : (v & 0x0f);
}

}  // namespace l32
