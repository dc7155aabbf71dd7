#include "shm/shared_buffer.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/checked.hpp"

namespace vhostd::shm {

Result<std::shared_ptr<SharedBuffer>> SharedBuffer::create(const char* name, uint64_t size) {
    if (size == 0 || size > (1ull << 32)) return make_error(Errc::kInvalid, "shared buffer size {}", size);
    UniqueFd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd.valid()) return sys_error("memfd_create {}", name);
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0) return sys_error("ftruncate {} to {}", name, size);
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) return sys_error("seal {}", name);
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) return sys_error("mmap {} ({} bytes)", name, size);
    std::shared_ptr<SharedBuffer> b(new SharedBuffer());
    b->fd_ = std::move(fd);
    b->base_ = p;
    b->map_len_ = size;
    b->data_ = static_cast<uint8_t*>(p);
    b->size_ = size;
    return b;
}

Result<std::shared_ptr<SharedBuffer>> SharedBuffer::map(int fd, uint64_t offset, uint64_t size) {
    if (size == 0 || size > (1ull << 32)) return make_error(Errc::kInvalid, "shared buffer size {}", size);
    long page = ::sysconf(_SC_PAGESIZE);
    if (offset % static_cast<uint64_t>(page) != 0)
        return make_error(Errc::kInvalid, "shared buffer offset {:#x} is not page aligned", offset);
    auto end = checked_add<uint64_t>(offset, size);
    if (!end) return make_error(Errc::kInvalid, "shared buffer offset {:#x} + size {:#x} overflows", offset, size);
    struct stat st {};
    if (::fstat(fd, &st) < 0) return sys_error("fstat shared buffer fd");
    if (static_cast<uint64_t>(st.st_size) < *end)
        return make_error(Errc::kOutOfRange, "shared buffer {:#x}+{:#x} is past the end of its fd ({} bytes)", offset,
                          size, st.st_size);
    // Without a shrink seal the peer could truncate the file under our mapping (SIGBUS).
    int seals = ::fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        return make_error(Errc::kInvalid, "shared buffer fd is not sealed against shrinking");
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(offset));
    if (p == MAP_FAILED) return sys_error("mmap shared buffer ({} bytes at {:#x})", size, offset);
    std::shared_ptr<SharedBuffer> b(new SharedBuffer());
    b->base_ = p;
    b->map_len_ = size;
    b->data_ = static_cast<uint8_t*>(p);
    b->size_ = size;
    return b;
}

SharedBuffer::~SharedBuffer() {
    if (base_ != nullptr) ::munmap(base_, map_len_);
}

}  // namespace vhostd::shm
