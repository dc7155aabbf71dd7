// virtio-blk request parsing, free of queues and reactors: a request's header (already copied
// out of guest memory) and its data buffers become one backend operation, a status to complete
// with at once, or a GET_ID to answer. The shape of QEMU's virtio_blk_handle_request(): the
// request logic takes iovecs, so any transport (split or packed ring, another queue model) can
// use it, and it can be tested on its own (tests/unit/blk_request_test.cpp).
//
// Every value here comes from the guest: the sector, lengths, discard segments. All arithmetic
// on them is overflow-checked, and a discard/write-zeroes segment is copied out once and
// validated on the copy.
#pragma once

#include <sys/uio.h>

#include <cstdint>

#include "backends/block_backend.hpp"
#include "virtio/blk_types.hpp"

namespace vhostd::virtio::blk {

// What the parser needs to know about the device behind the queue.
struct DeviceLimits {
    uint64_t size_bytes = 0;
    uint32_t block_size = 512;  // logical block size: I/O must be aligned to it
    bool readonly = false;
    bool discard = false;
    bool write_zeroes = false;
    uint32_t max_discard_sectors = 0;  // per request, for discard and write-zeroes alike
    bool writethrough = false;         // write cache off: writes must be durable on completion
};

// A request's buffers after the header was taken off the front and the status byte off the
// back: `out` is device-readable data, `in` device-writable data.
struct Buffers {
    const iovec* out = nullptr;
    unsigned n_out = 0;
    uint64_t out_bytes = 0;
    const iovec* in = nullptr;
    unsigned n_in = 0;
    uint64_t in_bytes = 0;
};

enum class Action : uint8_t {
    kSubmit,    // hand `op` to the backend; OK completes with `used_len`
    kComplete,  // complete now with `status` (and `used_len` if OK)
    kGetId,     // copy the device id into the `in` buffers, complete OK
};

struct Parsed {
    Action action = Action::kComplete;
    uint8_t status = kSOk;
    // Bytes the device writes into the guest's buffers on success, the status byte included.
    uint32_t used_len = 1;
    backends::BlockRequest op{};
    // Why the guest's request is malformed, for a rate-limited log line; nullptr for outcomes a
    // correct driver can see (an unknown type, a feature the device does not offer).
    const char* error = nullptr;
};

Parsed parse_request(const ReqHeader& h, const Buffers& b, const DeviceLimits& dev);

}  // namespace vhostd::virtio::blk
