// Pool metadata: the format, the model (volumes, snapshots, clones, thin/thick), import, the
// consistency check, hostile metadata, and crashes at every metadata write.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include "core/crc32c.hpp"
#include "pool/pool.hpp"
#include "testing/mem_disk.hpp"

using namespace vhostd;
using namespace vhostd::pool;
using vhostd::testing::CrashPlan;
using vhostd::testing::MemDisk;
using vhostd::testing::MemImage;

namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kChunk = 64 * 1024;

struct Images {
    std::vector<std::shared_ptr<MemImage>> img;
    explicit Images(size_t n, uint64_t size = 8 * kMiB) {
        for (size_t i = 0; i < n; ++i) img.push_back(std::make_shared<MemImage>(size));
    }
    std::vector<std::unique_ptr<Disk>> disks(std::shared_ptr<CrashPlan> plan = nullptr, std::vector<size_t> order = {}) {
        if (order.empty()) {
            for (size_t i = 0; i < img.size(); ++i) order.push_back(i);
        }
        std::vector<std::unique_ptr<Disk>> d;
        for (size_t i : order) d.push_back(std::make_unique<MemDisk>(img[i], fmt::format("mem{}", i), plan));
        return d;
    }
};

CreateOptions opts(uint32_t journal = 0) {
    CreateOptions o;
    o.name = "p0";
    o.chunk_size = kChunk;
    o.journal_blocks = journal;
    return o;
}

std::vector<uint8_t> encoded(Pool& p) {
    auto g = p.lock();
    std::vector<uint8_t> out;
    p.metadata_locked().encode(out);
    return out;
}

void expect_clean(Pool& p) {
    auto rep = p.check();
    for (const auto& s : rep.problems) ADD_FAILURE() << s;
}

// Writes `n` chunks of volume `vol` (the map records a first write makes), one batch.
void allocate(Pool& p, const std::string& vol, std::vector<uint64_t> vchunks) {
    auto v = p.volume(vol);
    ASSERT_TRUE(v.ok()) << v.error().describe();
    std::vector<Record> recs;
    for (uint64_t vc : vchunks) {
        auto pc = p.reserve(v->id, vc);
        ASSERT_TRUE(pc.ok()) << pc.error().describe();
        Record r;
        r.type = RecordType::kMap;
        r.vol = v->id;
        r.vchunk = vc;
        r.pchunk = *pc;
        recs.push_back(r);
    }
    std::vector<Status> res;
    ASSERT_TRUE(p.commit(recs, &res).ok());
    for (auto& s : res) ASSERT_TRUE(s.ok()) << s.error().describe();
}

// Where a volume's virtual chunk reads from: the owner's id (0: zeroes).
uint32_t reads_from(Pool& p, const std::string& name, uint64_t vc) {
    auto info = p.volume(name);
    EXPECT_TRUE(info.ok());
    auto g = p.lock();
    const Metadata& md = p.metadata_locked();
    const Volume* v = md.find(info->id);
    uint64_t limit = v->size / kChunk;
    for (int depth = 0; v != nullptr && depth <= 64; ++depth) {
        uint64_t pc;
        if (vc >= limit) return 0;
        if (v->map.lookup(vc, &pc)) return v->id;
        limit = std::min(limit, v->parent_limit);
        v = v->parent ? md.find(v->parent) : nullptr;
    }
    return 0;
}

}  // namespace

TEST(Crc32c, KnownValueAndChaining) {
    const char* s = "123456789";
    EXPECT_EQ(crc32c(s, 9), 0xE3069283u);
    EXPECT_EQ(crc32c(s + 4, 5, crc32c(s, 4)), 0xE3069283u);
    EXPECT_EQ(crc32c(s, 0), 0u);
    std::vector<uint8_t> big(10000);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 7);
    uint32_t whole = crc32c(big.data(), big.size());
    EXPECT_EQ(crc32c(big.data() + 3333, big.size() - 3333, crc32c(big.data(), 3333)), whole);
}

TEST(Pool, CreateVolumesSnapshotsClonesAndImport) {
    Images im(3);
    auto p = Pool::create(opts(), im.disks());
    ASSERT_TRUE(p.ok()) << p.error().describe();
    Pool& pool = **p;
    auto info = pool.info();
    EXPECT_EQ(info.members.size(), 3u);
    EXPECT_GT(info.chunks, 200u);
    EXPECT_EQ(info.chunks_used, 0u);

    ASSERT_TRUE(pool.create_volume("a", 16 * kChunk, false, std::nullopt).ok());
    ASSERT_TRUE(pool.create_volume("b", 8 * kChunk, true, Layout::kConcat).ok());
    EXPECT_FALSE(pool.create_volume("a", kChunk, false, std::nullopt).ok());      // name taken
    EXPECT_FALSE(pool.create_volume("c", kChunk + 512, false, std::nullopt).ok()); // not whole chunks
    EXPECT_FALSE(pool.create_volume("bad/name", kChunk, false, std::nullopt).ok());
    EXPECT_FALSE(pool.create_volume("huge", uint64_t{1} << 62, true, std::nullopt).ok());
    allocate(pool, "a", {0, 1, 2, 5});
    EXPECT_EQ(pool.volume("a")->allocated, 4 * kChunk);
    // Stripe: consecutive chunks land on consecutive members.
    {
        auto g = pool.lock();
        const Metadata& md = pool.metadata_locked();
        const Volume* a = md.find_volume("a");
        std::set<uint32_t> members;
        for (uint64_t vc : {0, 1, 2}) {
            uint64_t pc, idx;
            ASSERT_TRUE(a->map.lookup(vc, &pc));
            members.insert(md.geometry().member_of(pc, &idx));
        }
        EXPECT_EQ(members.size(), 3u);
    }

    auto s1 = pool.snapshot("a", "s1");
    ASSERT_TRUE(s1.ok()) << s1.error().describe();
    EXPECT_EQ(s1->name, "a@s1");
    EXPECT_EQ(s1->allocated, 4 * kChunk);
    EXPECT_EQ(pool.volume("a")->allocated, 0u);
    EXPECT_EQ(pool.volume("a")->parent, "a@s1");
    EXPECT_EQ(reads_from(pool, "a", 1), s1->id);  // through the snapshot
    EXPECT_EQ(reads_from(pool, "a", 3), 0u);       // zeroes
    allocate(pool, "a", {1});                       // copy-on-write: a owns chunk 1 again
    EXPECT_EQ(reads_from(pool, "a", 1), pool.volume("a")->id);

    auto c = pool.clone("a@s1", "c");
    ASSERT_TRUE(c.ok()) << c.error().describe();
    EXPECT_EQ(c->parent, "a@s1");
    EXPECT_EQ(c->size, 16 * kChunk);
    EXPECT_EQ(reads_from(pool, "c", 2), s1->id);
    EXPECT_FALSE(pool.clone("a@nope", "d").ok());
    EXPECT_FALSE(pool.delete_volume("a").ok());  // has a snapshot
    EXPECT_FALSE(pool.resize_volume("a@s1", 32 * kChunk).ok());

    // Shrink then grow: the chunks past the shrink read as zeroes, not as the snapshot's.
    ASSERT_TRUE(pool.resize_volume("c", 2 * kChunk).ok());
    ASSERT_TRUE(pool.resize_volume("c", 16 * kChunk).ok());
    EXPECT_EQ(reads_from(pool, "c", 2), 0u);
    EXPECT_EQ(reads_from(pool, "c", 0), s1->id);

    auto vols = pool.volumes();
    ASSERT_EQ(vols.size(), 4u);
    EXPECT_EQ(vols[0].name, "a");
    EXPECT_EQ(vols[1].name, "a@s1");
    EXPECT_EQ(vols[1].clones, 2u);
    expect_clean(pool);
    auto before = encoded(pool);
    p->reset();  // closes the drives

    auto q = Pool::import(im.disks({}, {2, 0, 1}));  // any order
    ASSERT_TRUE(q.ok()) << q.error().describe();
    EXPECT_EQ(encoded(**q), before);
    EXPECT_EQ((*q)->volumes().size(), 4u);
    expect_clean(**q);
}

TEST(Pool, DeletingASnapshotMergesHidesOrFrees) {
    Images im(2);
    auto p = Pool::create(opts(), im.disks());
    ASSERT_TRUE(p.ok());
    Pool& pool = **p;
    ASSERT_TRUE(pool.create_volume("v", 8 * kChunk, false, std::nullopt).ok());
    allocate(pool, "v", {0, 1, 2, 3});
    ASSERT_TRUE(pool.snapshot("v", "s").ok());
    uint32_t sid = pool.volume("v@s")->id;
    ASSERT_TRUE(pool.clone("v@s", "c1").ok());
    ASSERT_TRUE(pool.clone("v@s", "c2").ok());
    allocate(pool, "c1", {0});
    // Two clones and the volume read through it: deleting the name keeps it, hidden.
    ASSERT_TRUE(pool.delete_volume("v@s").ok());
    EXPECT_FALSE(pool.volume("v@s").ok());
    EXPECT_EQ(pool.info().hidden_snapshots, 1u);
    EXPECT_EQ(pool.volume("c1")->parent, "(deleted snapshot)");
    EXPECT_EQ(reads_from(pool, "c2", 2), sid);
    expect_clean(pool);
    uint64_t used = pool.info().chunks_used;
    ASSERT_TRUE(pool.delete_volume("c2").ok());
    ASSERT_TRUE(pool.delete_volume("v").ok());
    // One child left: merged into c1, which now owns what it read through the snapshot; the
    // chunk c1 had overwritten is freed.
    EXPECT_EQ(pool.info().hidden_snapshots, 0u);
    EXPECT_EQ(pool.volume("c1")->allocated, 4 * kChunk);
    EXPECT_EQ(pool.volume("c1")->parent, "");
    EXPECT_EQ(pool.info().chunks_used, used - 1);
    expect_clean(pool);
    ASSERT_TRUE(pool.delete_volume("c1").ok());
    EXPECT_EQ(pool.info().chunks_used, 0u);
    expect_clean(pool);
}

TEST(Pool, ThickVolumesReserveTheirSpace) {
    Images im(1, 8 * kMiB);
    auto p = Pool::create(opts(), im.disks());
    ASSERT_TRUE(p.ok()) << p.error().describe();
    Pool& pool = **p;
    uint64_t total = pool.info().chunks;
    ASSERT_TRUE(pool.create_volume("thick", (total - 2) * kChunk, true, std::nullopt).ok());
    EXPECT_EQ(pool.info().chunks_available, 2u);
    EXPECT_FALSE(pool.create_volume("t2", 3 * kChunk, true, std::nullopt).ok());
    ASSERT_TRUE(pool.create_volume("thin", 10 * kChunk, false, std::nullopt).ok());
    allocate(pool, "thin", {0, 1});
    auto v = pool.volume("thin");
    auto none = pool.reserve(v->id, 2);  // the thick volume's chunks are not the thin one's
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.error().sys_errno, ENOSPC);
    allocate(pool, "thick", {0, 5, 7});  // from its reservation
    EXPECT_FALSE(pool.snapshot("thick", "s").ok());  // would reserve 3 more chunks: none left
    expect_clean(pool);
}

TEST(Pool, JournalWrapsThroughCheckpoints) {
    Images im(2);
    auto p = Pool::create(opts(8), im.disks());  // a checkpoint every 4 blocks
    ASSERT_TRUE(p.ok());
    Pool& pool = **p;
    ASSERT_TRUE(pool.create_volume("v", 64 * kChunk, false, std::nullopt).ok());
    for (uint64_t i = 0; i < 64; ++i) allocate(pool, "v", {i});
    for (int i = 0; i < 20; ++i) {
        ASSERT_TRUE(pool.snapshot("v", fmt::format("s{}", i)).ok());
    }
    EXPECT_GT(pool.info().generation, 5u);
    expect_clean(pool);
    auto before = encoded(pool);
    p->reset();
    auto q = Pool::import(im.disks());
    ASSERT_TRUE(q.ok()) << q.error().describe();
    EXPECT_EQ(encoded(**q), before);
}

TEST(Pool, RefusesWhatIsNotAWholePool) {
    Images a(3), b(1);
    ASSERT_TRUE(Pool::create(opts(), a.disks()).ok());
    CreateOptions ob = opts();
    ob.name = "other";
    ASSERT_TRUE(Pool::create(ob, b.disks()).ok());
    // A member missing.
    auto missing = Pool::import(a.disks({}, {0, 2}));
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().context.find("member 1"), std::string::npos) << missing.error().context;
    // A drive of another pool.
    std::vector<std::unique_ptr<Disk>> mixed = a.disks();
    mixed.push_back(std::make_unique<MemDisk>(b.img[0], "other0"));
    auto m = Pool::import(std::move(mixed));
    ASSERT_FALSE(m.ok());
    EXPECT_NE(m.error().context.find("belongs to pool"), std::string::npos) << m.error().context;
    // The same member twice (a copy of the drive).
    auto copy = std::make_shared<MemImage>(*a.img[1]);
    std::vector<std::unique_ptr<Disk>> dup = a.disks();
    dup.push_back(std::make_unique<MemDisk>(copy, "copy1"));
    EXPECT_FALSE(Pool::import(std::move(dup)).ok());
    // A drive of a pool is not overwritten without force.
    auto again = Pool::create(opts(), a.disks());
    ASSERT_FALSE(again.ok());
    EXPECT_NE(again.error().context.find("force"), std::string::npos);
    CreateOptions of = opts();
    of.force = true;
    EXPECT_TRUE(Pool::create(of, a.disks()).ok());
    // A blank drive.
    Images blank(1);
    auto none = Pool::import(blank.disks());
    ASSERT_FALSE(none.ok());
    EXPECT_NE(none.error().context.find("no valid pool superblock"), std::string::npos);
}

TEST(Pool, DamagedMetadataIsDetectedOrSurvived) {
    Images im(2);
    auto p = Pool::create(opts(16), im.disks());
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE((*p)->create_volume("v", 8 * kChunk, false, std::nullopt).ok());
    allocate(**p, "v", {0, 1});
    ASSERT_TRUE((*p)->checkpoint().ok());
    allocate(**p, "v", {2});
    Superblock sb = (*p)->superblock();
    auto state = encoded(**p);
    p->reset();
    auto flip = [&](size_t member, uint64_t off) {
        uint8_t b;
        im.img[member]->read(off, &b, 1);
        b ^= 0x40;
        im.img[member]->write(off, &b, 1);
    };
    // One superblock copy damaged: the other serves; check() reports the damage.
    flip(1, 100);
    {
        auto q = Pool::import(im.disks());
        ASSERT_TRUE(q.ok()) << q.error().describe();
        auto rep = (*q)->check();
        ASSERT_EQ(rep.problems.size(), 1u);
        EXPECT_NE(rep.problems[0].find("member 1"), std::string::npos) << rep.problems[0];
    }
    // Both copies: refused, with the reason.
    flip(1, kBlock + 100);
    {
        auto q = Pool::import(im.disks());
        ASSERT_FALSE(q.ok());
        EXPECT_NE(q.error().context.find("checksum"), std::string::npos) << q.error().context;
    }
    flip(1, 100);
    flip(1, kBlock + 100);
    // The newest checkpoint's body torn: the older one and the journal after it still hold
    // everything (a checkpoint is written when half the ring is used, so the ring never
    // overwrites what the older checkpoint needs), and import says it fell back.
    struct Slot {
        int slot;
        CheckpointHeader h;
    };
    std::vector<Slot> slots;
    for (int s = 0; s < 2; ++s) {
        std::vector<uint8_t> b(kBlock);
        im.img[0]->read(sb.slot_offset(s), b.data(), b.size());
        auto h = CheckpointHeader::decode(b.data(), sb.pool_uuid, sb.slot_bytes);
        ASSERT_TRUE(h.ok());
        slots.push_back({s, *h});
    }
    if (slots[0].h.generation < slots[1].h.generation) std::swap(slots[0], slots[1]);
    const Slot newest = slots[0], older = slots[1];
    ASSERT_LT(older.h.replay_seq, newest.h.replay_seq);
    flip(0, sb.slot_offset(newest.slot) + kBlock + 3);
    {
        auto q = Pool::import(im.disks());
        ASSERT_TRUE(q.ok()) << q.error().describe();
        EXPECT_EQ(encoded(**q), state);
        EXPECT_NE((*q)->info().note.find("generation"), std::string::npos) << (*q)->info().note;
    }
    // ... but if the journal between the two checkpoints is damaged too, what the newest one
    // recorded is gone: refused, not silently rolled back.
    uint64_t jb_off = sb.journal_offset() + (older.h.replay_seq % sb.journal_blocks) * kBlock;
    flip(0, jb_off + 100);
    {
        auto q = Pool::import(im.disks());
        ASSERT_FALSE(q.ok());
        EXPECT_NE(q.error().context.find("lost"), std::string::npos) << q.error().context;
    }
    flip(0, jb_off + 100);
    flip(0, sb.slot_offset(newest.slot) + kBlock + 3);
    {
        auto q = Pool::import(im.disks());
        ASSERT_TRUE(q.ok()) << q.error().describe();
        EXPECT_EQ(encoded(**q), state);
        EXPECT_TRUE((*q)->info().note.empty());
    }
    // A superblock that lies about the drive's size (checksum made right): refused.
    {
        std::vector<uint8_t> b(kBlock);
        im.img[1]->read(0, b.data(), b.size());
        auto lie = Superblock::decode(b.data(), im.img[1]->size());
        ASSERT_TRUE(lie.ok());
        lie->members[1].chunks *= 100;
        auto enc = lie->encode();
        im.img[1]->write(0, enc.data(), enc.size());
        im.img[1]->write(kBlock, enc.data(), enc.size());
        auto q = Pool::import(im.disks());
        ASSERT_FALSE(q.ok());
        EXPECT_NE(q.error().context.find("the drive has"), std::string::npos) << q.error().context;
    }
}

TEST(Pool, AJournalRecordThatBreaksTheRulesIsRefused) {
    Images im(1);
    auto p = Pool::create(opts(16), im.disks());
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE((*p)->create_volume("v", 8 * kChunk, false, std::nullopt).ok());
    allocate(**p, "v", {0});
    Superblock sb = (*p)->superblock();
    // The next block, well formed and chained, maps an owned chunk to another virtual chunk.
    uint64_t seq;
    uint32_t prev = 0;
    uint64_t owned_pc;
    {
        auto g = (*p)->lock();
        const Volume* v = (*p)->metadata_locked().find_volume("v");
        ASSERT_TRUE(v->map.lookup(0, &owned_pc));
    }
    // Find the last valid block: the journal's head.
    for (seq = 0;; ++seq) {
        std::vector<uint8_t> b(kBlock);
        im.img[0]->read(sb.journal_offset() + (seq % sb.journal_blocks) * kBlock, b.data(), b.size());
        uint32_t crc;
        if (!JournalBlock::decode(b.data(), sb.pool_uuid, seq, prev, &crc).ok()) break;
        prev = crc;
    }
    p->reset();
    JournalBlock jb;
    jb.seq = seq;
    jb.prev_crc = prev;
    Record r;
    r.type = RecordType::kMap;
    r.vol = 1;
    r.vchunk = 1;
    r.pchunk = owned_pc;
    jb.records.emplace_back();
    r.encode(jb.records.back());
    auto block = jb.encode(sb.pool_uuid, nullptr);
    im.img[0]->write(sb.journal_offset() + (seq % sb.journal_blocks) * kBlock, block.data(), block.size());
    auto q = Pool::import(im.disks());
    ASSERT_FALSE(q.ok());
    EXPECT_NE(q.error().context.find("owned already"), std::string::npos) << q.error().context;
}

// Kills the pool at every metadata write of a churn (volumes, snapshots, clones, resizes,
// deletes, allocating writes in batches, checkpoints through a small journal): the write lands
// torn and nothing after it does. Import must then succeed, pass check(), and hold exactly the
// last acknowledged state or that state plus a prefix of the interrupted change.
TEST(Pool, CrashAtEveryMetadataWrite) {
    auto churn = [](Pool& pool, std::mt19937_64& rng, int ops, std::vector<uint8_t>& acked,
                    std::vector<std::vector<uint8_t>>& candidates) -> bool {
        std::vector<std::string> vols;
        int name = 0;
        for (int i = 0; i < ops; ++i) {
            candidates.assign(1, acked);
            std::vector<Record> batch;
            int op = static_cast<int>(rng() % 10);
            Status st = ok_status();
            std::string nm = fmt::format("n{}", name++);
            if (op <= 1 || vols.empty()) {
                st = pool.create_volume(nm, (1 + rng() % 96) * kChunk, rng() % 4 == 0, std::nullopt).ok()
                         ? ok_status() : make_error(Errc::kInvalid, "create");
                if (st.ok()) vols.push_back(nm);
            } else if (op <= 4) {
                // An allocating batch: its candidates are every prefix.
                // Mostly one volume, a few chunks; sometimes every volume, many (a batch of
                // several journal blocks).
                bool wide = rng() % 8 == 0;
                std::vector<Record> recs;
                std::set<std::pair<uint32_t, uint64_t>> used;
                for (int k = 0, n = wide ? 800 : 1 + static_cast<int>(rng() % 3); k < n; ++k) {
                    auto info = pool.volume(vols[wide ? rng() % vols.size() : i % vols.size()]);
                    if (!info.ok()) continue;
                    uint64_t vc = rng() % (info->size / kChunk);
                    if (!used.insert({info->id, vc}).second) continue;
                    auto pc = pool.reserve(info->id, vc);
                    if (!pc.ok()) continue;
                    Record r;
                    r.type = RecordType::kMap;
                    r.vol = info->id;
                    r.vchunk = vc;
                    r.pchunk = *pc;
                    recs.push_back(r);
                }
                {
                    // Candidates: acked + each prefix of the records that will be accepted.
                    auto g = pool.lock();
                    auto copy = Metadata::decode(pool.metadata_locked().geometry(), acked.data(), acked.size());
                    EXPECT_TRUE(copy.ok());
                    for (auto& r : recs) {
                        if ((*copy)->check_record(r).ok() && (*copy)->apply(r).ok()) {
                            candidates.emplace_back();
                            (*copy)->encode(candidates.back());
                        }
                    }
                }
                std::vector<Status> res;
                st = pool.commit(recs, &res);
            } else if (op == 5) {
                st = pool.snapshot(vols[rng() % vols.size()], nm).ok() ? ok_status() : make_error(Errc::kInvalid, "snap");
            } else if (op == 6) {
                auto all = pool.volumes();
                std::vector<std::string> ss;
                for (auto& v : all) if (v.snapshot) ss.push_back(v.name);
                if (!ss.empty()) {
                    st = pool.clone(ss[rng() % ss.size()], nm).ok() ? ok_status() : make_error(Errc::kInvalid, "clone");
                    if (st.ok()) vols.push_back(nm);
                }
            } else if (op == 7) {
                auto& v = vols[rng() % vols.size()];
                st = pool.resize_volume(v, (1 + rng() % 24) * kChunk).ok() ? ok_status() : make_error(Errc::kInvalid, "resize");
            } else {
                auto all = pool.volumes();
                if (!all.empty()) {
                    std::string victim = all[rng() % all.size()].name;
                    st = pool.delete_volume(victim);
                    if (st.ok()) vols.erase(std::remove(vols.begin(), vols.end(), victim), vols.end());
                }
            }
            // Whatever the op's fate, memory now holds either the old or the new state; a
            // refused op (a rule) changes nothing.
            auto now = encoded(pool);
            if (pool.info().failed) {
                candidates.push_back(now);
                return false;  // the crash
            }
            acked = now;
            (void)st;
        }
        return true;
    };

    // A dry run counts the writes.
    uint64_t total_writes = 0;
    {
        Images im(3, 32 * kMiB);
        auto plan = std::make_shared<CrashPlan>();
        auto p = Pool::create(opts(8), im.disks(plan));
        ASSERT_TRUE(p.ok());
        std::mt19937_64 rng(7);
        std::vector<uint8_t> acked = encoded(**p);
        std::vector<std::vector<uint8_t>> cand;
        ASSERT_TRUE(churn(**p, rng, 150, acked, cand));
        expect_clean(**p);
        EXPECT_GT((*p)->info().generation, 10u);
        total_writes = plan->writes;
    }
    ASSERT_GT(total_writes, 150u);
    uint64_t create_writes = 0;
    {
        Images im(3, 32 * kMiB);
        auto plan = std::make_shared<CrashPlan>();
        ASSERT_TRUE(Pool::create(opts(8), im.disks(plan)).ok());
        create_writes = plan->writes;
    }
    int torn_used_older = 0;
#ifdef VHOSTD_SANITIZED
    const uint64_t stride = 7;  // a sanitizer build runs this 60x slower: every 7th write there
#else
    const uint64_t stride = 1;
#endif
    for (uint64_t n = create_writes + 1; n <= total_writes; n += stride) {
        Images im(3, 32 * kMiB);
        auto plan = std::make_shared<CrashPlan>();
        plan->crash_at = n;
        plan->rng.seed(n);
        std::vector<uint8_t> acked;
        std::vector<std::vector<uint8_t>> cand;
        {
            auto p = Pool::create(opts(8), im.disks(plan));
            ASSERT_TRUE(p.ok());
            std::mt19937_64 rng(7);
            acked = encoded(**p);
            bool finished = churn(**p, rng, 150, acked, cand);
            ASSERT_FALSE(finished) << "no crash at write " << n;
        }
        auto q = Pool::import(im.disks());
        ASSERT_TRUE(q.ok()) << "crash at write " << n << ": " << q.error().describe();
        auto rep = (*q)->check();
        for (auto& s : rep.problems) ADD_FAILURE() << "crash at write " << n << ": " << s;
        auto got = encoded(**q);
        bool match = std::find(cand.begin(), cand.end(), got) != cand.end();
        EXPECT_TRUE(match) << "crash at write " << n << ": the imported state is neither the acknowledged one nor a prefix of the interrupted change";
        if (!(*q)->info().note.empty()) ++torn_used_older;
        // The imported pool goes on working, and what it writes next survives another import
        // (a journal block the crash left behind must not be replayed after it).
        ASSERT_TRUE((*q)->create_volume("after", kChunk, false, std::nullopt).ok());
        expect_clean(**q);
        auto after = encoded(**q);
        q->reset();
        auto r = Pool::import(im.disks());
        ASSERT_TRUE(r.ok()) << "crash at write " << n << ", second import: " << r.error().describe();
        EXPECT_EQ(encoded(**r), after) << "crash at write " << n;
    }
    // Some crashes tore a checkpoint, and import fell back to the older one (every write is
    // needed to be sure to hit one; DamagedMetadataIsDetectedOrSurvived tears one on purpose).
    if (stride == 1) {
        EXPECT_GT(torn_used_older, 0);
    }
}

// A batch of two journal blocks, and a crash that loses the first but keeps the second. Import
// ends the journal before the lost block; the next change is written where it was; a later
// import must not take the crashed batch's second block as the continuation.
TEST(Pool, AStaleBlockOfACrashedBatchIsNotReplayed) {
    Images im(1, 32 * kMiB);
    auto plan = std::make_shared<CrashPlan>();
    std::vector<uint8_t> before;
    {
        auto p = Pool::create(opts(16), im.disks(plan));
        ASSERT_TRUE(p.ok());
        ASSERT_TRUE((*p)->create_volume("v", 400 * kChunk, false, std::nullopt).ok());
        before = encoded(**p);
        auto info = (*p)->volume("v");
        std::vector<Record> recs;
        for (uint64_t vc = 0; vc < 300; ++vc) {  // two blocks' worth
            auto pc = (*p)->reserve(info->id, vc);
            ASSERT_TRUE(pc.ok());
            Record r;
            r.type = RecordType::kMap;
            r.vol = info->id;
            r.vchunk = vc;
            r.pchunk = *pc;
            recs.push_back(r);
        }
        plan->crash_at = plan->writes + 2;  // the batch's second block
        plan->fate = [](size_t i, size_t) { return i == 0 ? 1 : 0; };
        EXPECT_FALSE((*p)->commit(recs, nullptr).ok());
    }
    std::vector<uint8_t> after;
    {
        auto q = Pool::import(im.disks());
        ASSERT_TRUE(q.ok()) << q.error().describe();
        EXPECT_EQ(encoded(**q), before);
        ASSERT_TRUE((*q)->create_volume("w", kChunk, false, std::nullopt).ok());
        after = encoded(**q);
    }
    auto r = Pool::import(im.disks());
    ASSERT_TRUE(r.ok()) << r.error().describe();
    EXPECT_EQ(encoded(**r), after);
    expect_clean(**r);
}

TEST(Pool, FilesAreLockedWhileInUse) {
    char dir[] = "/tmp/vhostd-pool-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::vector<std::string> paths;
    for (int i = 0; i < 2; ++i) {
        paths.push_back(std::string(dir) + "/d" + std::to_string(i));
        int fd = ::open(paths.back().c_str(), O_CREAT | O_RDWR, 0600);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(ftruncate(fd, 16 * kMiB), 0);
        ::close(fd);
    }
    {
        auto disks = Pool::open_disks(paths);
        ASSERT_TRUE(disks.ok());
        auto p = Pool::create(opts(), std::move(disks).value());
        ASSERT_TRUE(p.ok()) << p.error().describe();
        ASSERT_TRUE((*p)->create_volume("v", 4 * kChunk, false, std::nullopt).ok());
        auto busy = Pool::open_disks(paths);
        ASSERT_FALSE(busy.ok());
        EXPECT_NE(busy.error().context.find("in use"), std::string::npos);
    }
    auto disks = Pool::open_disks(paths);
    ASSERT_TRUE(disks.ok());
    auto q = Pool::import(std::move(disks).value());
    ASSERT_TRUE(q.ok()) << q.error().describe();
    EXPECT_EQ((*q)->volumes().size(), 1u);
    std::filesystem::remove_all(dir);
}
