// Small in-place helpers over iovec arrays (no allocation).
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace vhostd::virtio {

// Copies up to dst_len bytes from the front of iov into dst; returns bytes copied.
inline size_t iov_copy_from(const iovec* iov, size_t n, void* dst, size_t dst_len) {
    size_t done = 0;
    for (size_t i = 0; i < n && done < dst_len; ++i) {
        size_t c = std::min(iov[i].iov_len, dst_len - done);
        std::memcpy(static_cast<uint8_t*>(dst) + done, iov[i].iov_base, c);
        done += c;
    }
    return done;
}

// Copies src into the iovecs; returns bytes copied.
inline size_t iov_copy_to(const iovec* iov, size_t n, const void* src, size_t len) {
    size_t done = 0;
    for (size_t i = 0; i < n && done < len; ++i) {
        size_t c = std::min(iov[i].iov_len, len - done);
        std::memcpy(iov[i].iov_base, static_cast<const uint8_t*>(src) + done, c);
        done += c;
    }
    return done;
}

// Visits [off, off+len) of the iovecs' data piecewise: fn(pointer into the iovec, position in
// the range, length). Returns the bytes visited (less than len if the iovecs end first).
template <typename Fn>
inline size_t iov_for_range(const iovec* iov, size_t n, size_t off, size_t len, Fn&& fn) {
    size_t done = 0;
    for (size_t i = 0; i < n && done < len; ++i) {
        if (off >= iov[i].iov_len) {
            off -= iov[i].iov_len;
            continue;
        }
        size_t c = std::min(iov[i].iov_len - off, len - done);
        fn(static_cast<uint8_t*>(iov[i].iov_base) + off, done, c);
        done += c;
        off = 0;
    }
    return done;
}

// Copies len bytes from src to offset `off` of the iovecs' data; returns bytes copied.
inline size_t iov_write_at(const iovec* iov, size_t n, size_t off, const void* src, size_t len) {
    return iov_for_range(iov, n, off, len, [&](uint8_t* p, size_t at, size_t c) {
        std::memcpy(p, static_cast<const uint8_t*>(src) + at, c);
    });
}

// Copies len bytes at offset `off` of the iovecs' data into dst; returns bytes copied.
inline size_t iov_read_at(const iovec* iov, size_t n, size_t off, void* dst, size_t len) {
    return iov_for_range(iov, n, off, len, [&](uint8_t* p, size_t at, size_t c) {
        std::memcpy(static_cast<uint8_t*>(dst) + at, p, c);
    });
}

// Drops `bytes` from the front: returns the index of the first iovec still holding data
// (adjusting it in place). `bytes` must not exceed the total.
inline size_t iov_consume_front(iovec* iov, size_t n, size_t bytes) {
    size_t i = 0;
    while (i < n && bytes > 0) {
        if (iov[i].iov_len > bytes) {
            iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + bytes;
            iov[i].iov_len -= bytes;
            return i;
        }
        bytes -= iov[i].iov_len;
        ++i;
    }
    return i;
}

}  // namespace vhostd::virtio
