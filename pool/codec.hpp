// Little-endian encoding of pool metadata. The reader never reads past its buffer: every get
// checks the bytes left and a failed read sets a sticky error, so a parser checks once at the
// end of a record (and before using any value that sizes a later read).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace vhostd::pool {

class ByteWriter {
public:
    explicit ByteWriter(std::vector<uint8_t>& out) : out_(out) {}
    void u8(uint8_t v) { out_.push_back(v); }
    void u16(uint16_t v) { put(v, 2); }
    void u32(uint32_t v) { put(v, 4); }
    void u64(uint64_t v) { put(v, 8); }
    void bytes(const void* p, size_t n) {
        if (n == 0) return;
        auto* b = static_cast<const uint8_t*>(p);
        out_.insert(out_.end(), b, b + n);
    }
    // A name of at most 255 bytes: its length, then its bytes.
    void name(std::string_view s) {
        u8(static_cast<uint8_t>(s.size()));
        bytes(s.data(), s.size());
    }
    void zeros(size_t n) { out_.insert(out_.end(), n, 0); }
    size_t size() const { return out_.size(); }

private:
    void put(uint64_t v, int n) {
        for (int i = 0; i < n; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    }
    std::vector<uint8_t>& out_;
};

class ByteReader {
public:
    ByteReader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
    uint8_t u8() { return static_cast<uint8_t>(get(1)); }
    uint16_t u16() { return static_cast<uint16_t>(get(2)); }
    uint32_t u32() { return static_cast<uint32_t>(get(4)); }
    uint64_t u64() { return get(8); }
    void bytes(void* dst, size_t n) {
        if (n == 0) return;
        if (!take(n)) {
            std::memset(dst, 0, n);
            return;
        }
        std::memcpy(dst, p_ + pos_ - n, n);
    }
    std::string name() {
        size_t n = u8();
        if (!take(n)) return {};
        return std::string(reinterpret_cast<const char*>(p_ + pos_ - n), n);
    }
    void skip(size_t n) { take(n); }
    bool ok() const { return ok_; }
    size_t pos() const { return pos_; }
    size_t left() const { return ok_ ? n_ - pos_ : 0; }

private:
    bool take(size_t n) {
        if (!ok_ || n > n_ - pos_) {
            ok_ = false;
            return false;
        }
        pos_ += n;
        return true;
    }
    uint64_t get(int n) {
        if (!take(static_cast<size_t>(n))) return 0;
        uint64_t v = 0;
        for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(p_[pos_ - n + i]) << (8 * i);
        return v;
    }
    const uint8_t* p_;
    size_t n_;
    size_t pos_ = 0;
    bool ok_ = true;
};

}  // namespace vhostd::pool
