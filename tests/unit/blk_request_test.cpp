// virtio-blk request parsing on its own: header + buffers in, operation or status out. No queue,
// no reactor, no guest memory model: plain iovecs over local arrays.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "virtio/blk_request.hpp"

namespace vhostd::virtio::blk {
namespace {

using backends::BlockOp;

constexpr uint64_t kDisk = 1 << 20;  // 1 MiB: 2048 sectors

DeviceLimits disk(uint32_t block_size = 512) {
    return DeviceLimits{.size_bytes = kDisk, .block_size = block_size, .discard = true, .write_zeroes = true,
                        .max_discard_sectors = 1024};
}

struct Req {
    ReqHeader h{};
    std::vector<uint8_t> out_data, in_data;
    iovec out{}, in{};
    Buffers bufs() {
        out = {out_data.data(), out_data.size()};
        in = {in_data.data(), in_data.size()};
        return Buffers{&out, out_data.empty() ? 0u : 1u, out_data.size(), &in, in_data.empty() ? 0u : 1u,
                       in_data.size()};
    }
};

Req io(uint32_t type, uint64_t sector, size_t out_bytes, size_t in_bytes) {
    Req r;
    r.h = ReqHeader{type, 0, sector};
    r.out_data.resize(out_bytes);
    r.in_data.resize(in_bytes);
    return r;
}

Req range(uint32_t type, uint64_t sector, uint32_t sectors, uint32_t flags, size_t segments = 1) {
    Req r;
    r.h = ReqHeader{type, 0, 0};
    r.out_data.resize(segments * sizeof(DiscardSegment));
    for (size_t i = 0; i < segments; ++i) {
        DiscardSegment s{sector, sectors, flags};
        std::memcpy(r.out_data.data() + i * sizeof(s), &s, sizeof(s));
    }
    return r;
}

Parsed parse(Req r, const DeviceLimits& d = disk()) { return parse_request(r.h, r.bufs(), d); }

TEST(BlkRequest, ReadBecomesABackendReadOfTheWritableBuffers) {
    Req r = io(kTIn, 8, 0, 4096);
    Parsed p = parse_request(r.h, r.bufs(), disk());
    ASSERT_EQ(p.action, Action::kSubmit);
    EXPECT_EQ(p.op.op, BlockOp::kRead);
    EXPECT_EQ(p.op.offset, 8u * 512);
    EXPECT_EQ(p.op.len, 4096u);
    EXPECT_EQ(p.op.iov, &r.in);
    EXPECT_EQ(p.op.iovcnt, 1u);
    EXPECT_EQ(p.used_len, 4097u) << "data and status byte";
    EXPECT_FALSE(p.op.fua);
}

TEST(BlkRequest, LargestReadStillCountsItsBytesInTheUsedLength) {
    // The parser does not touch a read's buffers, so a length without memory behind it will do.
    DeviceLimits big = disk();
    big.size_bytes = 8ull << 30;
    ReqHeader h{kTIn, 0, 0};
    iovec in{nullptr, 0};
    const uint64_t len = (1ull << 32) - 512;  // the largest block-aligned chain the ring walk allows
    Parsed p = parse_request(h, Buffers{nullptr, 0, 0, &in, 1, len}, big);
    ASSERT_EQ(p.action, Action::kSubmit);
    EXPECT_EQ(p.op.len, len);
    EXPECT_EQ(p.used_len, static_cast<uint32_t>(len + 1));
}

TEST(BlkRequest, WriteCarriesFuaOnlyWhenTheCacheIsWritethrough) {
    Parsed wb = parse(io(kTOut, 0, 512, 0));
    ASSERT_EQ(wb.action, Action::kSubmit);
    EXPECT_EQ(wb.op.op, BlockOp::kWrite);
    EXPECT_EQ(wb.used_len, 1u) << "a write writes only the status byte";
    EXPECT_FALSE(wb.op.fua);
    DeviceLimits wt = disk();
    wt.writethrough = true;
    EXPECT_TRUE(parse(io(kTOut, 0, 512, 0), wt).op.fua);
    EXPECT_FALSE(parse(io(kTIn, 0, 0, 512), wt).op.fua);
}

TEST(BlkRequest, ZeroLengthIoCompletesAtOnce) {
    Parsed p = parse(io(kTIn, 0, 0, 0));
    EXPECT_EQ(p.action, Action::kComplete);
    EXPECT_EQ(p.status, kSOk);
}

TEST(BlkRequest, MalformedIoIsAnIoErrorWithAReason) {
    DeviceLimits ro = disk();
    ro.readonly = true;
    struct Case {
        const char* name;
        Req r;
        DeviceLimits d;
    } cases[] = {
        {"write to a read-only device", io(kTOut, 0, 512, 0), ro},
        {"read with device-readable data", io(kTIn, 0, 512, 512), disk()},
        {"write with device-writable data", io(kTOut, 0, 512, 512), disk()},
        {"read past the end", io(kTIn, kDisk / 512 - 1, 0, 1024), disk()},
        {"sector * 512 overflows", io(kTIn, UINT64_MAX / 256, 0, 512), disk()},
        {"sector at the very top", io(kTOut, UINT64_MAX, 512, 0), disk()},
        {"length not a multiple of 4K", io(kTIn, 0, 0, 512), disk(4096)},
        {"offset not 4K aligned", io(kTIn, 1, 0, 4096), disk(4096)},
    };
    for (auto& c : cases) {
        Parsed p = parse(c.r, c.d);
        EXPECT_EQ(p.action, Action::kComplete) << c.name;
        EXPECT_EQ(p.status, kSIoErr) << c.name;
        EXPECT_NE(p.error, nullptr) << c.name;
    }
}

TEST(BlkRequest, FlushIsABackendFlushExceptOnReadOnlyDevices) {
    Parsed p = parse(io(kTFlush, 0, 0, 0));
    ASSERT_EQ(p.action, Action::kSubmit);
    EXPECT_EQ(p.op.op, BlockOp::kFlush);
    DeviceLimits ro = disk();
    ro.readonly = true;
    Parsed q = parse(io(kTFlush, 0, 0, 0), ro);
    EXPECT_EQ(q.action, Action::kComplete);
    EXPECT_EQ(q.status, kSOk);
}

TEST(BlkRequest, GetIdIsAnsweredByTheCaller) { EXPECT_EQ(parse(io(kTGetId, 0, 0, 20)).action, Action::kGetId); }

TEST(BlkRequest, UnknownTypesAreUnsupportedWithoutComplaint) {
    for (uint32_t t : {kTGetLifetime, kTSecureErase, 2u, 0xffffffffu}) {
        Parsed p = parse(io(t, 0, 0, 0));
        EXPECT_EQ(p.status, kSUnsupp) << t;
        EXPECT_EQ(p.error, nullptr) << "a correct driver may probe types: " << t;
    }
}

TEST(BlkRequest, DiscardAndWriteZeroesBecomeRangeOperations) {
    Parsed d = parse(range(kTDiscard, 8, 16, 0));
    ASSERT_EQ(d.action, Action::kSubmit);
    EXPECT_EQ(d.op.op, BlockOp::kDiscard);
    EXPECT_EQ(d.op.offset, 8u * 512);
    EXPECT_EQ(d.op.len, 16u * 512);
    EXPECT_EQ(d.op.iov, nullptr);
    EXPECT_EQ(parse(range(kTWriteZeroes, 0, 8, 0)).op.op, BlockOp::kWriteZeroes);
    EXPECT_EQ(parse(range(kTWriteZeroes, 0, 8, kDiscardFlagUnmap)).op.op, BlockOp::kWriteZeroesUnmap);
    Parsed empty = parse(range(kTDiscard, 8, 0, 0));
    EXPECT_EQ(empty.action, Action::kComplete);
    EXPECT_EQ(empty.status, kSOk);
}

TEST(BlkRequest, RangeOperationsOutsideTheContractAreRefused) {
    DeviceLimits none = disk();
    none.discard = none.write_zeroes = false;
    EXPECT_EQ(parse(range(kTDiscard, 0, 8, 0), none).status, kSUnsupp) << "discard not offered";
    EXPECT_EQ(parse(range(kTWriteZeroes, 0, 8, 0), none).status, kSUnsupp) << "write-zeroes not offered";
    EXPECT_EQ(parse(range(kTDiscard, 0, 8, kDiscardFlagUnmap)).status, kSUnsupp) << "discard with UNMAP";
    EXPECT_EQ(parse(range(kTDiscard, 0, 8, 0x4)).status, kSUnsupp) << "unknown segment flags";
    EXPECT_EQ(parse(range(kTDiscard, 0, 8, 0, 2)).status, kSUnsupp) << "two segments (max_discard_seg is 1)";
    Req partial = range(kTDiscard, 0, 8, 0);
    partial.out_data.resize(10);
    Parsed p = parse(partial);
    EXPECT_EQ(p.status, kSUnsupp) << "a partial segment";
    EXPECT_NE(p.error, nullptr);
    EXPECT_EQ(parse(io(kTDiscard, 0, 0, 0)).status, kSUnsupp) << "no segment at all";

    Parsed big = parse(range(kTWriteZeroes, 0, 1025, 0));
    EXPECT_EQ(big.status, kSIoErr) << "larger than advertised";
    EXPECT_EQ(parse(range(kTDiscard, kDisk / 512 - 4, 8, 0)).status, kSIoErr) << "past the end";
    EXPECT_EQ(parse(range(kTDiscard, UINT64_MAX / 2, 8, 0)).status, kSIoErr) << "sector overflows";
    EXPECT_EQ(parse(range(kTDiscard, 1, 8, 0), disk(4096)).status, kSIoErr) << "start not block aligned";
    EXPECT_EQ(parse(range(kTDiscard, 0, 9, 0), disk(4096)).status, kSIoErr) << "length not block aligned";
}

// A zoned disk: 1 MiB in 16 zones of 64 KiB (128 sectors), appends up to 32 KiB.
DeviceLimits zoned(uint32_t block_size = 512) {
    DeviceLimits d = disk(block_size);
    d.discard = d.write_zeroes = false;
    d.zone_bytes = 64 << 10;
    d.max_append_bytes = 32 << 10;
    return d;
}

TEST(BlkRequest, ZoneCommandsBecomeBackendZoneOperations) {
    Parsed rep = parse(io(kTZoneReport, 130, 0, 64 * 5 + 10), zoned());
    ASSERT_EQ(rep.action, Action::kSubmit);
    EXPECT_EQ(rep.op.op, BlockOp::kZoneReport);
    EXPECT_EQ(rep.op.offset, 130u * 512) << "a report starts at the zone holding any sector";
    EXPECT_EQ(rep.op.len, 64u * 5) << "whole descriptors only";
    EXPECT_EQ(rep.op.iovcnt, 1u);

    Parsed app = parse(io(kTZoneAppend, 256, 8192, 8), zoned());
    ASSERT_EQ(app.action, Action::kSubmit);
    EXPECT_EQ(app.op.op, BlockOp::kZoneAppend);
    EXPECT_EQ(app.op.offset, 256u * 512);
    EXPECT_EQ(app.op.len, 8192u);
    EXPECT_EQ(app.used_len, 9u) << "the append sector and the status";
    DeviceLimits wt = zoned();
    wt.writethrough = true;
    EXPECT_TRUE(parse(io(kTZoneAppend, 0, 4096, 8), wt).op.fua);

    const std::pair<uint32_t, BlockOp> mgmt[] = {{kTZoneOpen, BlockOp::kZoneOpen},
                                                 {kTZoneClose, BlockOp::kZoneClose},
                                                 {kTZoneFinish, BlockOp::kZoneFinish},
                                                 {kTZoneReset, BlockOp::kZoneReset}};
    for (const auto& [type, op] : mgmt) {
        Parsed m = parse(io(type, 128 * 3, 0, 0), zoned());
        ASSERT_EQ(m.action, Action::kSubmit) << type;
        EXPECT_EQ(m.op.op, op);
        EXPECT_EQ(m.op.offset, 128u * 3 * 512);
        EXPECT_EQ(m.used_len, 1u);
    }
    Parsed all = parse(io(kTZoneResetAll, 77, 0, 0), zoned());
    ASSERT_EQ(all.action, Action::kSubmit);
    EXPECT_EQ(all.op.op, BlockOp::kZoneResetAll);
    EXPECT_EQ(all.op.offset, 0u) << "the sector of RESET_ALL means nothing";
}

TEST(BlkRequest, ZoneCommandsOutsideTheContractAreRefused) {
    for (uint32_t t : {kTZoneAppend, kTZoneReport, kTZoneOpen, kTZoneClose, kTZoneFinish, kTZoneReset, kTZoneResetAll}) {
        Parsed p = parse(io(t, 0, t == kTZoneAppend ? 4096 : 0, t == kTZoneReport ? 4096 : t == kTZoneAppend ? 8 : 0));
        EXPECT_EQ(p.status, kSUnsupp) << "type " << t << " on a device that is not zoned";
        EXPECT_EQ(p.error, nullptr);
    }
    const DeviceLimits z = zoned();
    // Reports.
    EXPECT_EQ(parse(io(kTZoneReport, 0, 0, 127), z).status, kSIoErr) << "no room for a header and a zone";
    EXPECT_NE(parse(io(kTZoneReport, 0, 0, 127), z).error, nullptr);
    EXPECT_EQ(parse(io(kTZoneReport, 0, 16, 4096), z).status, kSIoErr) << "device-readable data";
    EXPECT_EQ(parse(io(kTZoneReport, kDisk / 512, 0, 4096), z).status, kSZoneInvalidCmd) << "past the end";
    EXPECT_EQ(parse(io(kTZoneReport, UINT64_MAX / 256, 0, 4096), z).status, kSZoneInvalidCmd) << "sector overflows";
    // Appends.
    EXPECT_EQ(parse(io(kTZoneAppend, 1, 4096, 8), z).status, kSZoneInvalidCmd) << "not a zone's start";
    EXPECT_EQ(parse(io(kTZoneAppend, kDisk / 512, 4096, 8), z).status, kSZoneInvalidCmd) << "past the end";
    EXPECT_EQ(parse(io(kTZoneAppend, 0, (32 << 10) + 512, 8), z).status, kSZoneInvalidCmd) << "larger than max_append";
    EXPECT_EQ(parse(io(kTZoneAppend, 0, 4096, 0), z).status, kSIoErr) << "no room for the append sector";
    EXPECT_EQ(parse(io(kTZoneAppend, 0, 4096, 16), z).status, kSIoErr) << "more than the append sector";
    EXPECT_EQ(parse(io(kTZoneAppend, 0, 0, 8), z).status, kSIoErr) << "no data";
    EXPECT_EQ(parse(io(kTZoneAppend, 0, 100, 8), z).status, kSIoErr) << "not whole blocks";
    EXPECT_EQ(parse(io(kTZoneAppend, 0, 512, 8), zoned(4096)).status, kSIoErr) << "not whole 4 KiB blocks";
    DeviceLimits ro = z;
    ro.readonly = true;
    EXPECT_EQ(parse(io(kTZoneAppend, 0, 4096, 8), ro).status, kSIoErr) << "read-only";
    EXPECT_EQ(parse(io(kTZoneReset, 0, 0, 0), ro).status, kSZoneInvalidCmd) << "read-only";
    // Management.
    EXPECT_EQ(parse(io(kTZoneOpen, 64, 0, 0), z).status, kSZoneInvalidCmd) << "not a zone's start";
    EXPECT_EQ(parse(io(kTZoneReset, kDisk / 512, 0, 0), z).status, kSZoneInvalidCmd) << "past the end";
    EXPECT_EQ(parse(io(kTZoneFinish, 0, 0, 8), z).status, kSIoErr) << "with data";
    EXPECT_EQ(parse(io(kTZoneResetAll, 0, 16, 0), z).status, kSIoErr) << "with data";
    // Discard is not offered on a zoned device (the device leaves the feature out).
    EXPECT_EQ(parse(range(kTDiscard, 0, 8, 0), z).status, kSUnsupp);
}

}  // namespace
}  // namespace vhostd::virtio::blk
