// Pool metadata from a hostile drive. The first byte picks what the rest is:
//   0: a checkpoint payload (Metadata::decode). Accepted ones must pass verify() and encode back
//      to the same bytes.
//   1: journal records ([u16 len][record]...), checked and applied to a pool that has volumes,
//      snapshots, clones and allocated chunks; reserve/release in between (a record of type
//      0xfe: [u32 vol][u64 vchunk], 0xff: release the oldest reservation). verify() must hold
//      after every step: check_record must keep every invariant apply relies on.
//   2: patches to a real pool's member images ([u8 region][u16 offset][u8 len][bytes][u8 fix]):
//      superblock copies, checkpoint headers and bodies, journal blocks; `fix` recomputes the
//      patched block's checksums so the parsers behind them are reached. Import must refuse or
//      give a pool that passes verify() and keeps working (create, allocate, snapshot, clone,
//      delete, checkpoint, import again).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/crc32c.hpp"
#include "core/log.hpp"
#include "pool/codec.hpp"
#include "pool/pool.hpp"
#include "testing/mem_disk.hpp"

using namespace vhostd;
using namespace vhostd::pool;
using vhostd::testing::MemDisk;
using vhostd::testing::MemImage;

namespace {

constexpr uint64_t kChunk = 64 * 1024;

Geometry small_geometry() {
    Geometry g;
    g.chunk_size = kChunk;
    g.member_chunks = {40, 24, 64};
    g.derive();
    return g;
}

[[noreturn]] void fail(const std::string& what) {
    fprintf(stderr, "INVARIANT BROKEN: %s\n", what.c_str());
    abort();
}

void must_verify(const Metadata& md, const char* when) {
    auto p = md.verify();
    if (!p.empty()) fail(std::string(when) + ": " + p.front());
}

Record map_rec(uint32_t vol, uint64_t vc, uint64_t pc) {
    Record r;
    r.type = RecordType::kMap;
    r.vol = vol;
    r.vchunk = vc;
    r.pchunk = pc;
    return r;
}

// A state with every kind of volume: a thin and a thick volume with chunks, a snapshot, a
// clone, a hidden snapshot with two children.
void build_state(Metadata& md) {
    auto apply = [&](Record r) {
        if (!md.check_record(r).ok() || !md.apply(r).ok()) fail("seed state: " + r.describe());
    };
    auto create = [&](const char* name, uint64_t chunks, bool thick, uint32_t parent) {
        Record r;
        r.type = RecordType::kCreate;
        r.vol = md.next_id();
        r.other = parent;
        r.size = chunks * kChunk;
        r.thick = thick;
        r.name = name;
        apply(r);
        return r.vol;
    };
    auto alloc = [&](uint32_t vol, uint64_t vc) {
        auto p = md.reserve(vol, vc);
        if (!p.ok()) fail("seed reserve");
        apply(map_rec(vol, vc, *p));
    };
    uint32_t a = create("a", 16, false, 0);
    uint32_t b = create("b", 8, true, 0);
    for (uint64_t i = 0; i < 6; ++i) alloc(a, i * 2);
    alloc(b, 1);
    Record s;
    s.type = RecordType::kSnapshot;
    s.vol = a;
    s.other = md.next_id();
    s.name = "s1";
    apply(s);
    uint32_t snap = s.other;
    uint32_t c1 = create("c1", 16, false, snap);
    create("c2", 16, false, snap);
    alloc(c1, 3);
    alloc(a, 2);
    Record s2 = s;
    s2.other = md.next_id();
    s2.name = "s2";
    apply(s2);
    Record d;
    d.type = RecordType::kDelete;
    d.vol = snap;
    apply(d);  // hidden: three children
}

void fix_block_crc(uint8_t* block, size_t at) {
    std::memset(block + at, 0, 4);
    uint32_t c = crc32c(block, kBlock);
    for (int i = 0; i < 4; ++i) block[at + static_cast<size_t>(i)] = static_cast<uint8_t>(c >> (8 * i));
}

void mode_payload(const uint8_t* p, size_t n) {
    auto md = Metadata::decode(small_geometry(), p, n);
    if (!md.ok()) return;
    must_verify(**md, "decoded payload");
    std::vector<uint8_t> again;
    (*md)->encode(again);
    auto md2 = Metadata::decode(small_geometry(), again.data(), again.size());
    if (!md2.ok()) fail("re-encoded payload refused: " + md2.error().context);
    std::string why;
    if (!Metadata::same(**md, **md2, &why)) fail("re-encoded payload differs: " + why);
    std::vector<uint8_t> third;
    (*md2)->encode(third);
    if (third != again) fail("encoding is not stable");
}

void mode_records(const uint8_t* p, size_t n) {
    Metadata md(small_geometry());
    build_state(md);
    must_verify(md, "seed state");
    std::vector<uint64_t> reserved;
    ByteReader r(p, n);
    for (int steps = 0; steps < 256 && r.left() >= 2; ++steps) {
        uint16_t len = r.u16();
        if (len == 0 || len > r.left()) break;
        std::vector<uint8_t> rec(len);
        r.bytes(rec.data(), len);
        if (rec[0] == 0xfe && len >= 13) {
            ByteReader rr(rec.data() + 1, len - 1);
            uint32_t vol = rr.u32();
            uint64_t vc = rr.u64();
            auto pc = md.reserve(vol, vc);
            if (pc.ok()) reserved.push_back(*pc);
        } else if (rec[0] == 0xff) {
            if (!reserved.empty()) md.release(reserved.front()), reserved.erase(reserved.begin());
        } else {
            auto d = Record::decode(rec.data(), rec.size());
            if (!d.ok()) continue;
            // A map record for a reserved chunk is how the data path commits.
            if (d->type == RecordType::kMap && !reserved.empty() && (rec.size() & 1)) d->pchunk = reserved.back();
            if (!md.check_record(*d).ok()) continue;
            if (!md.apply(*d).ok()) fail("apply after check: " + d->describe());
            if (d->type == RecordType::kMap) {
                auto it = std::find(reserved.begin(), reserved.end(), d->pchunk);
                if (it != reserved.end()) reserved.erase(it);
            }
        }
        must_verify(md, "after a record");
        md.retired().clear();
    }
}

struct PoolImages {
    std::vector<std::shared_ptr<MemImage>> img;
    std::vector<std::unique_ptr<Disk>> disks() {
        std::vector<std::unique_ptr<Disk>> d;
        for (size_t i = 0; i < img.size(); ++i) d.push_back(std::make_unique<MemDisk>(img[i], fmt::format("m{}", i)));
        return d;
    }
};

// Built once: a two-member pool with a checkpoint and journal blocks after it.
const PoolImages& base_pool(Superblock* sb_out) {
    static PoolImages base;
    static Superblock sb;
    if (base.img.empty()) {
        for (int i = 0; i < 2; ++i) base.img.push_back(std::make_shared<MemImage>(8 * 1024 * 1024));
        CreateOptions o;
        o.name = "fz";
        o.chunk_size = kChunk;
        o.journal_blocks = 8;
        auto p = Pool::create(o, base.disks());
        if (!p.ok()) fail("base pool: " + p.error().describe());
        Pool& pool = **p;
        (void)pool.create_volume("v", 8 * kChunk, false, std::nullopt);
        (void)pool.create_volume("t", 4 * kChunk, true, Layout::kConcat);
        auto v = pool.volume("v");
        std::vector<Record> recs;
        for (uint64_t vc = 0; vc < 5; ++vc) {
            auto pc = pool.reserve(v->id, vc);
            if (pc.ok()) recs.push_back(map_rec(v->id, vc, *pc));
        }
        (void)pool.commit(recs, nullptr);
        (void)pool.snapshot("v", "s");
        (void)pool.checkpoint();
        (void)pool.clone("v@s", "c");
        (void)pool.resize_volume("c", 12 * kChunk);
        sb = pool.superblock();
    }
    *sb_out = sb;
    return base;
}

void mode_images(const uint8_t* p, size_t n) {
    Superblock sb;
    const PoolImages& base = base_pool(&sb);
    PoolImages im;
    for (const auto& i : base.img) im.img.push_back(std::make_shared<MemImage>(*i));
    ByteReader r(p, n);
    for (int k = 0; k < 16 && r.left() >= 5; ++k) {
        uint8_t region = r.u8();
        uint16_t off = r.u16();
        uint8_t len = r.u8();
        if (len > r.left()) break;
        std::vector<uint8_t> bytes(len);
        r.bytes(bytes.data(), len);
        uint8_t fix = r.u8();
        // Regions: 0-3 the superblock copies (member region&1, copy region>>1); 4/5 checkpoint
        // slot 0/1 header; 6/7 their bodies; 8.. journal blocks.
        size_t member = 0;
        uint64_t block_at = 0;
        size_t crc_at = 12;
        bool body = false;
        int slot = 0;
        uint8_t reg = static_cast<uint8_t>(region % (8 + sb.journal_blocks));
        if (reg < 4) {
            member = reg & 1;
            block_at = (reg >> 1) * kBlock;
        } else if (reg < 6) {
            slot = reg - 4;
            block_at = sb.slot_offset(slot);
        } else if (reg < 8) {
            slot = reg - 6;
            body = true;
            block_at = sb.slot_offset(slot) + kBlock;
        } else {
            block_at = sb.journal_offset() + (reg - 8) * kBlock;
            crc_at = 8;
        }
        std::vector<uint8_t> blk(kBlock);
        im.img[member]->read(block_at, blk.data(), kBlock);
        for (size_t i = 0; i < len; ++i) blk[(off + i) % kBlock] = bytes[i];
        if (fix & 1) {
            if (body) {
                // The body's checksum lives in its header: recompute it over the header's length.
                std::vector<uint8_t> hdr(kBlock);
                im.img[0]->read(sb.slot_offset(slot), hdr.data(), kBlock);
                uint64_t plen = 0;
                std::memcpy(&plen, hdr.data() + 8 + 4 + 4 + 16 + 8 + 8 + 4, 8);
                im.img[member]->write(block_at, blk.data(), kBlock);
                if (plen <= 64 * 1024) {
                    std::vector<uint8_t> payload(plen);
                    im.img[0]->read(sb.slot_offset(slot) + kBlock, payload.data(), plen);
                    uint32_t c = crc32c(payload.data(), plen);
                    std::memcpy(hdr.data() + 8 + 4 + 4 + 16 + 8 + 8 + 4 + 8, &c, 4);
                    fix_block_crc(hdr.data(), 12);
                    im.img[0]->write(sb.slot_offset(slot), hdr.data(), kBlock);
                }
                continue;
            }
            fix_block_crc(blk.data(), crc_at);
        }
        im.img[member]->write(block_at, blk.data(), kBlock);
    }
    auto q = Pool::import(im.disks());
    if (!q.ok()) return;
    Pool& pool = **q;
    {
        auto g = pool.lock();
        must_verify(pool.metadata_locked(), "imported");
    }
    // It keeps working: every kind of change, then a checkpoint and another import.
    (void)pool.create_volume("new", 2 * kChunk, false, std::nullopt);
    for (const auto& v : pool.volumes()) {
        if (v.snapshot) {
            (void)pool.clone(v.name, fmt::format("k{}", v.id));
            continue;
        }
        auto pc = pool.reserve(v.id, 0);
        if (pc.ok()) {
            std::vector<Status> res;
            (void)pool.commit({map_rec(v.id, 0, *pc)}, &res);
            if (!res.empty() && !res[0].ok()) pool.release(*pc);
        }
        (void)pool.snapshot(v.name, "z");
        (void)pool.resize_volume(v.name, v.size + kChunk);
    }
    for (const auto& v : pool.volumes()) (void)pool.delete_volume(v.name);
    {
        auto g = pool.lock();
        must_verify(pool.metadata_locked(), "after changes");
    }
    (void)pool.checkpoint();
    auto rep = pool.check();
    for (const auto& s : rep.problems) {
        // Damage the import tolerated (a superblock copy) is reported, not a contradiction.
        if (s.find("superblock copy") == std::string::npos) fail("check after import: " + s);
    }
    q->reset();
    auto again = Pool::import(im.disks());
    if (!again.ok()) fail("second import: " + again.error().describe());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (!getenv("VHOSTD_FUZZ_LOG")) spdlog::set_level(spdlog::level::off);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    switch (data[0] % 3) {
    case 0: mode_payload(data + 1, size - 1); break;
    case 1: mode_records(data + 1, size - 1); break;
    case 2: mode_images(data + 1, size - 1); break;
    }
    return 0;
}
