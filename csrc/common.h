// common.h — error type, aligned buffers and f16/bf16 <-> f32 conversions shared by every file.
// Contract: nothing here aborts; failures throw l32::Error, which the binding turns into a Python exception.
// Helpers are `static inline` on purpose: per-ISA kernel files include this header with their own -m flags,
// and internal linkage keeps an AVX-512 copy of a helper from being merged into scalar code by the linker.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace l32 {

// Thrown for any invalid input or state reaching the core; mapped to a Python exception.
struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

#define L32_CHECK(cond, msg)                                   \
    do {                                                       \
        if (!(cond)) throw ::l32::Error(std::string(msg));     \
    } while (0)

// 64-byte aligned owning buffer (cache line and AVX-512 register width).
struct AlignedBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;

    AlignedBuffer() = default;
    explicit AlignedBuffer(size_t n) { resize(n); }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    AlignedBuffer(AlignedBuffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; o.bytes = 0; }
    AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
        if (this != &o) { release(); ptr = o.ptr; bytes = o.bytes; o.ptr = nullptr; o.bytes = 0; }
        return *this;
    }
    ~AlignedBuffer() { release(); }

    // Discards the old contents when it has to grow.
    void resize(size_t n) {
        if (n <= bytes && ptr) return;
        release();
        size_t rounded = (n + 63) / 64 * 64;
        if (rounded == 0) rounded = 64;
        ptr = std::aligned_alloc(64, rounded);
        if (!ptr) throw std::bad_alloc();
        bytes = rounded;
    }
    void release() { std::free(ptr); ptr = nullptr; bytes = 0; }
    template <class T> T* as() const { return static_cast<T*>(ptr); }
};

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16;  // exact: bf16 is the top half of an f32
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {  // round to nearest even, NaN kept quiet
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

// IEEE binary16 -> binary32, subnormals and inf/NaN included (exact).
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            int e = -1;
            do { man <<= 1; ++e; } while ((man & 0x400u) == 0);
            bits = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else {
        bits = sign | ((exp + (127 - 15)) << 23) | (man << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// binary32 -> binary16, round to nearest even (matches numpy's float16 cast and F16C).
static inline uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (ax < 0x38800000u) {                                  // subnormal or zero in f16
        if (ax < 0x33000000u) return uint16_t(sign);         // < 2^-25: rounds to 0
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;  // 14..24
        uint32_t half = 1u << (shift - 1);
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t r = m >> shift;
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return uint16_t(sign | r);
    }
    uint32_t r = ax - 0x38000000u;  // rebias exponent 127 -> 15 (shifted by 13)
    uint32_t rem = r & 0x1fffu;
    r >>= 13;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
    return uint16_t(sign | r);
}

}  // namespace l32
