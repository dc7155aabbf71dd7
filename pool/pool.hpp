// A pool: members (files, block devices), the metadata in memory (Metadata), and its durable
// form (pool/format.hpp: superblocks, A/B checkpoints, a journal). Control-plane calls take the
// pool's mutex and block on metadata I/O; they never run on a reactor.
//
// Durability: a change is checked, applied in memory, then written to the journal and flushed
// before the call returns. A write or flush that fails leaves memory ahead of the disk, so the
// pool then refuses every further change (failed()) until it is imported again; the journal
// and the previous checkpoint still describe the last state a caller was told of.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "pool/disk.hpp"
#include "pool/format.hpp"
#include "pool/metadata.hpp"

namespace vhostd::pool {

struct CreateOptions {
    std::string name;
    Layout layout = Layout::kStripe;  // the default for its volumes
    uint64_t chunk_size = 1024 * 1024;
    uint32_t journal_blocks = 0;      // 0: kDefaultJournalBlocks
    bool force = false;               // overwrite drives that hold another pool's superblock
    static constexpr uint32_t kDefaultJournalBlocks = 1024;  // 4 MiB
};

struct VolumeInfo {
    std::string name;    // "VOL" or "VOL@SNAP"
    uint32_t id = 0;
    bool snapshot = false;
    bool thick = false;
    Layout layout = Layout::kStripe;
    uint64_t size = 0;
    uint64_t allocated = 0;  // bytes in chunks the volume owns
    std::string parent;      // "VOL@SNAP" it reads through, "" for none
    uint32_t clones = 0;     // a snapshot: volumes and snapshots that read through it
};

struct MemberInfo {
    std::string path;
    std::string uuid;
    uint64_t chunks = 0;
    uint64_t used = 0;
};

struct PoolInfo {
    std::string name;
    std::string uuid;
    Layout layout = Layout::kStripe;
    uint64_t chunk_size = 0;
    std::vector<MemberInfo> members;
    uint64_t chunks = 0;
    uint64_t chunks_used = 0;       // owned by a volume or snapshot
    uint64_t chunks_available = 0;  // for thin volumes
    uint64_t chunks_reserved = 0;   // thick volumes' unwritten chunks
    uint64_t virtual_bytes = 0;
    uint32_t volumes = 0;
    uint32_t snapshots = 0;
    uint32_t hidden_snapshots = 0;  // deleted, kept while two or more clones read through them
    uint64_t generation = 0;        // checkpoints written
    uint64_t journal_used = 0;      // blocks since the last checkpoint
    uint32_t journal_blocks = 0;
    bool failed = false;
    std::string note;               // why failed, or what import recovered from
};

struct CheckReport {
    std::vector<std::string> problems;
    uint32_t volumes = 0;
    uint64_t chunks_used = 0;
    uint64_t journal_blocks_replayed = 0;
};

// "VOL@SNAP" -> ("VOL", "SNAP"); "VOL" -> ("VOL", "").
void split_snapshot_name(std::string_view full, std::string_view* vol, std::string_view* snap);

class Pool {
public:
    static Result<std::unique_ptr<Pool>> create(const CreateOptions& opts, std::vector<std::unique_ptr<Disk>> disks);
    // Assembles a pool from all of its members (any order); refuses a partial or mixed set.
    static Result<std::unique_ptr<Pool>> import(std::vector<std::unique_ptr<Disk>> disks);
    // Opens the paths as FileDisks.
    static Result<std::vector<std::unique_ptr<Disk>>> open_disks(const std::vector<std::string>& paths);
    // What a drive holds: its pool's superblock (either copy), or an error saying why none.
    static Result<Superblock> probe(Disk& disk);

    const std::string& name() const { return sb_.pool_name; }
    const Superblock& superblock() const { return sb_; }

    Result<VolumeInfo> create_volume(std::string_view name, uint64_t size, bool thick, std::optional<Layout> layout);
    Result<VolumeInfo> resize_volume(std::string_view name, uint64_t size);
    Status delete_volume(std::string_view name);  // "VOL" or "VOL@SNAP"
    Result<VolumeInfo> snapshot(std::string_view volume, std::string_view snap);
    Result<VolumeInfo> clone(std::string_view snapshot, std::string_view name);  // "VOL@SNAP"
    Result<VolumeInfo> volume(std::string_view name);
    std::vector<VolumeInfo> volumes();
    PoolInfo info();
    // Everything from scratch: the invariants in memory, every superblock copy, and the on-disk
    // metadata loaded again and compared with memory.
    CheckReport check();
    Status checkpoint();  // writes one now (close does; tests do)

    // Data path (through the pool's committer): a chunk for a first write, and the records
    // that make such chunks the volumes' (one flush for the batch). `results` gets one status
    // per record.
    Result<uint64_t> reserve(uint32_t vol, uint64_t vchunk);
    void release(uint64_t pchunk);
    Status commit(const std::vector<Record>& records, std::vector<Status>* results);

    // First writes, from the data path's committer: each (vol, vchunk) not owned yet gets a
    // chunk, filled with what the volume read there before (its ancestor's chunk, or zeroes),
    // flushed, then mapped by a journal record. result: 0 (the volume owns it now), -ENOSPC,
    // -ENOENT (no such writable volume), -EIO.
    struct Allocation {
        uint32_t vol = 0;
        uint64_t vchunk = 0;
        int result = 0;
    };
    void allocate(std::vector<Allocation>& wants);

    // Where a physical chunk lives.
    uint32_t member_of(uint64_t pchunk, uint64_t* offset) const;

    // A live pool (volumes attached to devices): changes that free chunks or retire map memory
    // hold it back (Metadata quarantine) and call `after_change` with the pool's lock held; it
    // rebuilds the data path's chains (build_chain_locked) and returns true once no reader can
    // hold the old ones or have I/O in flight to a freed chunk; the pool then reclaims (false:
    // not yet; the next change tries again).
    // `guard` is asked (lock held) before a change to a volume is committed: an error refuses it.
    void set_live(std::function<bool()> after_change, std::function<Status(const Record&)> guard = {});
    Status build_chain_locked(uint32_t vol, Chain& out) const { return md_->build_chain(vol, out); }
    bool reclaim_pending_locked() const { return md_->reclaim_pending(); }
    Status build_chain(uint32_t vol, Chain& out) {
        std::lock_guard<std::mutex> g(mu_);
        return md_->build_chain(vol, out);
    }

    // Tests.
    std::unique_lock<std::mutex> lock() { return std::unique_lock<std::mutex>(mu_); }
    const Metadata& metadata_locked() const { return *md_; }
    Disk& disk(size_t i) { return *disks_.at(i); }

private:
    Pool() = default;
    struct Loaded {
        std::unique_ptr<Metadata> md;
        int slot = 0;
        uint64_t generation = 0;
        uint64_t replay_seq = 0;
        uint64_t next_seq = 0;
        uint32_t last_crc = 0;
        uint64_t replayed = 0;
        std::string note;
    };
    static Result<Loaded> load(Disk& meta, const Superblock& sb);
    Status commit_locked(const std::vector<Record>& records, std::vector<Status>* results);
    Status write_checkpoint_locked();
    Result<VolumeInfo> one_record_locked(const Record& r, uint32_t report_id);
    VolumeInfo describe_locked(const Volume& v) const;
    Status usable_locked() const;
    void changed_locked();

    std::mutex mu_;
    std::vector<std::unique_ptr<Disk>> disks_;  // by member index
    Superblock sb_;
    std::unique_ptr<Metadata> md_;
    int newest_slot_ = 0;
    uint64_t generation_ = 0;
    uint64_t replay_seq_ = 0;
    uint32_t replay_prev_crc_ = 0;
    uint64_t next_seq_ = 0;
    uint32_t last_crc_ = 0;
    bool failed_ = false;
    std::string note_;
    std::function<bool()> after_change_;
    std::function<Status(const Record&)> guard_;
};

}  // namespace vhostd::pool
