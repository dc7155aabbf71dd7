// A shared memory buffer passed over the vhost-user socket that is not guest RAM: the inflight
// tracking buffer. RAII for the mapping (and the memfd when we created it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/result.hpp"
#include "core/unique_fd.hpp"

namespace vhostd::shm {

class SharedBuffer {
public:
    // A new zeroed memfd of `size` bytes, sealed against resizing (a peer holding it cannot
    // shrink it under our mapping), mapped shared.
    static Result<std::shared_ptr<SharedBuffer>> create(const char* name, uint64_t size);
    // Maps [offset, offset+size) of a peer's fd. The fd must be sealed against shrinking and
    // big enough; offset must be page aligned.
    static Result<std::shared_ptr<SharedBuffer>> map(int fd, uint64_t offset, uint64_t size);
    ~SharedBuffer();
    SharedBuffer(const SharedBuffer&) = delete;
    SharedBuffer& operator=(const SharedBuffer&) = delete;

    uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }
    int fd() const { return fd_.get(); }

private:
    SharedBuffer() = default;
    UniqueFd fd_;
    void* base_ = nullptr;
    size_t map_len_ = 0;
    uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

}  // namespace vhostd::shm
