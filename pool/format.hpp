// The on-disk format of a pool (version 1). Every multi-byte value is little-endian; every
// block carries a CRC32C; nothing read from a member is trusted before its checksum and every
// field are checked.
//
// Every member:
//   [0, 4 KiB)      superblock, copy A
//   [4 KiB, 8 KiB)  superblock, copy B (the same bytes; written after A, so one of them is whole)
//   [data_offset, data_offset + chunks * chunk_size)   data chunks
// Member 0 also holds the metadata area, between the superblocks and its data:
//   [8 KiB, +slot)          checkpoint slot 0
//   [+slot, +2 * slot)      checkpoint slot 1
//   [+2 * slot, +4 KiB * journal_blocks)   the journal, a ring of 4 KiB blocks
//
// The superblock is written once, when the pool is made: the pool's UUID and name, this
// member's index, the chunk size, the metadata area's place, and the table of all members
// (UUID, data offset, chunks), so any one member tells what the pool is made of.
//
// A checkpoint is everything (volumes and chunk maps, Metadata::encode) plus the journal
// position to replay from. Slots alternate; a new checkpoint goes to the slot that does not hold
// the newest valid one, so a torn checkpoint write leaves the previous one, whose journal blocks
// are still in the ring (the ring never overwrites a block a valid checkpoint may need).
//
// A journal block holds records (Metadata records, each whole in one block) and its sequence
// number; block `seq` lives at ring position seq % journal_blocks. Each block also carries the
// CRC of the block before it: replay starts at the checkpoint's sequence number and stops at the
// first block that is torn, stale (another sequence number) or does not chain to its
// predecessor. A commit returns only after its blocks are written and flushed.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/result.hpp"
#include "pool/metadata.hpp"

namespace vhostd::pool {

constexpr uint32_t kFormatVersion = 1;
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kSuperblockCopies = 2;
constexpr uint64_t kMetaAreaStart = kSuperblockCopies * kBlock;
constexpr size_t kJournalHeader = 44;
constexpr uint32_t kMinJournalBlocks = 8;
constexpr uint32_t kMaxJournalBlocks = 1u << 20;

struct MemberEntry {
    Uuid uuid{};
    uint64_t data_offset = 0;
    uint64_t chunks = 0;
};

struct Superblock {
    Uuid pool_uuid{};
    std::string pool_name;
    uint32_t member_index = 0;
    uint64_t chunk_size = 0;
    Layout layout = Layout::kStripe;   // the default for new volumes
    uint64_t slot_bytes = 0;           // one checkpoint slot (header block + payload room)
    uint32_t journal_blocks = 0;
    std::vector<MemberEntry> members;

    std::vector<uint8_t> encode() const;  // one block
    // Checks the checksum and every field (against `disk_size`, the member's real size).
    static Result<Superblock> decode(const uint8_t* block, uint64_t disk_size);
    uint64_t slot_offset(int slot) const { return kMetaAreaStart + static_cast<uint64_t>(slot) * slot_bytes; }
    uint64_t journal_offset() const { return kMetaAreaStart + 2 * slot_bytes; }
    uint64_t meta_end() const { return journal_offset() + uint64_t{journal_blocks} * kBlock; }
    Geometry geometry() const;
    bool same_pool(const Superblock& o) const;  // everything but member_index
};

struct CheckpointHeader {
    Uuid pool_uuid{};
    uint64_t generation = 0;
    uint64_t replay_seq = 0;       // the first journal block after this checkpoint
    uint32_t replay_prev_crc = 0;  // the CRC that block must chain to
    uint64_t payload_len = 0;
    uint32_t payload_crc = 0;

    std::vector<uint8_t> encode() const;  // one block
    static Result<CheckpointHeader> decode(const uint8_t* block, const Uuid& pool, uint64_t max_payload);
};

struct JournalBlock {
    uint64_t seq = 0;
    uint32_t prev_crc = 0;
    std::vector<std::vector<uint8_t>> records;  // encoded records

    static size_t room() { return kBlock - kJournalHeader; }
    std::vector<uint8_t> encode(const Uuid& pool, uint32_t* crc_out) const;
    // Valid only with the right pool, sequence number and chain; records split but not decoded.
    static Result<JournalBlock> decode(const uint8_t* block, const Uuid& pool, uint64_t seq, uint32_t prev_crc,
                                       uint32_t* crc_out);
};

std::string uuid_string(const Uuid& u);

}  // namespace vhostd::pool
