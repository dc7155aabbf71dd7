// virtio-blk request parsing, free of queues and reactors: a request's header (already copied
// out of guest memory) and its data buffers become one backend operation, a status to complete
// with at once, or a GET_ID to answer. The shape of QEMU's virtio_blk_handle_request(): the
// request logic takes iovecs, so any transport (split or packed ring, another queue model) can
// use it, and it can be tested on its own (tests/unit/blk_request_test.cpp). Inline: it runs
// once per request on the data path.
//
// Every value here comes from the guest: the sector, lengths, discard segments. All arithmetic
// on them is overflow-checked, and a discard/write-zeroes segment is copied out once and
// validated on the copy.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>

#include "backends/block_backend.hpp"
#include "core/checked.hpp"
#include "virtio/iov.hpp"
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
    // Zoned (VIRTIO_BLK_F_ZONED offered): zone size and the largest ZONE_APPEND, in bytes.
    uint64_t zone_bytes = 0;  // 0: not zoned, zone commands are unsupported
    uint32_t max_append_bytes = 0;
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

// ZONE_APPEND's device-writable part before the status byte: the sector the data went to.
inline constexpr uint64_t kAppendSectorBytes = 8;

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

// Inline: it runs once per request on the data path, in the queue's own pass.
namespace detail {

inline Parsed done(uint8_t status, uint32_t used_len = 1) { return Parsed{Action::kComplete, status, used_len}; }

inline Parsed malformed(uint8_t status, const char* why) {
    Parsed p = done(status);
    p.error = why;
    return p;
}

// [sector * 512, + len) lies inside the device, and both ends are block aligned.
inline const char* check_range(uint64_t sector, uint64_t len, const DeviceLimits& dev) {
    auto off = checked_mul<uint64_t>(sector, kSectorSize);
    if (!off || !range_within(*off, len, 0, dev.size_bytes)) return "beyond the end of the device";
    if (*off % dev.block_size != 0 || len % dev.block_size != 0) return "not aligned to the logical block size";
    return nullptr;
}

inline Parsed read_write(const ReqHeader& h, const Buffers& b, const DeviceLimits& dev) {
    bool is_read = h.type == kTIn;
    if (is_read ? b.out_bytes != 0 : b.in_bytes != 0) return malformed(kSIoErr, "data buffers in the wrong direction");
    if (!is_read && dev.readonly) return malformed(kSIoErr, "write to a read-only device");
    uint64_t len = is_read ? b.in_bytes : b.out_bytes;
    if (const char* why = check_range(h.sector, len, dev)) return malformed(kSIoErr, why);
    // The used element has 32 bits. A chain holds at most 4 GiB (the ring walk's bound) and len
    // is block aligned, so len + 1 <= 2^32 - 511 fits; min() keeps it so if either bound moves.
    auto used = static_cast<uint32_t>(std::min<uint64_t>((is_read ? len : 0) + 1, UINT32_MAX));
    if (len == 0) return done(kSOk, used);
    Parsed p{Action::kSubmit, kSOk, used};
    p.op = backends::BlockRequest{is_read ? backends::BlockOp::kRead : backends::BlockOp::kWrite,
                                  is_read ? b.in : b.out, is_read ? b.n_in : b.n_out, h.sector * kSectorSize, len,
                                  !is_read && dev.writethrough};
    return p;
}

inline Parsed range_op(const ReqHeader& h, const Buffers& b, const DeviceLimits& dev) {
    bool discard = h.type == kTDiscard;
    if (discard ? !dev.discard : !dev.write_zeroes) return done(kSUnsupp);
    if (b.out_bytes == 0 || b.out_bytes % sizeof(DiscardSegment) != 0)
        return malformed(kSUnsupp, "discard/write-zeroes payload is not a whole number of segments");
    if (b.out_bytes > sizeof(DiscardSegment)) return done(kSUnsupp);  // max_*_seg is 1
    DiscardSegment seg{};
    iov_copy_from(b.out, b.n_out, &seg, sizeof(seg));  // copied once; the copy is what we trust
    if (seg.flags & ~kDiscardFlagUnmap) return done(kSUnsupp);
    if (discard && (seg.flags & kDiscardFlagUnmap)) return done(kSUnsupp);
    if (seg.num_sectors > dev.max_discard_sectors)
        return malformed(kSIoErr, "discard/write-zeroes larger than advertised");
    uint64_t len = uint64_t{seg.num_sectors} * kSectorSize;
    if (const char* why = check_range(seg.sector, len, dev)) return malformed(kSIoErr, why);
    if (len == 0) return done(kSOk);
    using backends::BlockOp;
    BlockOp op = discard ? BlockOp::kDiscard
                         : ((seg.flags & kDiscardFlagUnmap) ? BlockOp::kWriteZeroesUnmap : BlockOp::kWriteZeroes);
    Parsed p{Action::kSubmit, kSOk, 1};
    p.op = backends::BlockRequest{op, nullptr, 0, seg.sector * kSectorSize, len};
    return p;
}

// A zone command on a zoned device. Management commands carry no data and name a zone by its
// first sector; a report fills the device-writable buffer from the zone holding `sector`; an
// append writes at the zone's write pointer and answers the sector in the 8 bytes before the
// status (used length 9).
inline Parsed zone_op(const ReqHeader& h, const Buffers& b, const DeviceLimits& dev) {
    using backends::BlockOp;
    if (dev.zone_bytes == 0) return done(kSUnsupp);
    const auto off = checked_mul<uint64_t>(h.sector, kSectorSize);
    const bool inside = off && *off < dev.size_bytes;
    Parsed p{Action::kSubmit, kSOk, 1};
    switch (h.type) {
        case kTZoneReport: {
            if (b.out_bytes != 0) return malformed(kSIoErr, "zone report with device-readable data");
            if (b.in_bytes < sizeof(ZoneReportHeader) + sizeof(ZoneDescriptor))
                return malformed(kSIoErr, "zone report buffer smaller than a header and one zone");
            if (!inside) return done(kSZoneInvalidCmd);
            // The used element has 32 bits; a report longer than that says so in nr_zones.
            const uint64_t len = std::min<uint64_t>(b.in_bytes, UINT32_MAX - 1) / sizeof(ZoneDescriptor) *
                                 sizeof(ZoneDescriptor);
            p.op = backends::BlockRequest{BlockOp::kZoneReport, b.in, b.n_in, *off, len};
            return p;
        }
        case kTZoneAppend: {
            if (dev.readonly) return malformed(kSIoErr, "zone append to a read-only device");
            if (b.in_bytes != kAppendSectorBytes)
                return malformed(kSIoErr, "zone append without exactly 8 device-writable bytes before the status");
            if (b.out_bytes == 0) return malformed(kSIoErr, "zone append without data");
            if (!inside || *off % dev.zone_bytes != 0) return done(kSZoneInvalidCmd);
            if (b.out_bytes > dev.max_append_bytes) return malformed(kSZoneInvalidCmd, "zone append larger than max_append_sectors");
            if (const char* why = check_range(h.sector, b.out_bytes, dev)) return malformed(kSIoErr, why);
            if (*off / dev.zone_bytes != (*off + b.out_bytes - 1) / dev.zone_bytes) return done(kSZoneInvalidCmd);
            p.used_len = kAppendSectorBytes + 1;
            p.op = backends::BlockRequest{BlockOp::kZoneAppend, b.out, b.n_out, *off, b.out_bytes, dev.writethrough};
            return p;
        }
        default: {
            if (b.out_bytes != 0 || b.in_bytes != 0) return malformed(kSIoErr, "zone management command with data");
            if (dev.readonly) return done(kSZoneInvalidCmd);
            BlockOp op = BlockOp::kZoneResetAll;
            switch (h.type) {
                case kTZoneOpen: op = BlockOp::kZoneOpen; break;
                case kTZoneClose: op = BlockOp::kZoneClose; break;
                case kTZoneFinish: op = BlockOp::kZoneFinish; break;
                case kTZoneReset: op = BlockOp::kZoneReset; break;
                default: break;
            }
            if (op != BlockOp::kZoneResetAll && (!inside || *off % dev.zone_bytes != 0)) return done(kSZoneInvalidCmd);
            p.op = backends::BlockRequest{op, nullptr, 0, op == BlockOp::kZoneResetAll ? 0 : *off, 0};
            return p;
        }
    }
}

}  // namespace detail

inline Parsed parse_request(const ReqHeader& h, const Buffers& b, const DeviceLimits& dev) {
    using namespace detail;
    switch (h.type) {
        case kTIn:
        case kTOut:
            return read_write(h, b, dev);
        case kTFlush: {
            if (dev.readonly) return done(kSOk);  // nothing can be dirty
            Parsed p{Action::kSubmit, kSOk, 1};
            p.op = backends::BlockRequest{backends::BlockOp::kFlush};
            return p;
        }
        case kTGetId:
            return Parsed{Action::kGetId, kSOk, 1};
        case kTDiscard:
        case kTWriteZeroes:
            return range_op(h, b, dev);
        case kTZoneAppend:
        case kTZoneReport:
        case kTZoneOpen:
        case kTZoneClose:
        case kTZoneFinish:
        case kTZoneReset:
        case kTZoneResetAll:
            return zone_op(h, b, dev);
        default:
            return done(kSUnsupp);
    }
}

}  // namespace vhostd::virtio::blk
