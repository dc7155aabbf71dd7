#include "pool/format.hpp"

#include <cstring>
#include <set>

#include <fmt/format.h>

#include "core/checked.hpp"
#include "core/crc32c.hpp"
#include "pool/codec.hpp"

namespace vhostd::pool {
namespace {

constexpr char kSuperMagic[8] = {'V', 'H', 'D', 'P', 'O', 'O', 'L', '1'};
constexpr char kCkptMagic[8] = {'V', 'H', 'D', 'P', 'C', 'K', 'P', 'T'};
constexpr char kJrnlMagic[8] = {'V', 'H', 'D', 'P', 'J', 'R', 'N', 'L'};
constexpr size_t kCrcOffset = 12;  // every block: magic (8), version or crc...
constexpr size_t kPoolNameMax = 63;

// The CRC of a block with its 4-byte CRC field (at `at`) taken as zero.
uint32_t block_crc(const uint8_t* b, size_t at) {
    uint32_t c = crc32c(b, at);
    static const uint8_t zero[4] = {};
    c = crc32c(zero, 4, c);
    return crc32c(b + at + 4, kBlock - at - 4, c);
}

void put_crc(std::vector<uint8_t>& b, size_t at, uint32_t crc) {
    for (int i = 0; i < 4; ++i) b[at + static_cast<size_t>(i)] = static_cast<uint8_t>(crc >> (8 * i));
}

uint32_t get_u32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
           static_cast<uint32_t>(p[3]) << 24;
}

}  // namespace

std::string uuid_string(const Uuid& u) {
    std::string s;
    for (size_t i = 0; i < u.size(); ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
        s += fmt::format("{:02x}", u[i]);
    }
    return s;
}

Geometry Superblock::geometry() const {
    Geometry g;
    g.chunk_size = chunk_size;
    for (const auto& m : members) g.member_chunks.push_back(m.chunks);
    g.derive();
    return g;
}

bool Superblock::same_pool(const Superblock& o) const {
    if (pool_uuid != o.pool_uuid || pool_name != o.pool_name || chunk_size != o.chunk_size || layout != o.layout ||
        slot_bytes != o.slot_bytes || journal_blocks != o.journal_blocks || members.size() != o.members.size()) {
        return false;
    }
    for (size_t i = 0; i < members.size(); ++i) {
        if (members[i].uuid != o.members[i].uuid || members[i].data_offset != o.members[i].data_offset ||
            members[i].chunks != o.members[i].chunks) {
            return false;
        }
    }
    return true;
}

std::vector<uint8_t> Superblock::encode() const {
    std::vector<uint8_t> b;
    b.reserve(kBlock);
    ByteWriter w(b);
    w.bytes(kSuperMagic, 8);
    w.u32(kFormatVersion);
    w.u32(0);  // crc
    w.bytes(pool_uuid.data(), pool_uuid.size());
    w.name(pool_name);
    w.zeros(kPoolNameMax - pool_name.size());
    w.u32(member_index);
    w.u32(static_cast<uint32_t>(members.size()));
    w.u64(chunk_size);
    w.u8(static_cast<uint8_t>(layout));
    w.zeros(3);
    w.u64(slot_bytes);
    w.u32(journal_blocks);
    for (const auto& m : members) {
        w.bytes(m.uuid.data(), m.uuid.size());
        w.u64(m.data_offset);
        w.u64(m.chunks);
    }
    b.resize(kBlock, 0);
    put_crc(b, kCrcOffset, block_crc(b.data(), kCrcOffset));
    return b;
}

Result<Superblock> Superblock::decode(const uint8_t* block, uint64_t disk_size) {
    if (std::memcmp(block, kSuperMagic, 8) != 0) return make_error(Errc::kInvalid, "no pool superblock (magic)");
    ByteReader r(block + 8, kBlock - 8);
    uint32_t version = r.u32();
    uint32_t crc = r.u32();
    if (version != kFormatVersion) return make_error(Errc::kUnsupported, "pool format version {} (this vhostd reads {})", version, kFormatVersion);
    if (crc != block_crc(block, kCrcOffset)) return make_error(Errc::kInvalid, "superblock checksum mismatch");
    Superblock sb;
    r.bytes(sb.pool_uuid.data(), sb.pool_uuid.size());
    sb.pool_name = r.name();
    if (sb.pool_name.size() > kPoolNameMax || !valid_name(sb.pool_name)) return make_error(Errc::kInvalid, "superblock: bad pool name");
    r.skip(kPoolNameMax - sb.pool_name.size());
    sb.member_index = r.u32();
    uint32_t count = r.u32();
    sb.chunk_size = r.u64();
    uint8_t layout = r.u8();
    r.skip(3);
    sb.slot_bytes = r.u64();
    sb.journal_blocks = r.u32();
    if (!r.ok()) return make_error(Errc::kInvalid, "superblock truncated");
    if (count == 0 || count > kMaxMembers || sb.member_index >= count) {
        return make_error(Errc::kInvalid, "superblock: member {} of {}", sb.member_index, count);
    }
    if (!is_pow2(sb.chunk_size) || sb.chunk_size < kMinChunk || sb.chunk_size > kMaxChunk) {
        return make_error(Errc::kInvalid, "superblock: chunk size {}", sb.chunk_size);
    }
    if (layout > 1) return make_error(Errc::kInvalid, "superblock: layout {}", layout);
    sb.layout = static_cast<Layout>(layout);
    if (sb.journal_blocks < kMinJournalBlocks || sb.journal_blocks > kMaxJournalBlocks) {
        return make_error(Errc::kInvalid, "superblock: {} journal blocks", sb.journal_blocks);
    }
    std::set<Uuid> uuids;
    for (uint32_t i = 0; i < count; ++i) {
        MemberEntry m;
        r.bytes(m.uuid.data(), m.uuid.size());
        m.data_offset = r.u64();
        m.chunks = r.u64();
        if (!r.ok()) return make_error(Errc::kInvalid, "superblock: member table truncated");
        if (!uuids.insert(m.uuid).second) return make_error(Errc::kInvalid, "superblock: member {} repeats a UUID", i);
        if (m.data_offset % kBlock != 0 || m.data_offset < kMetaAreaStart || m.chunks == 0) {
            return make_error(Errc::kInvalid, "superblock: member {}: data offset {}, {} chunks", i, m.data_offset, m.chunks);
        }
        auto bytes = checked_mul(m.chunks, sb.chunk_size);
        auto end = bytes ? checked_add(m.data_offset, *bytes) : std::nullopt;
        if (!end || m.chunks > (uint64_t{1} << 40)) return make_error(Errc::kInvalid, "superblock: member {} overflows", i);
        if (i == sb.member_index && *end > disk_size) {
            return make_error(Errc::kInvalid, "superblock: member {} needs {} bytes, the drive has {}", i, *end, disk_size);
        }
        sb.members.push_back(m);
    }
    Geometry g = sb.geometry();
    uint64_t need = kBlock + Metadata::max_encoded_size(g);
    if (sb.slot_bytes % kBlock != 0 || sb.slot_bytes < need || sb.slot_bytes > (uint64_t{1} << 40)) {
        return make_error(Errc::kInvalid, "superblock: checkpoint slot of {} bytes (needs {})", sb.slot_bytes, need);
    }
    if (sb.meta_end() > sb.members[0].data_offset) {
        return make_error(Errc::kInvalid, "superblock: the metadata area overlaps member 0's data");
    }
    return sb;
}

std::vector<uint8_t> CheckpointHeader::encode() const {
    std::vector<uint8_t> b;
    b.reserve(kBlock);
    ByteWriter w(b);
    w.bytes(kCkptMagic, 8);
    w.u32(kFormatVersion);
    w.u32(0);
    w.bytes(pool_uuid.data(), pool_uuid.size());
    w.u64(generation);
    w.u64(replay_seq);
    w.u32(replay_prev_crc);
    w.u64(payload_len);
    w.u32(payload_crc);
    b.resize(kBlock, 0);
    put_crc(b, kCrcOffset, block_crc(b.data(), kCrcOffset));
    return b;
}

Result<CheckpointHeader> CheckpointHeader::decode(const uint8_t* block, const Uuid& pool, uint64_t max_payload) {
    if (std::memcmp(block, kCkptMagic, 8) != 0) return make_error(Errc::kInvalid, "no checkpoint (magic)");
    ByteReader r(block + 8, kBlock - 8);
    uint32_t version = r.u32();
    uint32_t crc = r.u32();
    if (version != kFormatVersion) return make_error(Errc::kUnsupported, "checkpoint version {}", version);
    if (crc != block_crc(block, kCrcOffset)) return make_error(Errc::kInvalid, "checkpoint header checksum mismatch");
    CheckpointHeader h;
    r.bytes(h.pool_uuid.data(), h.pool_uuid.size());
    h.generation = r.u64();
    h.replay_seq = r.u64();
    h.replay_prev_crc = r.u32();
    h.payload_len = r.u64();
    h.payload_crc = r.u32();
    if (!r.ok()) return make_error(Errc::kInvalid, "checkpoint header truncated");
    if (h.pool_uuid != pool) return make_error(Errc::kInvalid, "checkpoint of another pool");
    if (h.payload_len > max_payload) return make_error(Errc::kInvalid, "checkpoint payload of {} bytes (room: {})", h.payload_len, max_payload);
    if (h.replay_seq > (uint64_t{1} << 62)) return make_error(Errc::kInvalid, "checkpoint: journal sequence {}", h.replay_seq);
    return h;
}

std::vector<uint8_t> JournalBlock::encode(const Uuid& pool, uint32_t* crc_out) const {
    std::vector<uint8_t> b;
    b.reserve(kBlock);
    ByteWriter w(b);
    size_t used = 0;
    for (const auto& r : records) used += 2 + r.size();
    w.bytes(kJrnlMagic, 8);
    w.u32(0);  // crc, at 8
    w.u32(prev_crc);
    w.bytes(pool.data(), pool.size());
    w.u64(seq);
    w.u16(static_cast<uint16_t>(records.size()));
    w.u16(static_cast<uint16_t>(used));
    for (const auto& r : records) {
        w.u16(static_cast<uint16_t>(r.size()));
        w.bytes(r.data(), r.size());
    }
    b.resize(kBlock, 0);
    uint32_t crc = block_crc(b.data(), 8);
    put_crc(b, 8, crc);
    if (crc_out) *crc_out = crc;
    return b;
}

Result<JournalBlock> JournalBlock::decode(const uint8_t* block, const Uuid& pool, uint64_t seq, uint32_t prev_crc,
                                          uint32_t* crc_out) {
    if (std::memcmp(block, kJrnlMagic, 8) != 0) return make_error(Errc::kInvalid, "no journal block (magic)");
    uint32_t crc = get_u32(block + 8);
    if (crc != block_crc(block, 8)) return make_error(Errc::kInvalid, "journal block checksum mismatch");
    ByteReader r(block + 12, kBlock - 12);
    JournalBlock j;
    j.prev_crc = r.u32();
    Uuid u{};
    r.bytes(u.data(), u.size());
    j.seq = r.u64();
    uint16_t n = r.u16();
    uint16_t used = r.u16();
    if (!r.ok() || u != pool) return make_error(Errc::kInvalid, "journal block of another pool");
    if (j.seq != seq) return make_error(Errc::kInvalid, "journal block {} where {} was due", j.seq, seq);
    if (j.prev_crc != prev_crc) return make_error(Errc::kInvalid, "journal block {} does not chain to its predecessor", seq);
    if (used > room()) return make_error(Errc::kInvalid, "journal block {}: {} bytes of records", seq, used);
    ByteReader rr(block + kJournalHeader, used);
    for (uint16_t i = 0; i < n; ++i) {
        uint16_t len = rr.u16();
        if (!rr.ok() || len == 0 || len > kMaxRecordBytes || len > rr.left()) {
            return make_error(Errc::kInvalid, "journal block {}: record {} of {} bytes", seq, i, len);
        }
        std::vector<uint8_t> rec(len);
        rr.bytes(rec.data(), len);
        j.records.push_back(std::move(rec));
    }
    if (rr.left() != 0) return make_error(Errc::kInvalid, "journal block {}: bytes after the last record", seq);
    if (crc_out) *crc_out = crc;
    return j;
}

}  // namespace vhostd::pool
