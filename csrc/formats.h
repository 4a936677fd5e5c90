// formats.h — the quantized block formats and how quantized matrices live in memory.
// Contract: a Q8_0/Q4_0/Q4_1/IQ4_NL *block* is bit-compatible with ggml's; in memory a matrix is stored in panels of 16 rows
// (below), codes and f16 scales in separate arrays, so SIMD loads never straddle a scale.
#pragma once

#include <cstdint>

#include "common.h"

namespace l32 {

constexpr int QK = 32;  // elements per block (every quantized format)

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

// ggml block_q4_1: nibbles as in Q4_0, y = d * nibble + m (GGUF Q4_1 as is; GGUF Q4_K's 32-weight sub-blocks too,
// their scale d*sc and min -dmin*m rounded to f16)
struct block_q4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_q4_1) == 20, "block_q4_1 must be 20 bytes (ggml Q4_1)");

// ggml block_iq4_nl: nibbles as in Q4_0, y = d * IQ4_GRID[nibble] (a fixed non-linear grid)
struct block_iq4_nl {
    uint16_t d;
    uint8_t qs[QK / 2];
};
static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl must be 18 bytes (ggml IQ4_NL)");
constexpr int8_t IQ4_GRID[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

enum class WType : int { F32 = 0, BF16 = 1, Q8_0 = 2, Q4_0 = 3, F16 = 4, Q4_1 = 5, IQ4_NL = 6 };

constexpr bool is_quantized(WType t) { return t == WType::Q8_0 || t == WType::Q4_0 || t == WType::Q4_1 || t == WType::IQ4_NL; }
// Bytes of one plain (ggml) block of QK weights of a quantized type.
constexpr size_t plain_block_bytes(WType t) {
    return t == WType::Q8_0 ? sizeof(block_q8_0) : t == WType::Q4_1 ? sizeof(block_q4_1) : sizeof(block_q4_0);
}
// f16 scales per row and block in a panel: d, and for Q4_1 also m.
constexpr int scale_planes(WType t) { return t == WType::Q4_1 ? 2 : 1; }

const char* wtype_name(WType t);
WType wtype_from_name(const std::string& name);  // throws Error on an unknown name

// Q8_0/Q4_0 matrices live in *panels* of PANEL_ROWS rows, so that one 64-byte load holds 4 consecutive codes of
// each of the panel's 16 rows: a VNNI/sdot step against 4 broadcast activation bytes then adds 4 products into
// every row's int32 lane, and a block accumulates whole before its 16 scales are applied at once. The same layout
// serves decode (1 activation row) and prefill (many): the weights are never repacked after load.
constexpr int PANEL_ROWS = 16;
// Bytes of one block (32 columns) of a panel: its codes, 16 rows x 32 codes (Q8_0) or nibbles (Q4_0).
static constexpr int64_t panel_block_bytes(bool q4) { return q4 ? 256 : 512; }

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
//    Q4_1, IQ4_NL: the codes as Q4_0 (256 bytes). Q4_1 has two scale planes: block b of panel p has its 16 f16 d
//          at scales[(p*nb + b)*32 + r] and its 16 f16 m at scales[(p*nb + b)*32 + 16 + r] (y = d * nibble + m);
//          IQ4_NL's one plane is d (y = d * IQ4_GRID[nibble]).
struct Matrix {
    WType type = WType::F32;
    int64_t rows = 0, cols = 0;
    AlignedBuffer data;
    AlignedBuffer scales;

    bool quantized() const { return is_quantized(type); }
    int64_t blocks_per_row() const { return cols / QK; }
    int64_t panels() const { return (rows + PANEL_ROWS - 1) / PANEL_ROWS; }
    size_t panel_block_bytes() const { return size_t(l32::panel_block_bytes(type != WType::Q8_0)); }  // quantized only
    size_t row_bytes() const;   // bytes of one row in `data` (float types only)
    size_t data_bytes() const;  // bytes of `data` for rows x cols of this type
    size_t scales_bytes() const { return size_t(panels() * blocks_per_row()) * PANEL_ROWS * 2 * scale_planes(type); }  // quantized only
};

// Quantized activations: rows of int8 blocks with one f32 scale and the block's sum of quants
// (the sum lets kernels use unsigned weight codes: dot(q_w + off, x) - off * sum(x)).
struct QuantizedActs {
    int64_t rows = 0, cols = 0;
    AlignedBuffer qs;   // int8 [rows, cols]
    AlignedBuffer d;    // float [rows, cols/32]
    AlignedBuffer sum;  // float [rows, cols/32]: d * sum(qs), the block's dequantized sum
};

// --- scalar reference quantizers: THE spec, bit-exact with the NumPy reference (quant.py; round half to even) ---
// Q8_0: d = amax/127, q = rint(x * (1/d)). The 4-bit quantizers search the block scale (formats.cpp): for each of a
// fixed list of trial scales they take the codes it gives, fit d (Q4_1: d and m) to them by least squares and keep
// the fit of least squared error; the codes are those of the winning trial.
void quantize_row_q8_0_ref(const float* x, block_q8_0* y, int64_t n);
void quantize_row_q4_0_ref(const float* x, block_q4_0* y, int64_t n);
void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t n);
void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t n);
void quantize_row_q4_1_ref(const float* x, block_q4_1* y, int64_t n);
void quantize_row_iq4_nl_ref(const float* x, block_iq4_nl* y, int64_t n);
// Any quantized type: n floats <-> n/QK plain blocks of type t.
void quantize_row_ref(WType t, const float* x, void* blocks, int64_t n);
void dequantize_row_plain(WType t, const void* blocks, float* y, int64_t n);

// The signed value (code - 128, nibble - 8) of element k of row r (0..15 within its panel) in one panel block.
static inline int panel_q8_value(const uint8_t* blk, int r, int k) { return int(blk[(k / 4) * 64 + r * 4 + k % 4]) - 128; }
static inline int panel_nibble(const uint8_t* blk, int r, int k) {  // the 4-bit code (Q4_0, Q4_1, IQ4_NL)
    const uint8_t v = blk[(k % 16 / 4) * 64 + r * 4 + k % 4];
    return k < 16 ? v & 0x0f : v >> 4;
}
static inline int panel_q4_value(const uint8_t* blk, int r, int k) { return panel_nibble(blk, r, k) - 8; }
static inline int panel_iq4_value(const uint8_t* blk, int r, int k) { return IQ4_GRID[panel_nibble(blk, r, k)]; }

// Row r of a quantized matrix from / to plain ggml blocks (block_q8_0, block_q4_0, block_q4_1 or block_iq4_nl by
// m.type), lossless.
// The last panel is zeroed (zero_panels) before a matrix's rows are stored, so that its padding rows add nothing.
void zero_panels(Matrix& m);
void store_row(Matrix& m, int64_t r, const void* blocks);
void load_row(const Matrix& m, int64_t r, void* blocks);
void dequantize_row(const Matrix& m, int64_t r, float* out);  // row r as cols f32 values
void unpack_rows(const Matrix& m, void* dst_blocks);  // every row as plain blocks of m.type

}  // namespace l32
