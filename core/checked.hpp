// Overflow-checked arithmetic for every address/length computed from peer-controlled values.
#pragma once

#include <cstdint>
#include <optional>

namespace vhostd {

// a + b, or nullopt on overflow.
template <typename T>
constexpr std::optional<T> checked_add(T a, T b) {
    T r{};
    if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
    return r;
}

template <typename T>
constexpr std::optional<T> checked_mul(T a, T b) {
    T r{};
    if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
    return r;
}

// True if [addr, addr+len) lies within [base, base+size). Overflow-safe; len 0 is "inside" iff addr in range.
constexpr bool range_within(uint64_t addr, uint64_t len, uint64_t base, uint64_t size) {
    if (addr < base) return false;
    uint64_t off = addr - base;
    if (off > size) return false;
    return len <= size - off;
}

constexpr bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace vhostd
