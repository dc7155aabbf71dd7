// virtio-blk requests as a guest driver builds them, on top of DriverQueue / GuestRam.
// Device constants and wire structs come from virtio/blk_types.hpp (virtio::blk).
//
// A request occupies one contiguous guest range (so any descriptor framing is just a set of
// cut points):  [16-byte header][data (page aligned)][1-byte status]
// (ZONE_APPEND: [header][data][8-byte append sector][status], the last 9 bytes writable.)
// The header is device-readable; data is device-writable for IN/GET_ID and readable
// otherwise; the status byte is device-writable. The status is preset to 0xff so a request the
// device never completed is recognisable.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/result.hpp"
#include "virtio/blk_types.hpp"
#include "testing/driver_queue.hpp"

namespace vhostd::testing {

inline constexpr uint8_t kBlkStatusUnset = 0xff;

struct BlkReqOptions {
    uint32_t data_segments = 1;    // split the data over N descriptors (clamped to data length)
    uint32_t header_segments = 1;  // split the 16-byte header over N descriptors (1..16)
    bool merge_status = false;     // status shares the last data descriptor (writable data only)
    bool indirect = false;         // submit as an indirect table
    std::optional<bool> data_writable;  // override the natural direction (hostile tests)
};

class GuestBlkRequest {
public:
    // Allocates the request in guest memory, writes the header, zeroes data, presets status.
    static Result<GuestBlkRequest> create(GuestRam& mem, uint32_t type, uint64_t sector, uint32_t data_len,
                                     const BlkReqOptions& opts = {});

    // Rewrites type/sector and resets the status byte; keeps layout and data (for reuse in loops).
    void rearm(uint32_t type, uint64_t sector);
    // Adds the chain to the queue (not published). Returns the head.
    Result<uint16_t> submit(DriverQueue& q) const { return q.add_chain(bufs_, indirect_); }

    uint32_t type() const { return type_; }
    uint64_t sector() const { return sector_; }
    uint32_t data_len() const { return data_len_; }
    std::span<uint8_t> data() const;  // host view of the data area
    uint8_t status() const;
    void reset_status() const;
    // Bytes the device should report written in the used element (writable data + status).
    uint32_t expected_used_len() const { return (data_writable_ ? data_len_ : 0) + 1; }

    std::span<const DriverBuf> bufs() const { return bufs_; }
    bool indirect() const { return indirect_; }
    uint64_t header_gpa() const { return header_gpa_; }
    uint64_t data_gpa() const { return header_gpa_ + sizeof(virtio::blk::ReqHeader); }
    uint64_t status_gpa() const { return data_gpa() + data_len_ + trailer_; }
    // ZONE_APPEND: the sector the device says the data went to.
    uint64_t append_sector() const;

private:
    GuestBlkRequest() = default;
    GuestRam* mem_ = nullptr;
    uint32_t type_ = 0;
    uint64_t sector_ = 0;
    uint32_t data_len_ = 0;
    bool data_writable_ = false;
    bool indirect_ = false;
    uint32_t trailer_ = 0;  // device-writable bytes between data and status
    uint64_t header_gpa_ = 0;
    std::vector<DriverBuf> bufs_;
};

Result<GuestBlkRequest> make_blk_read(GuestRam& mem, uint64_t sector, uint32_t len, const BlkReqOptions& opts = {});
Result<GuestBlkRequest> make_blk_write(GuestRam& mem, uint64_t sector, std::span<const uint8_t> data,
                                  const BlkReqOptions& opts = {});
Result<GuestBlkRequest> make_blk_flush(GuestRam& mem, const BlkReqOptions& opts = {});
Result<GuestBlkRequest> make_blk_get_id(GuestRam& mem, const BlkReqOptions& opts = {});  // 20-byte id buffer
Result<GuestBlkRequest> make_blk_discard(GuestRam& mem, std::span<const virtio::blk::DiscardSegment> segs,
                                    const BlkReqOptions& opts = {});
Result<GuestBlkRequest> make_blk_write_zeroes(GuestRam& mem, std::span<const virtio::blk::DiscardSegment> segs,
                                         const BlkReqOptions& opts = {});

// Zoned devices: an append of `data` to the zone starting at `zone_sector`; a report into a
// `bytes`-long buffer from the zone holding `sector`; open/close/finish/reset/reset-all (`type`).
Result<GuestBlkRequest> make_blk_zone_append(GuestRam& mem, uint64_t zone_sector, std::span<const uint8_t> data,
                                             const BlkReqOptions& opts = {});
Result<GuestBlkRequest> make_blk_zone_report(GuestRam& mem, uint64_t sector, uint32_t bytes, const BlkReqOptions& opts = {});
Result<GuestBlkRequest> make_blk_zone_mgmt(GuestRam& mem, uint32_t type, uint64_t sector, const BlkReqOptions& opts = {});

constexpr virtio::blk::DiscardSegment blk_segment(uint64_t sector, uint32_t num_sectors, bool unmap = false) {
    return {sector, num_sectors, unmap ? virtio::blk::kDiscardFlagUnmap : 0u};
}

// Parses a GET_CONFIG payload (any length; missing trailing fields read as zero).
virtio::blk::Config parse_blk_config(std::span<const uint8_t> bytes);

}  // namespace vhostd::testing
