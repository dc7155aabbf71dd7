#include "pool/metadata.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "core/checked.hpp"
#include "pool/codec.hpp"

namespace vhostd::pool {

const char* layout_name(Layout l) { return l == Layout::kConcat ? "concat" : "stripe"; }

Result<Layout> parse_layout(std::string_view s) {
    if (s == "stripe") return Layout::kStripe;
    if (s == "concat") return Layout::kConcat;
    return make_error(Errc::kInvalid, "layout '{}': stripe or concat", s);
}

bool valid_name(std::string_view s) {
    if (s.empty() || s.size() > kMaxNameLen || s[0] == '.' || s[0] == '-') return false;
    for (char c : s) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '.' || c == '-';
        if (!ok) return false;
    }
    return true;
}

void Geometry::derive() {
    base.assign(member_chunks.size(), 0);
    total_chunks = 0;
    for (size_t i = 0; i < member_chunks.size(); ++i) {
        base[i] = total_chunks;
        total_chunks += member_chunks[i];
    }
}

uint32_t Geometry::member_of(uint64_t pchunk, uint64_t* index) const {
    // Few members: a linear walk.
    for (size_t i = member_chunks.size(); i-- > 0;) {
        if (pchunk >= base[i]) {
            *index = pchunk - base[i];
            return static_cast<uint32_t>(i);
        }
    }
    *index = pchunk;
    return 0;
}

// ---- records ----

void Record::encode(std::vector<uint8_t>& out) const {
    ByteWriter w(out);
    w.u8(static_cast<uint8_t>(type));
    switch (type) {
    case RecordType::kMap: w.u32(vol); w.u64(vchunk); w.u64(pchunk); break;
    case RecordType::kUnmap: w.u32(vol); w.u64(vchunk); break;
    case RecordType::kCreate:
        w.u32(vol); w.u32(other); w.u64(size); w.u8(thick ? 1 : 0); w.u8(static_cast<uint8_t>(layout));
        w.name(name);
        break;
    case RecordType::kDelete: w.u32(vol); break;
    case RecordType::kResize: w.u32(vol); w.u64(size); break;
    case RecordType::kSnapshot: w.u32(vol); w.u32(other); w.name(name); break;
    }
}

Result<Record> Record::decode(const uint8_t* p, size_t n) {
    ByteReader r(p, n);
    Record rec;
    uint8_t t = r.u8();
    switch (t) {
    case 1: rec.type = RecordType::kMap; rec.vol = r.u32(); rec.vchunk = r.u64(); rec.pchunk = r.u64(); break;
    case 2: rec.type = RecordType::kUnmap; rec.vol = r.u32(); rec.vchunk = r.u64(); break;
    case 3: {
        rec.type = RecordType::kCreate;
        rec.vol = r.u32();
        rec.other = r.u32();
        rec.size = r.u64();
        uint8_t thick = r.u8();
        uint8_t layout = r.u8();
        if (thick > 1 || layout > 1) return make_error(Errc::kInvalid, "create record: bad flags {} or layout {}", thick, layout);
        rec.thick = thick == 1;
        rec.layout = static_cast<Layout>(layout);
        rec.name = r.name();
        break;
    }
    case 4: rec.type = RecordType::kDelete; rec.vol = r.u32(); break;
    case 5: rec.type = RecordType::kResize; rec.vol = r.u32(); rec.size = r.u64(); break;
    case 6: rec.type = RecordType::kSnapshot; rec.vol = r.u32(); rec.other = r.u32(); rec.name = r.name(); break;
    default: return make_error(Errc::kInvalid, "unknown record type {}", t);
    }
    if (!r.ok() || r.left() != 0) return make_error(Errc::kInvalid, "record of type {}: {} bytes do not fit it", t, n);
    return rec;
}

std::string Record::describe() const {
    switch (type) {
    case RecordType::kMap: return fmt::format("map vol {} chunk {} -> {}", vol, vchunk, pchunk);
    case RecordType::kUnmap: return fmt::format("unmap vol {} chunk {}", vol, vchunk);
    case RecordType::kCreate: return fmt::format("create vol {} '{}' size {} parent {}", vol, name, size, other);
    case RecordType::kDelete: return fmt::format("delete vol {}", vol);
    case RecordType::kResize: return fmt::format("resize vol {} to {}", vol, size);
    case RecordType::kSnapshot: return fmt::format("snapshot {} of vol {} '{}'", other, vol, name);
    }
    return "?";
}

// ---- metadata ----

Metadata::Metadata(Geometry g) : geo_(std::move(g)) {
    geo_.derive();
    owned_bits_.assign((geo_.total_chunks + 63) / 64, 0);
    inflight_bits_.assign(owned_bits_.size(), 0);
    next_free_.assign(geo_.member_chunks.size(), 0);
}

void Metadata::set_bit(std::vector<uint64_t>& b, uint64_t p, bool on) {
    if (on) {
        b[p >> 6] |= uint64_t{1} << (p & 63);
    } else {
        b[p >> 6] &= ~(uint64_t{1} << (p & 63));
    }
}

Volume* Metadata::get(uint32_t id) {
    auto it = volumes_.find(id);
    return it == volumes_.end() ? nullptr : it->second.get();
}

const Volume* Metadata::find(uint32_t id) const {
    auto it = volumes_.find(id);
    return it == volumes_.end() ? nullptr : it->second.get();
}

const Volume* Metadata::find_volume(std::string_view name) const {
    for (const auto& [id, v] : volumes_) {
        if (!v->snapshot && v->name == name) return v.get();
    }
    return nullptr;
}

const Volume* Metadata::find_snapshot(std::string_view volume, std::string_view snap) const {
    const Volume* vol = find_volume(volume);
    if (vol == nullptr) return nullptr;
    for (const auto& [id, v] : volumes_) {
        if (v->snapshot && v->origin == vol->id && v->name == snap) return v.get();
    }
    return nullptr;
}

uint32_t Metadata::depth(uint32_t id) const {
    uint32_t d = 0;
    const Volume* v = find(id);
    while (v != nullptr && v->parent != 0 && d <= kMaxVolumes) {
        ++d;
        v = find(v->parent);
    }
    return d;
}

int64_t Metadata::reservation(const Volume& v) const {
    return v.thick ? static_cast<int64_t>(chunks_of(v) - v.owned) : 0;
}

uint64_t Metadata::chunks_available() const {
    uint64_t used = owned_count_ + inflight_count_ + thick_reserve_;
    return used >= geo_.total_chunks ? 0 : geo_.total_chunks - used;
}

Status Metadata::check_record(const Record& r) const {
    const uint64_t cs = geo_.chunk_size;
    auto volume = [&](uint32_t id) -> Result<const Volume*> {
        const Volume* v = find(id);
        if (v == nullptr) return make_error(Errc::kInvalid, "no volume {}", id);
        return v;
    };
    auto check_size = [&](uint64_t size) -> Status {
        if (size == 0 || size % cs != 0) {
            return make_error(Errc::kInvalid, "size {} is not a positive multiple of the chunk size {}", size, cs);
        }
        if (size / cs > kMaxVolumeChunks) {
            return make_error(Errc::kOutOfRange, "size {} is more than {} chunks", size, kMaxVolumeChunks);
        }
        return ok_status();
    };
    switch (r.type) {
    case RecordType::kMap: {
        VHOSTD_ASSIGN_OR_RETURN(const Volume* v, volume(r.vol));
        if (v->snapshot) return make_error(Errc::kInvalid, "volume {} is a snapshot", r.vol);
        if (r.vchunk >= chunks_of(*v)) return make_error(Errc::kOutOfRange, "chunk {} past volume {}'s end", r.vchunk, r.vol);
        uint64_t p;
        if (v->map.lookup(r.vchunk, &p)) return make_error(Errc::kInvalid, "volume {} already owns chunk {}", r.vol, r.vchunk);
        if (r.pchunk >= geo_.total_chunks) return make_error(Errc::kOutOfRange, "physical chunk {} past the pool's end", r.pchunk);
        if (owned_bit(r.pchunk)) return make_error(Errc::kInvalid, "physical chunk {} is owned already", r.pchunk);
        if (!v->thick) {
            uint64_t avail = chunks_available() + (inflight_bit(r.pchunk) ? 1 : 0);
            if (avail == 0) return make_error(Errc::kBusy, "no chunk left for thin volumes");
        }
        return ok_status();
    }
    case RecordType::kUnmap: {
        VHOSTD_ASSIGN_OR_RETURN(const Volume* v, volume(r.vol));
        uint64_t p;
        if (v->snapshot) return make_error(Errc::kInvalid, "volume {} is a snapshot", r.vol);
        if (!v->map.lookup(r.vchunk, &p)) return make_error(Errc::kInvalid, "volume {} does not own chunk {}", r.vol, r.vchunk);
        return ok_status();
    }
    case RecordType::kCreate: {
        if (r.vol != next_id_ || next_id_ == UINT32_MAX) return make_error(Errc::kInvalid, "volume id {} is not the next ({})", r.vol, next_id_);
        if (volumes_.size() >= kMaxVolumes) return make_error(Errc::kOutOfRange, "the pool has {} volumes and snapshots already", kMaxVolumes);
        if (!valid_name(r.name)) return make_error(Errc::kInvalid, "volume name '{}': 1-127 of A-Z a-z 0-9 _ . -, not starting with . or -", r.name);
        if (find_volume(r.name) != nullptr) return make_error(Errc::kInvalid, "volume '{}' exists", r.name);
        VHOSTD_TRY(check_size(r.size));
        if (virtual_chunks_ + r.size / cs > kMaxVirtualChunks) return make_error(Errc::kOutOfRange, "the pool's volumes would exceed {} chunks of virtual size", kMaxVirtualChunks);
        if (r.other != 0) {
            VHOSTD_ASSIGN_OR_RETURN(const Volume* p, volume(r.other));
            if (!p->snapshot || p->hidden()) return make_error(Errc::kInvalid, "volume {} is not a snapshot", r.other);
            if (depth(r.other) + 1 > kMaxChainDepth) return make_error(Errc::kOutOfRange, "more than {} snapshots deep", kMaxChainDepth);
        }
        if (r.thick && r.size / cs > chunks_available()) {
            return make_error(Errc::kBusy, "a thick volume of {} chunks: {} are available", r.size / cs, chunks_available());
        }
        return ok_status();
    }
    case RecordType::kDelete: {
        VHOSTD_ASSIGN_OR_RETURN(const Volume* v, volume(r.vol));
        if (v->snapshot) {
            if (v->hidden()) return make_error(Errc::kInvalid, "snapshot {} is deleted already", r.vol);
            return ok_status();
        }
        for (const auto& [id, s] : volumes_) {
            if (s->snapshot && s->origin == r.vol) {
                return make_error(Errc::kState, "volume '{}' has snapshot '{}': delete its snapshots first", v->name, s->name);
            }
        }
        return ok_status();
    }
    case RecordType::kResize: {
        VHOSTD_ASSIGN_OR_RETURN(const Volume* v, volume(r.vol));
        if (v->snapshot) return make_error(Errc::kInvalid, "a snapshot cannot be resized");
        VHOSTD_TRY(check_size(r.size));
        uint64_t old_c = chunks_of(*v), new_c = r.size / cs;
        if (new_c > old_c && virtual_chunks_ + (new_c - old_c) > kMaxVirtualChunks) {
            return make_error(Errc::kOutOfRange, "the pool's volumes would exceed {} chunks of virtual size", kMaxVirtualChunks);
        }
        if (v->thick && new_c > old_c && new_c - old_c > chunks_available()) {
            return make_error(Errc::kBusy, "growing a thick volume by {} chunks: {} are available", new_c - old_c, chunks_available());
        }
        return ok_status();
    }
    case RecordType::kSnapshot: {
        VHOSTD_ASSIGN_OR_RETURN(const Volume* v, volume(r.vol));
        if (v->snapshot) return make_error(Errc::kInvalid, "a snapshot of a snapshot: clone it first");
        if (r.other != next_id_ || next_id_ == UINT32_MAX) return make_error(Errc::kInvalid, "snapshot id {} is not the next ({})", r.other, next_id_);
        if (volumes_.size() >= kMaxVolumes) return make_error(Errc::kOutOfRange, "the pool has {} volumes and snapshots already", kMaxVolumes);
        if (!valid_name(r.name)) return make_error(Errc::kInvalid, "snapshot name '{}': 1-127 of A-Z a-z 0-9 _ . -, not starting with . or -", r.name);
        for (const auto& [id, s] : volumes_) {
            if (s->snapshot && s->origin == r.vol && s->name == r.name) return make_error(Errc::kInvalid, "snapshot '{}@{}' exists", v->name, r.name);
        }
        if (depth(r.vol) + 1 > kMaxChainDepth) return make_error(Errc::kOutOfRange, "more than {} snapshots deep", kMaxChainDepth);
        if (virtual_chunks_ + chunks_of(*v) > kMaxVirtualChunks) return make_error(Errc::kOutOfRange, "the pool's volumes would exceed {} chunks of virtual size", kMaxVirtualChunks);
        if (v->thick && v->owned > chunks_available()) {
            return make_error(Errc::kBusy, "a snapshot of a thick volume reserves its {} chunks again: {} are available", v->owned, chunks_available());
        }
        return ok_status();
    }
    }
    return make_error(Errc::kInvalid, "unknown record");
}

void Metadata::free_owned(Volume& v, uint64_t from) {
    std::vector<uint64_t> drop;
    v.map.for_each([&](uint64_t vc, uint64_t p) {
        if (vc >= from) drop.push_back(vc), free_chunk(p);
    });
    for (uint64_t vc : drop) v.map.clear(vc);
    v.owned -= drop.size();
}

Status Metadata::add_volume(std::unique_ptr<Volume> v) {
    uint32_t id = v->id;
    volumes_.emplace(id, std::move(v));
    return ok_status();
}

void Metadata::remove_volume(uint32_t id) {
    auto it = volumes_.find(id);
    if (it == volumes_.end()) return;
    if (quarantine_) {
        dead_.push_back(std::move(it->second));  // its map stays readable until reclaim()
    } else {
        it->second->map.release_all(retired_);
    }
    volumes_.erase(it);
}

void Metadata::free_chunk(uint64_t p) {
    set_bit(owned_bits_, p, false);
    --owned_count_;
    if (quarantine_) {
        // Not allocatable until reclaim(): a reader may still be reading it for its old owner.
        set_bit(inflight_bits_, p, true);
        ++inflight_count_;
        held_.push_back(p);
    }
}

void Metadata::reclaim() {
    for (uint64_t p : held_) {
        if (inflight_bit(p)) set_bit(inflight_bits_, p, false), --inflight_count_;
    }
    held_.clear();
    dead_.clear();
    retired_.clear();
}

Status Metadata::build_chain(uint32_t vol, Chain& out) const {
    const Volume* v = find(vol);
    if (v == nullptr) return make_error(Errc::kInvalid, "no volume {}", vol);
    out.n = 0;
    uint64_t limit = v->size / geo_.chunk_size;
    while (v != nullptr) {
        if (out.n > kMaxChainDepth) return make_error(Errc::kState, "volume {}: chain deeper than {}", vol, kMaxChainDepth);
        out.link[out.n++] = Chain::Link{&v->map, limit, v->id};
        if (v->parent == 0) break;
        limit = std::min(limit, v->parent_limit);
        v = find(v->parent);
    }
    return ok_status();
}

Status Metadata::collapse(uint32_t id) {
    for (uint32_t step = 0; step <= kMaxVolumes; ++step) {
        Volume* x = get(id);
        if (x == nullptr || !x->hidden()) return ok_status();
        if (x->children == 0) {
            uint32_t parent = x->parent;
            free_owned(*x, 0);
            virtual_chunks_ -= chunks_of(*x);
            remove_volume(id);
            if (parent == 0) return ok_status();
            Volume* p = get(parent);
            if (p != nullptr) --p->children;
            id = parent;
            continue;
        }
        if (x->children > 1) return ok_status();
        Volume* c = nullptr;
        for (auto& [cid, v] : volumes_) {
            if (v->parent == id) c = v.get();
        }
        if (c == nullptr) return make_error(Errc::kState, "snapshot {} counts a child it does not have", id);
        // Leaves first, so the merge itself cannot fail half-way.
        std::vector<std::pair<uint64_t, uint64_t>> take, drop;
        x->map.for_each([&](uint64_t vc, uint64_t p) {
            uint64_t q;
            if (vc < c->parent_limit && !c->map.lookup(vc, &q)) {
                take.emplace_back(vc, p);
            } else {
                drop.emplace_back(vc, p);
            }
        });
        for (auto& [vc, p] : take) VHOSTD_TRY(c->map.prepare(vc));
        int64_t before = reservation(*c);
        for (auto& [vc, p] : take) (void)c->map.set(vc, p);
        c->owned += take.size();
        thick_reserve_ = static_cast<uint64_t>(static_cast<int64_t>(thick_reserve_) + reservation(*c) - before);
        for (auto& [vc, p] : drop) free_chunk(p);
        c->parent = x->parent;
        c->parent_limit = std::min(c->parent_limit, x->parent_limit);
        virtual_chunks_ -= chunks_of(*x);
        remove_volume(id);
        return ok_status();
    }
    return ok_status();
}

Status Metadata::apply(const Record& r) {
    const uint64_t cs = geo_.chunk_size;
    switch (r.type) {
    case RecordType::kMap: {
        Volume* v = get(r.vol);
        VHOSTD_TRY(v->map.set(r.vchunk, r.pchunk));
        if (inflight_bit(r.pchunk)) set_bit(inflight_bits_, r.pchunk, false), --inflight_count_;
        set_bit(owned_bits_, r.pchunk, true);
        ++owned_count_;
        int64_t before = reservation(*v);
        ++v->owned;
        thick_reserve_ = static_cast<uint64_t>(static_cast<int64_t>(thick_reserve_) + reservation(*v) - before);
        return ok_status();
    }
    case RecordType::kUnmap: {
        Volume* v = get(r.vol);
        uint64_t p = 0;
        v->map.lookup(r.vchunk, &p);
        v->map.clear(r.vchunk);
        free_chunk(p);
        int64_t before = reservation(*v);
        --v->owned;
        thick_reserve_ = static_cast<uint64_t>(static_cast<int64_t>(thick_reserve_) + reservation(*v) - before);
        return ok_status();
    }
    case RecordType::kCreate: {
        auto v = std::make_unique<Volume>();
        v->id = r.vol;
        v->parent = r.other;
        v->thick = r.thick;
        v->layout = r.layout;
        v->name = r.name;
        v->size = r.size;
        VHOSTD_TRY(v->map.resize(r.size / cs, retired_));
        if (r.other != 0) {
            Volume* p = get(r.other);
            v->parent_limit = std::min(r.size / cs, chunks_of(*p));
            ++p->children;
        }
        virtual_chunks_ += r.size / cs;
        thick_reserve_ += static_cast<uint64_t>(reservation(*v));
        next_id_ = r.vol + 1;
        return add_volume(std::move(v));
    }
    case RecordType::kDelete: {
        Volume* v = get(r.vol);
        if (v->snapshot) {
            v->origin = 0;
            v->name.clear();
            return collapse(r.vol);
        }
        uint32_t parent = v->parent;
        thick_reserve_ -= static_cast<uint64_t>(reservation(*v));
        free_owned(*v, 0);
        virtual_chunks_ -= chunks_of(*v);
        remove_volume(r.vol);
        if (parent == 0) return ok_status();
        Volume* p = get(parent);
        if (p != nullptr) --p->children;
        return collapse(parent);
    }
    case RecordType::kResize: {
        Volume* v = get(r.vol);
        uint64_t old_c = chunks_of(*v), new_c = r.size / cs;
        int64_t before = reservation(*v);
        if (new_c < old_c) {
            free_owned(*v, new_c);
            v->parent_limit = std::min(v->parent_limit, new_c);
        }
        VHOSTD_TRY(v->map.resize(new_c, retired_));
        v->size = r.size;
        virtual_chunks_ = virtual_chunks_ - old_c + new_c;
        thick_reserve_ = static_cast<uint64_t>(static_cast<int64_t>(thick_reserve_) + reservation(*v) - before);
        return ok_status();
    }
    case RecordType::kSnapshot: {
        Volume* v = get(r.vol);
        auto s = std::make_unique<Volume>();
        s->id = r.other;
        s->snapshot = true;
        s->origin = r.vol;
        s->name = r.name;
        s->layout = v->layout;
        s->size = v->size;
        VHOSTD_TRY(s->map.resize(chunks_of(*v), retired_));
        int64_t before = reservation(*v);
        v->map.move_to(s->map);
        s->owned = v->owned;
        s->parent = v->parent;
        s->parent_limit = v->parent_limit;
        s->children = 1;
        v->owned = 0;
        v->parent = r.other;
        v->parent_limit = chunks_of(*v);
        thick_reserve_ = static_cast<uint64_t>(static_cast<int64_t>(thick_reserve_) + reservation(*v) - before);
        virtual_chunks_ += chunks_of(*v);
        next_id_ = r.other + 1;
        return add_volume(std::move(s));
    }
    }
    return make_error(Errc::kInvalid, "unknown record");
}

Result<uint64_t> Metadata::reserve(uint32_t vol, uint64_t vchunk) {
    const Volume* v = find(vol);
    if (v == nullptr || v->snapshot) return make_error(Errc::kInvalid, "no writable volume {}", vol);
    bool room = v->thick ? chunks_free() > 0 : chunks_available() > 0;
    if (!room) return sys_error_code(ENOSPC, "pool full: no chunk for volume '{}'", v->name);
    const size_t members = geo_.member_chunks.size();
    size_t start = v->layout == Layout::kStripe ? static_cast<size_t>(vchunk % members) : 0;
    for (size_t k = 0; k < members; ++k) {
        size_t m = (start + k) % members;
        uint64_t n = geo_.member_chunks[m];
        if (n == 0) continue;
        uint64_t hint = next_free_[m] % n;
        for (uint64_t scanned = 0; scanned < n;) {
            uint64_t i = (hint + scanned) % n;
            uint64_t p = geo_.base[m] + i;
            uint64_t word = owned_bits_[p >> 6] | inflight_bits_[p >> 6];
            if (word == ~uint64_t{0}) {
                // The rest of this 64-chunk word is taken: skip to the next word (within the member).
                uint64_t skip = 64 - (p & 63);
                scanned += std::min(skip, n - i);
                continue;
            }
            if (!((word >> (p & 63)) & 1)) {
                set_bit(inflight_bits_, p, true);
                ++inflight_count_;
                next_free_[m] = i + 1;
                return p;
            }
            ++scanned;
        }
    }
    return sys_error_code(ENOSPC, "pool full: no chunk for volume '{}'", v->name);
}

void Metadata::release(uint64_t pchunk) {
    if (pchunk < geo_.total_chunks && inflight_bit(pchunk)) {
        set_bit(inflight_bits_, pchunk, false);
        --inflight_count_;
    }
}

// ---- checkpoint payload ----

void Metadata::encode(std::vector<uint8_t>& out) const {
    ByteWriter w(out);
    w.u32(next_id_);
    w.u32(static_cast<uint32_t>(volumes_.size()));
    for (const auto& [id, v] : volumes_) {
        w.u32(v->id);
        w.u32(v->parent);
        w.u32(v->origin);
        w.u8(static_cast<uint8_t>((v->snapshot ? 1 : 0) | (v->thick ? 2 : 0)));
        w.u8(static_cast<uint8_t>(v->layout));
        w.name(v->name);
        w.u64(v->size);
        w.u64(v->parent_limit);
        w.u64(v->owned);
        v->map.for_each([&](uint64_t vc, uint64_t p) {
            w.u64(vc);
            w.u64(p);
        });
    }
}

uint64_t Metadata::max_encoded_size(const Geometry& g) {
    uint64_t per_volume = 4 + 4 + 4 + 1 + 1 + 1 + kMaxNameLen + 8 + 8 + 8;
    uint64_t total = 0;
    for (uint64_t c : g.member_chunks) total += c;
    return 8 + kMaxVolumes * per_volume + 16 * total;
}

Result<std::unique_ptr<Metadata>> Metadata::decode(Geometry g, const uint8_t* p, size_t n) {
    auto md = std::make_unique<Metadata>(std::move(g));
    const uint64_t cs = md->geo_.chunk_size;
    ByteReader r(p, n);
    md->next_id_ = r.u32();
    uint32_t count = r.u32();
    if (!r.ok()) return make_error(Errc::kInvalid, "metadata: truncated header");
    if (md->next_id_ == 0) return make_error(Errc::kInvalid, "metadata: next volume id 0");
    if (count > kMaxVolumes) return make_error(Errc::kInvalid, "metadata: {} volumes, at most {}", count, kMaxVolumes);
    for (uint32_t i = 0; i < count; ++i) {
        auto v = std::make_unique<Volume>();
        v->id = r.u32();
        v->parent = r.u32();
        v->origin = r.u32();
        uint8_t flags = r.u8();
        uint8_t layout = r.u8();
        v->name = r.name();
        v->size = r.u64();
        v->parent_limit = r.u64();
        uint64_t owned = r.u64();
        if (!r.ok()) return make_error(Errc::kInvalid, "metadata: volume {} of {} truncated", i, count);
        if (v->id == 0 || v->id >= md->next_id_ || md->volumes_.count(v->id)) {
            return make_error(Errc::kInvalid, "metadata: volume id {} (next id {}) is 0, too large or repeated", v->id, md->next_id_);
        }
        if ((flags & ~3u) != 0 || layout > 1) return make_error(Errc::kInvalid, "metadata: volume {}: flags {:#x}, layout {}", v->id, flags, layout);
        v->snapshot = flags & 1;
        v->thick = flags & 2;
        v->layout = static_cast<Layout>(layout);
        if (v->snapshot && v->thick) return make_error(Errc::kInvalid, "metadata: snapshot {} is thick", v->id);
        if (!v->snapshot && v->origin != 0) return make_error(Errc::kInvalid, "metadata: volume {} has an origin", v->id);
        if (v->hidden() ? !v->name.empty() : !valid_name(v->name)) {
            return make_error(Errc::kInvalid, "metadata: volume {}: bad name '{}'", v->id, v->name);
        }
        if (v->size == 0 || v->size % cs != 0 || v->size / cs > kMaxVolumeChunks) {
            return make_error(Errc::kInvalid, "metadata: volume {}: size {}", v->id, v->size);
        }
        const uint64_t chunks = v->size / cs;
        if (md->virtual_chunks_ + chunks > kMaxVirtualChunks) return make_error(Errc::kInvalid, "metadata: virtual size past {} chunks", kMaxVirtualChunks);
        md->virtual_chunks_ += chunks;
        if (v->parent_limit > chunks) return make_error(Errc::kInvalid, "metadata: volume {}: parent limit {} past {} chunks", v->id, v->parent_limit, chunks);
        if (owned > chunks || owned > md->geo_.total_chunks - md->owned_count_) {
            return make_error(Errc::kInvalid, "metadata: volume {} owns {} chunks", v->id, owned);
        }
        if (owned * 16 > r.left()) return make_error(Errc::kInvalid, "metadata: volume {}: {} map entries truncated", v->id, owned);
        VHOSTD_TRY(v->map.resize(chunks, md->retired_));
        uint64_t last = 0;
        for (uint64_t k = 0; k < owned; ++k) {
            uint64_t vc = r.u64();
            uint64_t pc = r.u64();
            if (vc >= chunks || (k > 0 && vc <= last)) return make_error(Errc::kInvalid, "metadata: volume {}: map entry {} out of order or range", v->id, vc);
            if (pc >= md->geo_.total_chunks) return make_error(Errc::kInvalid, "metadata: volume {}: physical chunk {} past the pool", v->id, pc);
            if (md->owned_bit(pc)) return make_error(Errc::kInvalid, "metadata: physical chunk {} has two owners", pc);
            VHOSTD_TRY(v->map.set(vc, pc));
            md->set_bit(md->owned_bits_, pc, true);
            ++md->owned_count_;
            last = vc;
        }
        v->owned = owned;
        md->volumes_.emplace(v->id, std::move(v));
    }
    if (!r.ok() || r.left() != 0) return make_error(Errc::kInvalid, "metadata: {} bytes after the last volume", r.left());
    for (auto& [id, v] : md->volumes_) {
        if (v->parent != 0) {
            Volume* pv = md->get(v->parent);
            if (pv == nullptr || !pv->snapshot) return make_error(Errc::kInvalid, "metadata: volume {}: parent {} is not a snapshot", id, v->parent);
            ++pv->children;
        }
        if (v->snapshot && v->origin != 0) {
            const Volume* o = md->find(v->origin);
            if (o == nullptr || o->snapshot) return make_error(Errc::kInvalid, "metadata: snapshot {}: origin {} is not a volume", id, v->origin);
        }
        md->thick_reserve_ += static_cast<uint64_t>(md->reservation(*v));
    }
    auto problems = md->verify();
    if (!problems.empty()) return make_error(Errc::kInvalid, "metadata: {}", problems.front());
    return md;
}

std::vector<std::string> Metadata::verify() const {
    std::vector<std::string> out;
    auto problem = [&](std::string s) {
        if (out.size() < 100) out.push_back(std::move(s));
    };
    std::vector<uint64_t> seen(owned_bits_.size(), 0);
    uint64_t owned = 0, reserve = 0, virt = 0;
    std::set<std::string> names;
    std::set<std::pair<uint32_t, std::string>> snaps;
    std::map<uint32_t, uint32_t> children;
    for (const auto& [id, v] : volumes_) {
        const uint64_t chunks = v->size / geo_.chunk_size;
        if (id != v->id || id == 0 || id >= next_id_) problem(fmt::format("volume {}: id {} out of place", id, v->id));
        if (v->size == 0 || v->size % geo_.chunk_size != 0) problem(fmt::format("volume {}: size {}", id, v->size));
        if (v->map.chunks() != chunks) problem(fmt::format("volume {}: map of {} chunks for {}", id, v->map.chunks(), chunks));
        if (v->parent_limit > chunks) problem(fmt::format("volume {}: parent limit {} past its end", id, v->parent_limit));
        uint64_t n = 0;
        v->map.for_each([&, vid = id](uint64_t vc, uint64_t p) {
            ++n;
            if (vc >= chunks) problem(fmt::format("volume {}: chunk {} past its end", vid, vc));
            if (p >= geo_.total_chunks) {
                problem(fmt::format("volume {}: physical chunk {} past the pool", vid, p));
                return;
            }
            if ((seen[p >> 6] >> (p & 63)) & 1) problem(fmt::format("physical chunk {} has two owners (one is volume {})", p, vid));
            seen[p >> 6] |= uint64_t{1} << (p & 63);
            if (!owned_bit(p)) problem(fmt::format("physical chunk {} of volume {} is marked free", p, vid));
            if (inflight_bit(p)) problem(fmt::format("physical chunk {} of volume {} is also being allocated", p, vid));
        });
        if (n != v->owned) problem(fmt::format("volume {}: counts {} chunks, its map has {}", id, v->owned, n));
        owned += n;
        virt += chunks;
        if (v->thick) reserve += chunks - std::min(chunks, n);
        if (v->snapshot && v->thick) problem(fmt::format("snapshot {} is thick", id));
        if (!v->snapshot) {
            if (v->origin != 0) problem(fmt::format("volume {} has an origin", id));
            if (!valid_name(v->name)) problem(fmt::format("volume {}: bad name '{}'", id, v->name));
            if (!names.insert(v->name).second) problem(fmt::format("two volumes are named '{}'", v->name));
        } else if (v->origin != 0) {
            const Volume* o = find(v->origin);
            if (o == nullptr || o->snapshot) problem(fmt::format("snapshot {}: origin {} is not a volume", id, v->origin));
            if (!valid_name(v->name)) problem(fmt::format("snapshot {}: bad name '{}'", id, v->name));
            if (!snaps.insert({v->origin, v->name}).second) problem(fmt::format("two snapshots of volume {} are named '{}'", v->origin, v->name));
        } else if (!v->name.empty()) {
            problem(fmt::format("hidden snapshot {} has a name", id));
        }
        if (v->parent != 0) {
            const Volume* p = find(v->parent);
            if (p == nullptr || !p->snapshot) problem(fmt::format("volume {}: parent {} is not a snapshot", id, v->parent));
            ++children[v->parent];
        }
        // Ancestors: bounded walk (a cycle never ends, so it trips the bound).
        uint32_t d = 0;
        const Volume* a = v.get();
        while (a != nullptr && a->parent != 0 && d <= kMaxChainDepth) {
            a = find(a->parent);
            ++d;
        }
        if (d > kMaxChainDepth) problem(fmt::format("volume {}: more than {} ancestors, or a cycle", id, kMaxChainDepth));
    }
    for (const auto& [id, v] : volumes_) {
        uint32_t c = children.count(id) ? children.at(id) : 0;
        if (c != v->children) problem(fmt::format("volume {}: counts {} children, has {}", id, v->children, c));
        if (v->hidden() && c <= 1) problem(fmt::format("hidden snapshot {} with {} children was not merged", id, c));
    }
    uint64_t marked = 0, inflight = 0;
    for (size_t i = 0; i < owned_bits_.size(); ++i) {
        if (owned_bits_[i] != seen[i]) problem(fmt::format("the owned-chunk bits of chunks {}..{} disagree with the maps", i * 64, i * 64 + 63));
        marked += static_cast<uint64_t>(__builtin_popcountll(owned_bits_[i]));
        inflight += static_cast<uint64_t>(__builtin_popcountll(inflight_bits_[i]));
    }
    if (marked != owned_count_ || owned != owned_count_) problem(fmt::format("{} chunks counted owned, {} marked, {} in maps", owned_count_, marked, owned));
    if (inflight != inflight_count_) problem(fmt::format("{} chunks counted in allocation, {} marked", inflight_count_, inflight));
    if (reserve != thick_reserve_) problem(fmt::format("thick reservation counted {}, is {}", thick_reserve_, reserve));
    if (owned + reserve > geo_.total_chunks) problem(fmt::format("{} owned + {} reserved chunks exceed the pool's {}", owned, reserve, geo_.total_chunks));
    if (virt != virtual_chunks_) problem(fmt::format("virtual size counted {} chunks, is {}", virtual_chunks_, virt));
    if (volumes_.size() > kMaxVolumes) problem(fmt::format("{} volumes", volumes_.size()));
    return out;
}

bool Metadata::same(const Metadata& a, const Metadata& b, std::string* why) {
    auto fail = [&](std::string s) {
        if (why) *why = std::move(s);
        return false;
    };
    if (a.next_id_ != b.next_id_) return fail(fmt::format("next id {} vs {}", a.next_id_, b.next_id_));
    if (a.volumes_.size() != b.volumes_.size()) return fail(fmt::format("{} vs {} volumes", a.volumes_.size(), b.volumes_.size()));
    for (const auto& [id, v] : a.volumes_) {
        const Volume* w = b.find(id);
        if (w == nullptr) return fail(fmt::format("volume {} only on one side", id));
        if (v->parent != w->parent || v->origin != w->origin || v->snapshot != w->snapshot || v->thick != w->thick ||
            v->layout != w->layout || v->name != w->name || v->size != w->size || v->parent_limit != w->parent_limit ||
            v->owned != w->owned || v->children != w->children) {
            return fail(fmt::format("volume {} differs", id));
        }
        bool differ = false;
        v->map.for_each([&](uint64_t vc, uint64_t p) {
            uint64_t q;
            if (!w->map.lookup(vc, &q) || q != p) differ = true;
        });
        if (differ) return fail(fmt::format("volume {}: maps differ", id));
    }
    return true;
}

}  // namespace vhostd::pool
