#include "virtio/blk_request.hpp"

#include "core/checked.hpp"
#include "virtio/iov.hpp"

namespace vhostd::virtio::blk {

using backends::BlockOp;
using backends::BlockRequest;

namespace {

Parsed done(uint8_t status, uint32_t used_len = 1) { return Parsed{Action::kComplete, status, used_len}; }

Parsed malformed(uint8_t status, const char* why) {
    Parsed p = done(status);
    p.error = why;
    return p;
}

// [sector * 512, + len) lies inside the device, and both ends are block aligned.
const char* check_range(uint64_t sector, uint64_t len, const DeviceLimits& dev) {
    auto off = checked_mul<uint64_t>(sector, kSectorSize);
    if (!off || !range_within(*off, len, 0, dev.size_bytes)) return "beyond the end of the device";
    if (*off % dev.block_size != 0 || len % dev.block_size != 0) return "not aligned to the logical block size";
    return nullptr;
}

Parsed read_write(const ReqHeader& h, const Buffers& b, const DeviceLimits& dev) {
    bool is_read = h.type == kTIn;
    if (is_read ? b.out_bytes != 0 : b.in_bytes != 0) return malformed(kSIoErr, "data buffers in the wrong direction");
    if (!is_read && dev.readonly) return malformed(kSIoErr, "write to a read-only device");
    uint64_t len = is_read ? b.in_bytes : b.out_bytes;
    if (const char* why = check_range(h.sector, len, dev)) return malformed(kSIoErr, why);
    // len fits the device and a chain is at most 4 GiB (the ring walk's bound): +1 fits.
    auto used = static_cast<uint32_t>((is_read ? len : 0) + 1);
    if (len == 0) return done(kSOk, used);
    Parsed p{Action::kSubmit, kSOk, used};
    p.op = BlockRequest{is_read ? BlockOp::kRead : BlockOp::kWrite, is_read ? b.in : b.out,
                        is_read ? b.n_in : b.n_out, h.sector * kSectorSize, len, !is_read && dev.writethrough};
    return p;
}

Parsed range_op(const ReqHeader& h, const Buffers& b, const DeviceLimits& dev) {
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
    BlockOp op = discard ? BlockOp::kDiscard
                         : ((seg.flags & kDiscardFlagUnmap) ? BlockOp::kWriteZeroesUnmap : BlockOp::kWriteZeroes);
    Parsed p{Action::kSubmit, kSOk, 1};
    p.op = BlockRequest{op, nullptr, 0, seg.sector * kSectorSize, len};
    return p;
}

}  // namespace

Parsed parse_request(const ReqHeader& h, const Buffers& b, const DeviceLimits& dev) {
    switch (h.type) {
        case kTIn:
        case kTOut:
            return read_write(h, b, dev);
        case kTFlush: {
            if (dev.readonly) return done(kSOk);  // nothing can be dirty
            Parsed p{Action::kSubmit, kSOk, 1};
            p.op = BlockRequest{BlockOp::kFlush};
            return p;
        }
        case kTGetId:
            return Parsed{Action::kGetId, kSOk, 1};
        case kTDiscard:
        case kTWriteZeroes:
            return range_op(h, b, dev);
        default:
            return done(kSUnsupp);
    }
}

}  // namespace vhostd::virtio::blk
