// kernels/shared.h — what the SIMD kernel files share: the dispatch on the number of activation rows and the panel
// loop of the quantized GEMM. Contract: everything here is a template or `static inline`, so that each kernel file
// compiles its own copy with its own -m flags (common.h says why).
#pragma once

#include <cstdint>

#include "../common.h"
#include "../formats.h"
#include "../kernels.h"

namespace l32 {

// Calls fn<nt>(args...) for nt = 1..3, fn<4> for 4 and more: the dot kernels take up to MAX_NT (4) rows per call.
#define L32_DISPATCH_NT(fn, ...)              \
    switch (nt) {                             \
        case 1: fn<1>(__VA_ARGS__); break;    \
        case 2: fn<2>(__VA_ARGS__); break;    \
        case 3: fn<3>(__VA_ARGS__); break;    \
        default: fn<4>(__VA_ARGS__); break;   \
    }

// KernelTable::gemm_q8_0 / gemm_q4_0 on top of a one-panel kernel: the rows (<= GEMM_ROWS) one panel at a time,
// the activation rows 4 at a time. Panel::template run<NT, Q4>(nb, codes, scales, x, rows, y, ldy) computes rows
// (<= PANEL_ROWS) of one panel against NT (1..4) activation rows; AVX2 and NEON keep 4 x 2 accumulators + the codes
// of a group in their 16 / 32 vector registers. (avx512.cpp has its own loop: 8 rows a tile, two panels a call.)
template <class Panel, bool Q4>
static inline void gemm_q_by_panel(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt,
                                   int rows, float* y, int64_t ldy) {
    for (int p = 0; p * PANEL_ROWS < rows; ++p) {
        const int pr = rows - p * PANEL_ROWS < PANEL_ROWS ? rows - p * PANEL_ROWS : PANEL_ROWS;
        const uint8_t* pc = codes + p * nb * panel_block_bytes(Q4);
        const uint16_t* ps = scales + p * nb * PANEL_ROWS;
        for (int t0 = 0; t0 < nt; t0 += 4) {
            const ActRows xt = rows_from(x, t0);
            float* yt = y + t0 * ldy + p * PANEL_ROWS;
            switch (nt - t0) {
                case 1: Panel::template run<1, Q4>(nb, pc, ps, xt, pr, yt, ldy); break;
                case 2: Panel::template run<2, Q4>(nb, pc, ps, xt, pr, yt, ldy); break;
                case 3: Panel::template run<3, Q4>(nb, pc, ps, xt, pr, yt, ldy); break;
                default: Panel::template run<4, Q4>(nb, pc, ps, xt, pr, yt, ldy); break;
            }
        }
    }
}

// The same loop for Q4_1 / IQ4_NL panels (256 bytes of codes a block, scale_planes(F) x 16 f16 scales a block):
// Panel::template run4x<NT, F>(nb, codes, scales, x, rows, y, ldy).
template <class Panel, WType F>
static inline void gemm_q4x_by_panel(int64_t nb, const uint8_t* codes, const uint16_t* scales, const ActRows& x, int nt,
                                     int rows, float* y, int64_t ldy) {
    for (int p = 0; p * PANEL_ROWS < rows; ++p) {
        const int pr = rows - p * PANEL_ROWS < PANEL_ROWS ? rows - p * PANEL_ROWS : PANEL_ROWS;
        const uint8_t* pc = codes + p * nb * panel_block_bytes(true);
        const uint16_t* ps = scales + p * nb * PANEL_ROWS * scale_planes(F);
        for (int t0 = 0; t0 < nt; t0 += 4) {
            const ActRows xt = rows_from(x, t0);
            float* yt = y + t0 * ldy + p * PANEL_ROWS;
            switch (nt - t0) {
                case 1: Panel::template run4x<1, F>(nb, pc, ps, xt, pr, yt, ldy); break;
                case 2: Panel::template run4x<2, F>(nb, pc, ps, xt, pr, yt, ldy); break;
                case 3: Panel::template run4x<3, F>(nb, pc, ps, xt, pr, yt, ldy); break;
                default: Panel::template run4x<4, F>(nb, pc, ps, xt, pr, yt, ldy); break;
            }
        }
    }
}

}  // namespace l32
