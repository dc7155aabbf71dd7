// A volume's map: virtual chunk -> physical chunk, for the chunks the volume owns (writes went
// to them); the others read through its parent, or as zeroes. Sparse: a directory of atomic leaf
// pointers, one per 512 virtual chunks (8 bytes per 512 chunks of virtual size), and 4 KiB
// leaves made on the first entry in their range. A lookup is two acquire loads and takes no lock,
// so reactors may read while the pool's owner changes entries; the directory and leaves that a
// change replaces are retired, not freed, until the owner knows no reader holds them
// (Retired::clear()).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/result.hpp"

namespace vhostd::pool {

class ChunkMap;

// What a map change took out of readers' reach; freed by its owner when none can hold it.
class Retired {
public:
    Retired() = default;
    Retired(const Retired&) = delete;
    Retired& operator=(const Retired&) = delete;
    ~Retired() { clear(); }
    void clear();
    size_t size() const { return leaves_.size() + dirs_.size(); }

private:
    friend class ChunkMap;
    std::vector<void*> leaves_;
    std::vector<void*> dirs_;
};

class ChunkMap {
public:
    static constexpr unsigned kLeafShift = 9;
    static constexpr uint64_t kLeafEntries = uint64_t{1} << kLeafShift;

    ChunkMap() = default;
    ~ChunkMap();
    ChunkMap(const ChunkMap&) = delete;
    ChunkMap& operator=(const ChunkMap&) = delete;

    uint64_t chunks() const { return chunks_; }
    // Any thread: the physical chunk behind virtual chunk v, if this map owns v.
    bool lookup(uint64_t v, uint64_t* pchunk) const {
        const Dir* d = dir_.load(std::memory_order_acquire);
        if (d == nullptr || v >= d->n) return false;
        const Leaf* l = d->slots[v >> kLeafShift].load(std::memory_order_acquire);
        if (l == nullptr) return false;
        uint64_t e = l->e[v & (kLeafEntries - 1)].load(std::memory_order_acquire);
        if (e == 0) return false;
        *pchunk = e - 1;
        return true;
    }
    // The owner only. set() may allocate a leaf (kSystem ENOMEM when it cannot).
    Status set(uint64_t v, uint64_t pchunk);
    // Makes the leaf that set(v) needs, so a later set(v) cannot fail.
    Status prepare(uint64_t v);
    void clear(uint64_t v);
    // Entries at or past `chunks` must be cleared first (a shrink does).
    Status resize(uint64_t chunks, Retired& retired);
    // Moves every entry and the leaves to `to` (empty, same size); this map is left empty.
    void move_to(ChunkMap& to);
    void release_all(Retired& retired);  // empties the map; its memory goes to `retired`

    // Ascending virtual chunk order.
    template <typename F>
    void for_each(F&& f) const {
        const Dir* d = dir_.load(std::memory_order_relaxed);
        if (d == nullptr) return;
        for (uint64_t i = 0; i < leaves_for(d->n); ++i) {
            const Leaf* l = d->slots[i].load(std::memory_order_relaxed);
            if (l == nullptr) continue;
            for (uint64_t j = 0; j < kLeafEntries; ++j) {
                uint64_t e = l->e[j].load(std::memory_order_relaxed);
                if (e != 0) f((i << kLeafShift) | j, e - 1);
            }
        }
    }

private:
    struct Leaf {
        std::atomic<uint64_t> e[kLeafEntries];
    };
    struct Dir {
        uint64_t n;  // virtual chunks covered
        std::atomic<Leaf*> slots[1];  // leaves_for(n) of them (allocated past the struct)
    };
    static uint64_t leaves_for(uint64_t n) { return (n + kLeafEntries - 1) >> kLeafShift; }
    static Dir* make_dir(uint64_t n);
    std::atomic<Dir*> dir_{nullptr};
    uint64_t chunks_ = 0;
    friend class Retired;
};

}  // namespace vhostd::pool
