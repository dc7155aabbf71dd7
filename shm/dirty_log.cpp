#include "shm/dirty_log.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "core/checked.hpp"

namespace vhostd::shm {

Result<std::shared_ptr<const DirtyLog>> DirtyLog::map(int fd, uint64_t size, uint64_t offset) {
    if (fd < 0) return make_error(Errc::kInvalid, "dirty log: no fd");
    if (size == 0 || size > kMaxBytes) return make_error(Errc::kInvalid, "dirty log size {} (want 1..{})", size, kMaxBytes);
    auto end = checked_add<uint64_t>(offset, size);
    if (!end) return make_error(Errc::kInvalid, "dirty log offset {:#x} + size {:#x} overflows", offset, size);
    struct stat st {};
    if (::fstat(fd, &st) < 0) return sys_error("fstat dirty log fd");
    if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) < *end)
        return make_error(Errc::kOutOfRange, "dirty log {:#x}+{:#x} is past the end of its fd ({} bytes)", offset, size,
                          st.st_size);
    int seals = ::fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        return make_error(Errc::kInvalid, "dirty log fd is not sealed against shrinking");
    // mmap wants a page-aligned file offset: map from the page the log starts in.
    const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t map_off = offset / page * page;
    const uint64_t len = *end - map_off;
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(map_off));
    if (p == MAP_FAILED) return sys_error("mmap dirty log ({} bytes at {:#x})", len, map_off);
    std::shared_ptr<DirtyLog> log(new DirtyLog());
    log->base_ = p;
    log->map_len_ = len;
    log->bits_ = static_cast<uint8_t*>(p) + (offset - map_off);
    log->size_ = size;
    return std::shared_ptr<const DirtyLog>(std::move(log));
}

DirtyLog::~DirtyLog() {
    if (base_ != nullptr) ::munmap(base_, map_len_);
}

void DirtyLog::mark(uint64_t gpa, uint64_t len) const {
    if (len == 0) return;
    const uint64_t first = gpa / kPageBytes;
    // The last byte, saturated: a range running off the top of the address space ends there.
    const uint64_t last_byte = len - 1 > UINT64_MAX - gpa ? UINT64_MAX : gpa + (len - 1);
    const uint64_t last = last_byte / kPageBytes;
    const uint64_t pages_in_log = size_ * 8;
    if (first >= pages_in_log) {
        beyond_.fetch_add(last - first + 1, std::memory_order_relaxed);
        return;
    }
    const uint64_t end = std::min(last, pages_in_log - 1);
    if (last > end) beyond_.fetch_add(last - end, std::memory_order_relaxed);
    // One atomic OR per byte of the bitmap (8 pages), with the bits of the range in it; release:
    // the guest-memory writes being logged are visible before their bit is.
    for (uint64_t byte = first / 8; byte <= end / 8; ++byte) {
        const uint64_t lo = std::max(first, byte * 8) - byte * 8;
        const uint64_t hi = std::min(end, byte * 8 + 7) - byte * 8;
        const auto mask = static_cast<uint8_t>((0xffu >> (7 - hi)) & (0xffu << lo));
        std::atomic_ref<uint8_t>(bits_[byte]).fetch_or(mask, std::memory_order_release);
    }
}

}  // namespace vhostd::shm
