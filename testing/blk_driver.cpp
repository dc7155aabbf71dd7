#include "testing/blk_driver.hpp"

#include <algorithm>
#include <cstring>

namespace vhostd::testing {

namespace blk = virtio::blk;

namespace {

// Appends descriptors covering [gpa, gpa+len) cut into n nearly equal pieces.
void cut(std::vector<DriverBuf>& out, uint64_t gpa, uint32_t len, uint32_t n, bool writable) {
    if (len == 0) return;
    n = std::clamp<uint32_t>(n, 1, len);
    uint32_t base = len / n, extra = len % n;
    for (uint32_t i = 0; i < n; ++i) {
        uint32_t l = base + (i < extra ? 1 : 0);
        out.push_back(DriverBuf{gpa, l, writable});
        gpa += l;
    }
}

}  // namespace

Result<GuestBlkRequest> GuestBlkRequest::create(GuestRam& mem, uint32_t type, uint64_t sector, uint32_t data_len,
                                      const BlkReqOptions& opts) {
    constexpr uint64_t kPage = 4096;
    constexpr uint32_t kHdr = sizeof(blk::ReqHeader);
    if (opts.header_segments == 0 || opts.header_segments > kHdr)
        return make_error(Errc::kInvalid, "header_segments {} not in 1..16", opts.header_segments);
    bool writable = opts.data_writable.value_or(type == blk::kTIn || type == blk::kTGetId || type == blk::kTZoneReport);
    const uint32_t trailer = type == blk::kTZoneAppend ? 8 : 0;
    if (opts.merge_status && (!writable || data_len == 0))
        return make_error(Errc::kInvalid, "merge_status needs writable data");

    // Data page aligned, header right before it, status right after it.
    VHOSTD_ASSIGN_OR_RETURN(uint64_t base, mem.alloc(kPage + uint64_t{data_len} + trailer + 1, kPage));
    GuestBlkRequest r;
    r.mem_ = &mem;
    r.data_len_ = data_len;
    r.data_writable_ = writable;
    r.indirect_ = opts.indirect;
    r.trailer_ = trailer;
    r.header_gpa_ = base + kPage - kHdr;
    r.rearm(type, sector);

    r.bufs_.reserve(opts.header_segments + std::max<uint32_t>(opts.data_segments, 1) + 1);
    cut(r.bufs_, r.header_gpa_, kHdr, opts.header_segments, false);
    if (opts.merge_status) {
        cut(r.bufs_, r.data_gpa(), data_len, opts.data_segments, true);
        r.bufs_.back().len += 1;
    } else {
        cut(r.bufs_, r.data_gpa(), data_len, opts.data_segments, writable);
        r.bufs_.push_back(DriverBuf{r.data_gpa() + data_len, trailer + 1, true});
    }
    return r;
}

void GuestBlkRequest::rearm(uint32_t type, uint64_t sector) {
    type_ = type;
    sector_ = sector;
    blk::ReqHeader h{type, 0, sector};
    std::memcpy(mem_->host(header_gpa_, sizeof(h)), &h, sizeof(h));
    reset_status();
}

std::span<uint8_t> GuestBlkRequest::data() const {
    if (data_len_ == 0) return {};
    return {mem_->host(data_gpa(), data_len_), data_len_};
}

uint8_t GuestBlkRequest::status() const {
    // The device wrote it before its release store of used->idx, which pop_used() acquired.
    return *mem_->host(status_gpa(), 1);
}

uint64_t GuestBlkRequest::append_sector() const {
    uint64_t v = 0;
    if (trailer_ == sizeof(v)) std::memcpy(&v, mem_->host(data_gpa() + data_len_, sizeof(v)), sizeof(v));
    return v;
}

void GuestBlkRequest::reset_status() const { *mem_->host(status_gpa(), 1) = kBlkStatusUnset; }

Result<GuestBlkRequest> make_blk_read(GuestRam& mem, uint64_t sector, uint32_t len, const BlkReqOptions& opts) {
    return GuestBlkRequest::create(mem, blk::kTIn, sector, len, opts);
}

Result<GuestBlkRequest> make_blk_write(GuestRam& mem, uint64_t sector, std::span<const uint8_t> data,
                                  const BlkReqOptions& opts) {
    if (data.size() > UINT32_MAX) return make_error(Errc::kOutOfRange, "write too large");
    auto r = GuestBlkRequest::create(mem, blk::kTOut, sector, static_cast<uint32_t>(data.size()), opts);
    if (r && !data.empty()) std::memcpy(r->data().data(), data.data(), data.size());
    return r;
}

Result<GuestBlkRequest> make_blk_flush(GuestRam& mem, const BlkReqOptions& opts) {
    return GuestBlkRequest::create(mem, blk::kTFlush, 0, 0, opts);
}

Result<GuestBlkRequest> make_blk_get_id(GuestRam& mem, const BlkReqOptions& opts) {
    return GuestBlkRequest::create(mem, blk::kTGetId, 0, blk::kIdBytes, opts);
}

namespace {
Result<GuestBlkRequest> make_segments_req(GuestRam& mem, uint32_t type, std::span<const blk::DiscardSegment> segs,
                                     const BlkReqOptions& opts) {
    uint64_t bytes = segs.size() * sizeof(blk::DiscardSegment);
    if (bytes > UINT32_MAX) return make_error(Errc::kOutOfRange, "too many segments");
    auto r = GuestBlkRequest::create(mem, type, 0, static_cast<uint32_t>(bytes), opts);
    if (r && bytes != 0) std::memcpy(r->data().data(), segs.data(), bytes);
    return r;
}
}  // namespace

Result<GuestBlkRequest> make_blk_discard(GuestRam& mem, std::span<const blk::DiscardSegment> segs,
                                    const BlkReqOptions& opts) {
    return make_segments_req(mem, blk::kTDiscard, segs, opts);
}

Result<GuestBlkRequest> make_blk_write_zeroes(GuestRam& mem, std::span<const blk::DiscardSegment> segs,
                                         const BlkReqOptions& opts) {
    return make_segments_req(mem, blk::kTWriteZeroes, segs, opts);
}

Result<GuestBlkRequest> make_blk_zone_append(GuestRam& mem, uint64_t zone_sector, std::span<const uint8_t> data,
                                             const BlkReqOptions& opts) {
    if (data.size() > UINT32_MAX) return make_error(Errc::kOutOfRange, "append too large");
    auto r = GuestBlkRequest::create(mem, blk::kTZoneAppend, zone_sector, static_cast<uint32_t>(data.size()), opts);
    if (r && !data.empty()) std::memcpy(r->data().data(), data.data(), data.size());
    if (r) std::memset(mem.host(r->data_gpa() + data.size(), 8), 0xee, 8);  // not answered yet
    return r;
}

Result<GuestBlkRequest> make_blk_zone_report(GuestRam& mem, uint64_t sector, uint32_t bytes, const BlkReqOptions& opts) {
    return GuestBlkRequest::create(mem, blk::kTZoneReport, sector, bytes, opts);
}

Result<GuestBlkRequest> make_blk_zone_mgmt(GuestRam& mem, uint32_t type, uint64_t sector, const BlkReqOptions& opts) {
    return GuestBlkRequest::create(mem, type, sector, 0, opts);
}

blk::Config parse_blk_config(std::span<const uint8_t> bytes) {
    blk::Config c{};
    if (!bytes.empty()) std::memcpy(&c, bytes.data(), std::min(bytes.size(), sizeof(c)));
    return c;
}

}  // namespace vhostd::testing
