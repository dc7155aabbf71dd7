// The dirty page log of a live migration (vhost-user LOG_SHMFD): a bitmap in a memfd the
// frontend shares with SET_LOG_BASE, one bit per 4 KiB guest-physical page, which the backend
// sets (atomic OR: the frontend clears bits concurrently while it syncs) after every write it
// makes into guest memory. A page written but not marked is not copied again to the migration
// destination: silent corruption there.
//
// The frontend sizes the log to cover its memory table; a page past the end of the log cannot be
// marked and is counted instead (`pages_beyond`). Marking is safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "core/result.hpp"

namespace vhostd::shm {

class DirtyLog {
public:
    static constexpr uint64_t kPageBytes = 4096;
    // Largest log accepted: covers 32 TiB of guest-physical address space.
    static constexpr uint64_t kMaxBytes = 1ull << 30;

    // Maps `size` bytes of `fd` from `offset` (any offset; QEMU sends 0). The fd must be
    // sealed against shrinking (a truncated log would SIGBUS us) and hold offset+size bytes.
    static Result<std::shared_ptr<const DirtyLog>> map(int fd, uint64_t size, uint64_t offset);
    ~DirtyLog();
    DirtyLog(const DirtyLog&) = delete;
    DirtyLog& operator=(const DirtyLog&) = delete;

    uint64_t size() const { return size_; }
    // Marks every page of [gpa, gpa + len) dirty (len 0: nothing).
    void mark(uint64_t gpa, uint64_t len) const;
    // Pages that fell past the end of the log (not marked).
    uint64_t pages_beyond() const { return beyond_.load(std::memory_order_relaxed); }
    const uint8_t* bits() const { return bits_; }

private:
    DirtyLog() = default;
    void* base_ = nullptr;
    size_t map_len_ = 0;
    uint8_t* bits_ = nullptr;
    uint64_t size_ = 0;
    mutable std::atomic<uint64_t> beyond_{0};
};

}  // namespace vhostd::shm
