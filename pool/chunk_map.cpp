#include "pool/chunk_map.hpp"

#include <cstdlib>
#include <new>

namespace vhostd::pool {

void Retired::clear() {
    for (void* l : leaves_) ::operator delete(l);
    for (void* d : dirs_) std::free(d);
    leaves_.clear();
    dirs_.clear();
}

ChunkMap::Dir* ChunkMap::make_dir(uint64_t n) {
    uint64_t slots = leaves_for(n);
    size_t bytes = sizeof(Dir) + (slots > 0 ? slots - 1 : 0) * sizeof(std::atomic<Leaf*>);
    void* mem = std::calloc(1, bytes);  // all-zero atomics are null pointers
    if (mem == nullptr) return nullptr;
    auto* d = static_cast<Dir*>(mem);
    d->n = n;
    return d;
}

ChunkMap::~ChunkMap() {
    Retired r;
    release_all(r);
}

Status ChunkMap::prepare(uint64_t v) {
    Dir* d = dir_.load(std::memory_order_relaxed);
    if (d == nullptr || v >= d->n) return make_error(Errc::kOutOfRange, "chunk {} past the map's end", v);
    auto& slot = d->slots[v >> kLeafShift];
    if (slot.load(std::memory_order_relaxed) != nullptr) return ok_status();
    void* mem = ::operator new(sizeof(Leaf), std::nothrow);
    if (mem == nullptr) return sys_error_code(ENOMEM, "a chunk map leaf");
    Leaf* l = new (mem) Leaf;
    for (auto& e : l->e) e.store(0, std::memory_order_relaxed);
    slot.store(l, std::memory_order_release);
    return ok_status();
}

Status ChunkMap::set(uint64_t v, uint64_t pchunk) {
    VHOSTD_TRY(prepare(v));
    Dir* d = dir_.load(std::memory_order_relaxed);
    Leaf* l = d->slots[v >> kLeafShift].load(std::memory_order_relaxed);
    l->e[v & (kLeafEntries - 1)].store(pchunk + 1, std::memory_order_release);
    return ok_status();
}

void ChunkMap::clear(uint64_t v) {
    Dir* d = dir_.load(std::memory_order_relaxed);
    if (d == nullptr || v >= d->n) return;
    Leaf* l = d->slots[v >> kLeafShift].load(std::memory_order_relaxed);
    if (l != nullptr) l->e[v & (kLeafEntries - 1)].store(0, std::memory_order_release);
}

Status ChunkMap::resize(uint64_t chunks, Retired& retired) {
    Dir* old = dir_.load(std::memory_order_relaxed);
    uint64_t old_n = old ? old->n : 0;
    if (chunks == old_n && old != nullptr) return ok_status();
    Dir* d = make_dir(chunks);
    if (d == nullptr) return sys_error_code(ENOMEM, "a chunk map directory for {} chunks", chunks);
    uint64_t keep = std::min(leaves_for(chunks), leaves_for(old_n));
    for (uint64_t i = 0; i < keep; ++i) {
        d->slots[i].store(old->slots[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
    for (uint64_t i = keep; i < leaves_for(old_n); ++i) {
        if (Leaf* l = old->slots[i].load(std::memory_order_relaxed)) retired.leaves_.push_back(l);
    }
    dir_.store(d, std::memory_order_release);
    if (old != nullptr) retired.dirs_.push_back(old);
    chunks_ = chunks;
    return ok_status();
}

void ChunkMap::move_to(ChunkMap& to) {
    Dir* mine = dir_.load(std::memory_order_relaxed);
    Dir* theirs = to.dir_.load(std::memory_order_relaxed);
    // Swap directories: `to` is empty and as large, so this map ends empty.
    to.dir_.store(mine, std::memory_order_release);
    dir_.store(theirs, std::memory_order_release);
    std::swap(chunks_, to.chunks_);
}

void ChunkMap::release_all(Retired& retired) {
    Dir* d = dir_.exchange(nullptr, std::memory_order_acq_rel);
    if (d == nullptr) return;
    for (uint64_t i = 0; i < leaves_for(d->n); ++i) {
        if (Leaf* l = d->slots[i].load(std::memory_order_relaxed)) retired.leaves_.push_back(l);
    }
    retired.dirs_.push_back(d);
    chunks_ = 0;
}

}  // namespace vhostd::pool
