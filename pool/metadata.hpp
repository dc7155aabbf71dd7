// A pool's metadata in memory: its volumes, snapshots and clones, which physical chunk each owns,
// and the free chunks. Every change is a Record: the pool checks it (check_record), makes it
// durable in the journal, then applies it (apply); replay after a restart runs the same two
// steps over the journal, so a change means the same thing live and replayed.
//
// The model (SPDK's lvol/blobstore and ZFS chose the same): a chunk has exactly one owner.
//  - A volume owns the chunks it wrote; any other chunk below its parent_limit reads through its
//    parent (a snapshot), and the rest read as zeroes.
//  - snapshot_create: the snapshot takes the volume's map and parent; the volume starts empty
//    with the snapshot as its parent. Nothing is copied.
//  - clone_create: a new volume whose parent is the snapshot.
//  - Deleting a snapshot takes its name away; a snapshot without a name and with one child is
//    merged into that child (the child takes the chunks it does not own), with none it is freed;
//    with two or more it lives on, hidden, until its children go.
//  - Free space is not stored: a chunk is free when no map owns it, so an allocation map can
//    never disagree with the maps (no leaked or doubly-owned chunk by construction; the loader
//    and verify() still check it).
//  - A thick volume reserves the chunks it does not own yet: thin volumes cannot take them.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.hpp"
#include "pool/chunk_map.hpp"

namespace vhostd::pool {

using Uuid = std::array<uint8_t, 16>;

enum class Layout : uint8_t { kStripe = 0, kConcat = 1 };
const char* layout_name(Layout l);
Result<Layout> parse_layout(std::string_view s);

constexpr uint32_t kMaxMembers = 64;
constexpr uint32_t kMaxVolumes = 4096;            // volumes and snapshots, hidden ones too
constexpr size_t kMaxNameLen = 127;
constexpr uint32_t kMaxChainDepth = 64;           // ancestors of a volume
constexpr uint64_t kMaxVolumeChunks = uint64_t{1} << 30;
constexpr uint64_t kMaxVirtualChunks = uint64_t{1} << 32;  // all volumes together
constexpr uint64_t kMinChunk = 64 * 1024;
constexpr uint64_t kMaxChunk = 1024 * 1024 * 1024;

// [A-Za-z0-9_.-]{1,127}, not starting with '.' or '-'.
bool valid_name(std::string_view s);

// Fixed when the pool is made (the superblocks carry it).
struct Geometry {
    uint64_t chunk_size = 0;
    std::vector<uint64_t> member_chunks;  // data chunks on each member
    // Derived: member i's chunks are the physical chunks [base[i], base[i] + member_chunks[i]).
    std::vector<uint64_t> base;
    uint64_t total_chunks = 0;
    void derive();
    // The member holding a physical chunk and the chunk's index on it.
    uint32_t member_of(uint64_t pchunk, uint64_t* index) const;
};

struct Volume {
    uint32_t id = 0;
    uint32_t parent = 0;     // the snapshot it reads through (0: none)
    uint32_t origin = 0;     // a snapshot: the volume whose name it carries (0: hidden)
    bool snapshot = false;
    bool thick = false;
    Layout layout = Layout::kStripe;
    std::string name;        // a volume's name; a snapshot's part after '@'; "" when hidden
    uint64_t size = 0;       // bytes, a multiple of the chunk size
    uint64_t parent_limit = 0;  // chunks below it read through the parent
    uint64_t owned = 0;      // entries in map
    uint32_t children = 0;   // volumes and snapshots whose parent this is
    ChunkMap map;
    bool hidden() const { return snapshot && origin == 0; }
};

enum class RecordType : uint8_t {
    kMap = 1,       // vol takes pchunk as its virtual chunk vchunk (a first write)
    kUnmap = 2,     // vol gives up its virtual chunk vchunk
    kCreate = 3,    // a new volume (a clone when parent != 0)
    kDelete = 4,    // a volume, or a snapshot's name
    kResize = 5,
    kSnapshot = 6,  // vol's snapshot `name`, id `other`
};

struct Record {
    RecordType type = RecordType::kMap;
    uint32_t vol = 0;     // kCreate: the new id
    uint32_t other = 0;   // kCreate: the parent snapshot; kSnapshot: the new snapshot's id
    uint64_t vchunk = 0;  // kMap, kUnmap
    uint64_t pchunk = 0;  // kMap
    uint64_t size = 0;    // kCreate, kResize: bytes
    bool thick = false;   // kCreate
    Layout layout = Layout::kStripe;  // kCreate
    std::string name;     // kCreate, kSnapshot

    void encode(std::vector<uint8_t>& out) const;
    // One record from exactly [p, p + n); kInvalid on anything malformed.
    static Result<Record> decode(const uint8_t* p, size_t n);
    std::string describe() const;
};
constexpr size_t kMaxRecordBytes = 1 + 4 + 4 + 8 + 8 + 1 + 1 + 1 + kMaxNameLen;

// A volume and its ancestors as the data path reads them: a fixed array built by the control
// plane and published whole (readers never touch the volume table). Link i serves virtual chunks
// below its limit; limits shrink up the chain (parent_limit).
struct Chain {
    struct Link {
        const ChunkMap* map = nullptr;
        uint64_t limit = 0;
        uint32_t vol = 0;
    };
    uint32_t n = 0;
    Link link[kMaxChainDepth + 1];
    // The physical chunk that virtual chunk vc reads from, and the link that owns it (0: the
    // volume itself). False: nobody does, it reads as zeroes.
    bool resolve(uint64_t vc, uint64_t* pchunk, uint32_t* owner) const {
        for (uint32_t i = 0; i < n; ++i) {
            if (vc >= link[i].limit) return false;
            if (link[i].map->lookup(vc, pchunk)) {
                *owner = i;
                return true;
            }
        }
        return false;
    }
};

class Metadata {
public:
    explicit Metadata(Geometry g);

    const Geometry& geometry() const { return geo_; }
    uint32_t next_id() const { return next_id_; }

    Status check_record(const Record& r) const;
    // r passed check_record; kSystem ENOMEM is the only failure (a map leaf).
    Status apply(const Record& r);

    // Allocation for a write: a free chunk for vol's virtual chunk vchunk, placed by the
    // volume's layout (stripe: member vchunk % members first; concat: the lowest member with
    // room). The chunk is in use but owned by nobody until a kMap record for it is applied, or
    // release() gives it back. kBusy (ENOSPC) when the pool has no chunk the volume may take.
    Result<uint64_t> reserve(uint32_t vol, uint64_t vchunk);
    void release(uint64_t pchunk);

    const Volume* find(uint32_t id) const;
    const Volume* find_volume(std::string_view name) const;
    const Volume* find_snapshot(std::string_view volume, std::string_view snap) const;
    const std::map<uint32_t, std::unique_ptr<Volume>>& volumes() const { return volumes_; }
    uint32_t depth(uint32_t id) const;  // ancestors

    uint64_t chunks_owned() const { return owned_count_; }
    uint64_t chunks_reserved() const { return inflight_count_; }
    uint64_t thick_reserve() const { return thick_reserve_; }
    uint64_t chunks_free() const { return geo_.total_chunks - owned_count_ - inflight_count_; }
    // Free chunks a thin volume may take (thick volumes' reservations left out).
    uint64_t chunks_available() const;
    uint64_t virtual_chunks() const { return virtual_chunks_; }

    // The checkpoint payload: everything, chunk maps included.
    void encode(std::vector<uint8_t>& out) const;
    static Result<std::unique_ptr<Metadata>> decode(Geometry g, const uint8_t* p, size_t n);
    // Upper bound of encode()'s size for a pool of this geometry.
    static uint64_t max_encoded_size(const Geometry& g);

    // Every invariant, checked from scratch; a line per problem, empty when consistent.
    std::vector<std::string> verify() const;
    // True when both hold the same volumes, names, sizes, parents and maps.
    static bool same(const Metadata& a, const Metadata& b, std::string* why);

    // The data path's view of a volume (Chain above).
    Status build_chain(uint32_t vol, Chain& out) const;

    // While readers may hold map pointers (a live pool with attached volumes), what a change
    // frees is held back: chunks stay unallocatable and removed volumes and map memory stay
    // alive until reclaim(), which the owner calls once no reader can still use them.
    void set_quarantine(bool on) { quarantine_ = on; }
    bool reclaim_pending() const { return retired_.size() > 0 || !dead_.empty() || !held_.empty(); }
    void reclaim();
    Retired& retired() { return retired_; }

private:
    Volume* get(uint32_t id);
    bool owned_bit(uint64_t p) const { return (owned_bits_[p >> 6] >> (p & 63)) & 1; }
    bool inflight_bit(uint64_t p) const { return (inflight_bits_[p >> 6] >> (p & 63)) & 1; }
    void set_bit(std::vector<uint64_t>& b, uint64_t p, bool on);
    uint64_t chunks_of(const Volume& v) const { return v.size / geo_.chunk_size; }
    // The thick reservation changes with a volume's size and owned count.
    int64_t reservation(const Volume& v) const;
    void free_owned(Volume& v, uint64_t from_vchunk);
    Status collapse(uint32_t id);
    Status add_volume(std::unique_ptr<Volume> v);
    void remove_volume(uint32_t id);

    Geometry geo_;
    uint32_t next_id_ = 1;
    std::map<uint32_t, std::unique_ptr<Volume>> volumes_;
    std::vector<uint64_t> owned_bits_;
    std::vector<uint64_t> inflight_bits_;
    uint64_t owned_count_ = 0;
    uint64_t inflight_count_ = 0;
    uint64_t thick_reserve_ = 0;
    uint64_t virtual_chunks_ = 0;
    std::vector<uint64_t> next_free_;  // per member: where the search for a free chunk starts
    void free_chunk(uint64_t p);
    Retired retired_;
    bool quarantine_ = false;
    std::vector<uint64_t> held_;                 // freed chunks, held back until reclaim()
    std::vector<std::unique_ptr<Volume>> dead_;  // removed volumes, kept until reclaim()
};

}  // namespace vhostd::pool
