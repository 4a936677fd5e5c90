// formats.h — the quantized block formats and how quantized matrices live in memory.
// Contract: a Q8_0/Q4_0 *block* is bit-compatible with ggml's; in memory a matrix is stored in panels of 16 rows
// (below), codes and f16 scales in separate arrays, so SIMD loads never straddle a scale.
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

// Q8_0/Q4_0 matrices live in *panels* of PANEL_ROWS rows, so that one 64-byte load holds 4 consecutive codes of
// each of the panel's 16 rows: a VNNI/sdot step against 4 broadcast activation bytes then adds 4 products into
// every row's int32 lane, and a block accumulates whole before its 16 scales are applied at once. The same layout
// serves decode (1 activation row) and prefill (many): the weights are never repacked after load.
constexpr int PANEL_ROWS = 16;
// Bytes of one block (32 columns) of a panel: its codes, 16 rows x 32 codes (Q8_0) or nibbles (Q4_0).
constexpr int64_t panel_block_bytes(bool q4) { return q4 ? 256 : 512; }

// A weight matrix [rows, cols] (PyTorch [out, in]) in one of the in-memory formats.
//  F32:  data = float[rows*cols]
//  BF16: data = uint16[rows*cols]
//  Q8_0/Q4_0 (panels(); a last partial panel is padded with zero codes and zero scales): block b of panel p
//  has its codes at data + (p*nb + b) * panel_block_bytes() and its 16 f16 scales at scales[(p*nb + b)*16 + r]
//  (r: row within the panel).
//    Q8_0, 512 bytes: group g (64 bytes, g = 0..7) holds codes 4g..4g+3 of row 0, then row 1, ..., row 15;
//          a code is q + 128, unsigned, so that VNNI's u8*s8 dot applies directly.
//    Q4_0, 256 bytes: chunk c (64 bytes, c = 0..3) holds bytes qs[4c..4c+3] of ggml's block of row 0, then row 1,
//          ...: the low nibbles are codes 4c..4c+3 (group c), the high nibbles codes 16+4c.. (group c+4).
struct Matrix {
    WType type = WType::F32;
    int64_t rows = 0, cols = 0;
    AlignedBuffer data;
    AlignedBuffer scales;

    bool quantized() const { return type == WType::Q8_0 || type == WType::Q4_0; }
    int64_t blocks_per_row() const { return cols / QK; }
    int64_t panels() const { return (rows + PANEL_ROWS - 1) / PANEL_ROWS; }
    size_t panel_block_bytes() const { return size_t(l32::panel_block_bytes(type == WType::Q4_0)); }  // quantized only
    size_t row_bytes() const;   // bytes of one row in `data` (float types only)
    size_t data_bytes() const;  // bytes of `data` for rows x cols of this type
    size_t scales_bytes() const { return size_t(panels() * blocks_per_row()) * PANEL_ROWS * 2; }  // quantized only
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

// The signed value (code - 128, nibble - 8) of element k of row r (0..15 within its panel) in one panel block.
static inline int panel_q8_value(const uint8_t* blk, int r, int k) { return int(blk[(k / 4) * 64 + r * 4 + k % 4]) - 128; }
static inline int panel_q4_value(const uint8_t* blk, int r, int k) {
    const uint8_t v = blk[(k % 16 / 4) * 64 + r * 4 + k % 4];
    return (k < 16 ? v & 0x0f : v >> 4) - 8;
}

// Row r of a quantized matrix from / to plain ggml blocks (block_q8_0 or block_q4_0 by m.type), lossless.
// A matrix is zeroed (zero_panels) before its rows are stored, so that padding rows of the last panel add nothing.
void zero_panels(Matrix& m);
void store_row(Matrix& m, int64_t r, const void* blocks);
void load_row(const Matrix& m, int64_t r, void* blocks);
void dequantize_row(const Matrix& m, int64_t r, float* out);  // row r as cols f32 values
void unpack_rows(const Matrix& m, void* dst_blocks);  // every row: Q8_0 -> block_q8_0[], Q4_0 -> block_q4_0[]

}  // namespace l32
