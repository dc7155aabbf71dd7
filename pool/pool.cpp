#include "pool/pool.hpp"

#include <sys/random.h>

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "core/checked.hpp"
#include "core/crc32c.hpp"
#include "core/log.hpp"
#include "pool/nvme_disk.hpp"

namespace vhostd::pool {
namespace {

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

Status random_uuid(Uuid& u) {
    if (::getrandom(u.data(), u.size(), 0) != static_cast<ssize_t>(u.size())) return sys_error("getrandom");
    u[6] = static_cast<uint8_t>((u[6] & 0x0f) | 0x40);  // RFC 4122 version 4
    u[8] = static_cast<uint8_t>((u[8] & 0x3f) | 0x80);
    return ok_status();
}

}  // namespace

void split_snapshot_name(std::string_view full, std::string_view* vol, std::string_view* snap) {
    size_t at = full.find('@');
    if (at == std::string_view::npos) {
        *vol = full;
        *snap = {};
    } else {
        *vol = full.substr(0, at);
        *snap = full.substr(at + 1);
    }
}

Result<std::vector<std::unique_ptr<Disk>>> Pool::open_disks(const std::vector<std::string>& paths) {
    std::vector<std::unique_ptr<Disk>> disks;
    for (const auto& p : paths) {
        // A character device is an NVMe namespace's generic device (/dev/ngXnY).
        if (nvme::is_char_device(p)) {
            VHOSTD_ASSIGN_OR_RETURN(auto d, NvmeDisk::open(p));
            disks.push_back(std::move(d));
        } else {
            VHOSTD_ASSIGN_OR_RETURN(auto d, FileDisk::open(p));
            disks.push_back(std::move(d));
        }
    }
    return disks;
}

Result<Superblock> Pool::probe(Disk& disk) {
    if (disk.size() < kMetaAreaStart) return make_error(Errc::kInvalid, "{}: too small for a pool member", disk.path());
    std::vector<uint8_t> b(kMetaAreaStart);
    VHOSTD_TRY(disk.read(0, b.data(), b.size()));
    auto a = Superblock::decode(b.data(), disk.size());
    if (a.ok()) return a;
    auto c = Superblock::decode(b.data() + kBlock, disk.size());
    if (c.ok()) return c;
    return make_error(Errc::kInvalid, "{}: no valid pool superblock (copy A: {}; copy B: {})", disk.path(),
                      a.error().context, c.error().context);
}

Result<std::unique_ptr<Pool>> Pool::create(const CreateOptions& opts, std::vector<std::unique_ptr<Disk>> disks) {
    if (opts.name.size() > 63 || !valid_name(opts.name)) {
        return make_error(Errc::kInvalid, "pool name '{}': 1-63 of A-Z a-z 0-9 _ . -, not starting with . or -", opts.name);
    }
    if (disks.empty() || disks.size() > kMaxMembers) return make_error(Errc::kInvalid, "a pool has 1 to {} drives", kMaxMembers);
    if (!is_pow2(opts.chunk_size) || opts.chunk_size < kMinChunk || opts.chunk_size > kMaxChunk) {
        return make_error(Errc::kInvalid, "chunk size {}: a power of two from 64K to 1G", opts.chunk_size);
    }
    uint32_t jblocks = opts.journal_blocks ? opts.journal_blocks : CreateOptions::kDefaultJournalBlocks;
    if (jblocks < kMinJournalBlocks || jblocks > kMaxJournalBlocks) {
        return make_error(Errc::kInvalid, "journal of {} blocks: {} to {}", jblocks, kMinJournalBlocks, kMaxJournalBlocks);
    }
    std::set<std::string> paths;
    for (auto& d : disks) {
        if (!paths.insert(d->path()).second) return make_error(Errc::kInvalid, "{} is named twice", d->path());
        if (!opts.force) {
            auto sb = probe(*d);
            if (sb.ok()) {
                return make_error(Errc::kState, "{} holds pool '{}' ({}): pass force to overwrite it", d->path(),
                                  sb->pool_name, uuid_string(sb->pool_uuid));
            }
        }
    }
    const uint64_t align = std::min<uint64_t>(opts.chunk_size, 1024 * 1024);
    Superblock sb;
    VHOSTD_TRY(random_uuid(sb.pool_uuid));
    sb.pool_name = opts.name;
    sb.chunk_size = opts.chunk_size;
    sb.layout = opts.layout;
    sb.journal_blocks = jblocks;
    // The checkpoint slot must hold a full map of every chunk: size it from an upper bound of
    // the chunks (member 0 as if it had no metadata area), then place member 0's data after it.
    Geometry upper;
    upper.chunk_size = opts.chunk_size;
    for (size_t i = 0; i < disks.size(); ++i) {
        uint64_t off = align_up(kMetaAreaStart, align);
        uint64_t sz = disks[i]->size();
        upper.member_chunks.push_back(sz > off ? (sz - off) / opts.chunk_size : 0);
        MemberEntry m;
        VHOSTD_TRY(random_uuid(m.uuid));
        m.data_offset = off;
        sb.members.push_back(m);
    }
    sb.slot_bytes = align_up(kBlock + Metadata::max_encoded_size(upper), kBlock);
    sb.members[0].data_offset = align_up(sb.meta_end(), align);
    for (size_t i = 0; i < disks.size(); ++i) {
        uint64_t sz = disks[i]->size();
        uint64_t off = sb.members[i].data_offset;
        sb.members[i].chunks = sz > off ? (sz - off) / opts.chunk_size : 0;
        if (sb.members[i].chunks == 0) {
            return make_error(Errc::kInvalid, "{}: {} bytes leave no {}-byte chunk after {} bytes of metadata",
                              disks[i]->path(), sz, opts.chunk_size, off);
        }
        if (sb.members[i].chunks > (uint64_t{1} << 40)) return make_error(Errc::kInvalid, "{}: too large", disks[i]->path());
    }
    auto pool = std::unique_ptr<Pool>(new Pool);
    pool->sb_ = sb;
    pool->disks_ = std::move(disks);
    pool->md_ = std::make_unique<Metadata>(sb.geometry());
    // The first checkpoint (empty) into slot 0, then the superblocks: member 0's last, so a pool
    // exists only once all of it does.
    pool->newest_slot_ = 1;  // the next checkpoint goes to slot 0
    VHOSTD_TRY(pool->write_checkpoint_locked());
    for (size_t k = 0; k < pool->disks_.size(); ++k) {
        size_t i = (k + 1) % pool->disks_.size();
        Superblock m = sb;
        m.member_index = static_cast<uint32_t>(i);
        auto block = m.encode();
        Disk& d = *pool->disks_[i];
        VHOSTD_TRY(d.write(0, block.data(), block.size()));
        VHOSTD_TRY(d.sync());
        VHOSTD_TRY(d.write(kBlock, block.data(), block.size()));
        VHOSTD_TRY(d.sync());
    }
    pool->sb_.member_index = 0;
    VLOG_INFO("pool '{}' ({}) created: {} drives, {} chunks of {} bytes", sb.pool_name, uuid_string(sb.pool_uuid),
                    pool->disks_.size(), pool->md_->geometry().total_chunks, sb.chunk_size);
    return pool;
}

Result<Pool::Loaded> Pool::load(Disk& meta, const Superblock& sb) {
    Geometry geo = sb.geometry();
    const uint64_t room = sb.slot_bytes - kBlock;
    struct Candidate {
        int slot;
        CheckpointHeader h;
    };
    std::vector<Candidate> cands;
    std::string why[2];
    for (int s = 0; s < 2; ++s) {
        std::vector<uint8_t> b(kBlock);
        VHOSTD_TRY(meta.read(sb.slot_offset(s), b.data(), b.size()));
        auto h = CheckpointHeader::decode(b.data(), sb.pool_uuid, room);
        if (h.ok()) {
            cands.push_back({s, *h});
        } else {
            why[s] = h.error().context;
        }
    }
    std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) { return a.h.generation > b.h.generation; });
    Loaded out;
    std::optional<uint64_t> must_reach;  // a newer checkpoint whose header is whole but body is not
    for (const auto& c : cands) {
        std::vector<uint8_t> payload(c.h.payload_len);
        VHOSTD_TRY(meta.read(sb.slot_offset(c.slot) + kBlock, payload.data(), payload.size()));
        if (crc32c(payload.data(), payload.size()) != c.h.payload_crc) {
            why[c.slot] = "checkpoint body checksum mismatch (a torn write)";
            if (!must_reach) must_reach = c.h.replay_seq;
            continue;
        }
        auto md = Metadata::decode(geo, payload.data(), payload.size());
        if (!md.ok()) {
            why[c.slot] = md.error().context;
            if (!must_reach) must_reach = c.h.replay_seq;
            continue;
        }
        out.md = std::move(md).value();
        out.slot = c.slot;
        out.generation = c.h.generation;
        out.replay_seq = c.h.replay_seq;
        out.last_crc = c.h.replay_prev_crc;
        if (must_reach) out.note = fmt::format("checkpoint slot {} unusable ({}), generation {} used", 1 - c.slot, why[1 - c.slot], c.h.generation);
        break;
    }
    if (!out.md) {
        return make_error(Errc::kInvalid, "no usable checkpoint (slot 0: {}; slot 1: {})", why[0].empty() ? "older" : why[0],
                          why[1].empty() ? "older" : why[1]);
    }
    // Replay: at most a ring's worth of blocks, each chained to the one before.
    uint64_t seq = out.replay_seq;
    uint32_t prev = out.last_crc;
    std::vector<uint8_t> b(kBlock);
    for (uint32_t n = 0; n < sb.journal_blocks; ++n) {
        VHOSTD_TRY(meta.read(sb.journal_offset() + (seq % sb.journal_blocks) * kBlock, b.data(), b.size()));
        uint32_t crc = 0;
        auto jb = JournalBlock::decode(b.data(), sb.pool_uuid, seq, prev, &crc);
        if (!jb.ok()) break;  // the end of the journal
        for (size_t i = 0; i < jb->records.size(); ++i) {
            auto rec = Record::decode(jb->records[i].data(), jb->records[i].size());
            if (!rec.ok()) return make_error(Errc::kInvalid, "journal block {} record {}: {}", seq, i, rec.error().context);
            Status st = out.md->check_record(*rec);
            if (!st.ok()) return make_error(Errc::kInvalid, "journal block {} record {} ({}): {}", seq, i, rec->describe(), st.error().context);
            VHOSTD_TRY(out.md->apply(*rec));
        }
        prev = crc;
        ++seq;
        ++out.replayed;
    }
    if (must_reach && seq < *must_reach) {
        return make_error(Errc::kInvalid,
                          "the newest checkpoint is damaged and the journal no longer reaches it (block {} of {}): "
                          "changes after generation {} are lost",
                          seq, *must_reach, out.generation);
    }
    out.next_seq = seq;
    out.last_crc = prev;
    out.md->retired().clear();
    auto problems = out.md->verify();
    if (!problems.empty()) return make_error(Errc::kInvalid, "metadata after replay: {}", problems.front());
    return out;
}

Result<std::unique_ptr<Pool>> Pool::import(std::vector<std::unique_ptr<Disk>> disks) {
    if (disks.empty()) return make_error(Errc::kInvalid, "no drives");
    std::vector<Superblock> sbs;
    for (auto& d : disks) {
        VHOSTD_ASSIGN_OR_RETURN(auto sb, probe(*d));
        sbs.push_back(std::move(sb));
    }
    const Superblock& first = sbs[0];
    const std::string first_path = disks[0]->path();
    std::vector<std::unique_ptr<Disk>> ordered(first.members.size());
    for (size_t i = 0; i < disks.size(); ++i) {
        if (!sbs[i].same_pool(first)) {
            return make_error(Errc::kInvalid, "{} belongs to pool '{}' ({}), {} to '{}' ({})", disks[i]->path(), sbs[i].pool_name,
                              uuid_string(sbs[i].pool_uuid), first_path, first.pool_name, uuid_string(first.pool_uuid));
        }
        uint32_t idx = sbs[i].member_index;
        if (ordered[idx]) return make_error(Errc::kInvalid, "{} and {} are both member {}", ordered[idx]->path(), disks[i]->path(), idx);
        ordered[idx] = std::move(disks[i]);
    }
    for (size_t i = 0; i < ordered.size(); ++i) {
        if (!ordered[i]) {
            return make_error(Errc::kInvalid, "pool '{}' has {} drives: member {} ({}) is missing", first.pool_name,
                              ordered.size(), i, uuid_string(first.members[i].uuid));
        }
    }
    auto pool = std::unique_ptr<Pool>(new Pool);
    pool->sb_ = first;
    pool->sb_.member_index = 0;
    pool->disks_ = std::move(ordered);
    VHOSTD_ASSIGN_OR_RETURN(Loaded l, load(*pool->disks_[0], pool->sb_));
    pool->md_ = std::move(l.md);
    pool->newest_slot_ = l.slot;
    pool->generation_ = l.generation;
    pool->replay_seq_ = l.replay_seq;
    pool->next_seq_ = l.next_seq;
    pool->last_crc_ = l.last_crc;
    pool->note_ = l.note;
    if (!l.note.empty()) VLOG_WARN("pool '{}': {}", first.pool_name, l.note);
    VLOG_INFO("pool '{}' ({}) imported: {} volumes, checkpoint generation {}, {} journal blocks replayed",
                    first.pool_name, uuid_string(first.pool_uuid), pool->md_->volumes().size(), l.generation, l.replayed);
    return pool;
}

void Pool::changed_locked() {
    if (after_change_ && !after_change_()) return;
    md_->reclaim();
}

void Pool::set_live(std::function<bool()> after_change, std::function<Status(const Record&)> guard) {
    std::lock_guard<std::mutex> g(mu_);
    after_change_ = std::move(after_change);
    guard_ = std::move(guard);
    md_->set_quarantine(static_cast<bool>(after_change_));
    if (!after_change_) md_->reclaim();
}

uint32_t Pool::member_of(uint64_t pchunk, uint64_t* offset) const {
    uint64_t idx = 0;
    uint32_t m = md_->geometry().member_of(pchunk, &idx);
    *offset = sb_.members[m].data_offset + idx * sb_.chunk_size;
    return m;
}

void Pool::allocate(std::vector<Allocation>& wants) {
    std::lock_guard<std::mutex> g(mu_);
    const uint64_t cs = sb_.chunk_size;
    if (!usable_locked().ok()) {
        for (auto& a : wants) a.result = -EIO;
        return;
    }
    struct Fresh {
        size_t want;
        uint64_t pchunk;
    };
    std::vector<Fresh> fresh;
    std::vector<bool> touched(disks_.size(), false);
    std::vector<uint8_t> buf;
    std::set<std::pair<uint32_t, uint64_t>> seen;
    Chain chain;
    for (size_t i = 0; i < wants.size(); ++i) {
        Allocation& a = wants[i];
        a.result = 0;
        const Volume* v = md_->find(a.vol);
        if (v == nullptr || v->snapshot || a.vchunk >= v->size / cs) {
            a.result = -ENOENT;
            continue;
        }
        uint64_t have;
        if (v->map.lookup(a.vchunk, &have) || !seen.insert({a.vol, a.vchunk}).second) continue;  // owned (or in this batch)
        auto pc = md_->reserve(a.vol, a.vchunk);
        if (!pc.ok()) {
            a.result = pc.error().sys_errno == ENOSPC ? -ENOSPC : -EIO;
            continue;
        }
        uint64_t dst_off;
        uint32_t dst_m = member_of(*pc, &dst_off);
        Status st = md_->build_chain(a.vol, chain);
        uint64_t src = 0;
        uint32_t owner = 0;
        if (st.ok() && chain.resolve(a.vchunk, &src, &owner)) {
            // Copy-on-write: the chunk starts as what the volume read there.
            uint64_t src_off;
            uint32_t src_m = member_of(src, &src_off);
            const uint64_t piece = std::min<uint64_t>(cs, 4 * 1024 * 1024);
            buf.resize(piece);
            for (uint64_t done = 0; st.ok() && done < cs; done += piece) {
                st = disks_[src_m]->read(src_off + done, buf.data(), piece);
                if (st.ok()) st = disks_[dst_m]->write(dst_off + done, buf.data(), piece);
            }
        } else if (st.ok()) {
            st = disks_[dst_m]->zero(dst_off, cs);
        }
        if (!st.ok()) {
            VLOG_WARN("pool '{}': filling chunk {} for volume {}: {}", sb_.pool_name, *pc, a.vol, st.error().describe());
            md_->release(*pc);
            a.result = -EIO;
            continue;
        }
        touched[dst_m] = true;
        fresh.push_back({i, *pc});
    }
    if (fresh.empty()) return;
    // The chunks' contents are durable before any record points at them.
    for (size_t m = 0; m < disks_.size(); ++m) {
        if (!touched[m]) continue;
        Status st = disks_[m]->sync();
        if (!st.ok()) {
            VLOG_WARN("pool '{}': flushing {}: {}", sb_.pool_name, disks_[m]->path(), st.error().describe());
            for (auto& f : fresh) md_->release(f.pchunk), wants[f.want].result = -EIO;
            return;
        }
    }
    std::vector<Record> recs;
    for (auto& f : fresh) {
        Record r;
        r.type = RecordType::kMap;
        r.vol = wants[f.want].vol;
        r.vchunk = wants[f.want].vchunk;
        r.pchunk = f.pchunk;
        recs.push_back(r);
    }
    std::vector<Status> res;
    Status st = commit_locked(recs, &res);
    for (size_t k = 0; k < fresh.size(); ++k) {
        if (!st.ok() || !res[k].ok()) {
            md_->release(fresh[k].pchunk);
            wants[fresh[k].want].result = -EIO;
        }
    }
}

Status Pool::usable_locked() const {
    if (failed_) return make_error(Errc::kState, "pool '{}' failed ({}): import it again", sb_.pool_name, note_);
    return ok_status();
}

Status Pool::write_checkpoint_locked() {
    std::vector<uint8_t> buf;
    buf.reserve(kBlock + 4096);
    buf.resize(kBlock);
    md_->encode(buf);
    uint64_t payload = buf.size() - kBlock;
    if (payload > sb_.slot_bytes - kBlock) {
        failed_ = true;
        note_ = "a checkpoint outgrew its slot";
        return make_error(Errc::kState, "pool '{}': checkpoint of {} bytes, slot room {}", sb_.pool_name, payload, sb_.slot_bytes - kBlock);
    }
    CheckpointHeader h;
    h.pool_uuid = sb_.pool_uuid;
    h.generation = generation_ + 1;
    h.replay_seq = next_seq_;
    h.replay_prev_crc = last_crc_;
    h.payload_len = payload;
    h.payload_crc = crc32c(buf.data() + kBlock, payload);
    auto hb = h.encode();
    std::copy(hb.begin(), hb.end(), buf.begin());
    int slot = 1 - newest_slot_;
    Disk& d = *disks_[0];
    Status st = d.write(sb_.slot_offset(slot), buf.data(), buf.size());
    if (st.ok()) st = d.sync();
    if (!st.ok()) {
        failed_ = true;
        note_ = st.error().describe();
        return st;
    }
    newest_slot_ = slot;
    generation_ = h.generation;
    replay_seq_ = next_seq_;
    replay_prev_crc_ = last_crc_;
    return ok_status();
}

Status Pool::commit_locked(const std::vector<Record>& records, std::vector<Status>* results) {
    VHOSTD_TRY(usable_locked());
    if (results) results->assign(records.size(), ok_status());
    // Room in the ring for the whole batch (an upper bound: every record accepted).
    uint64_t blocks = 1, fill = 0;
    std::vector<std::vector<uint8_t>> enc(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
        records[i].encode(enc[i]);
        if (fill + 2 + enc[i].size() > JournalBlock::room()) ++blocks, fill = 0;
        fill += 2 + enc[i].size();
    }
    if (blocks > sb_.journal_blocks / 2) return make_error(Errc::kInvalid, "a batch of {} journal blocks", blocks);
    if (next_seq_ - replay_seq_ + blocks > sb_.journal_blocks / 2) VHOSTD_TRY(write_checkpoint_locked());
    std::vector<JournalBlock> out(1);
    fill = 0;
    size_t accepted = 0;
    for (size_t i = 0; i < records.size(); ++i) {
        Status st = md_->check_record(records[i]);
        if (st.ok()) {
            st = md_->apply(records[i]);
            if (!st.ok()) {
                failed_ = true;
                note_ = st.error().describe();
                return st;
            }
        }
        if (!st.ok()) {
            if (results) (*results)[i] = st;
            else if (records.size() == 1) return st;
            continue;
        }
        if (fill + 2 + enc[i].size() > JournalBlock::room()) out.emplace_back(), fill = 0;
        fill += 2 + enc[i].size();
        out.back().records.push_back(std::move(enc[i]));
        ++accepted;
    }
    if (accepted == 0) {
        if (records.size() == 1 && results) return (*results)[0];
        return ok_status();
    }
    Disk& d = *disks_[0];
    uint64_t seq = next_seq_;
    uint32_t prev = last_crc_;
    for (auto& jb : out) {
        jb.seq = seq;
        jb.prev_crc = prev;
        auto block = jb.encode(sb_.pool_uuid, &prev);
        Status st = d.write(sb_.journal_offset() + (seq % sb_.journal_blocks) * kBlock, block.data(), block.size());
        if (!st.ok()) {
            failed_ = true;
            note_ = st.error().describe();
            return st;
        }
        ++seq;
    }
    Status st = d.sync();
    if (!st.ok()) {
        failed_ = true;
        note_ = st.error().describe();
        return st;
    }
    next_seq_ = seq;
    last_crc_ = prev;
    return ok_status();
}

Status Pool::commit(const std::vector<Record>& records, std::vector<Status>* results) {
    std::lock_guard<std::mutex> g(mu_);
    return commit_locked(records, results);
}

Result<uint64_t> Pool::reserve(uint32_t vol, uint64_t vchunk) {
    std::lock_guard<std::mutex> g(mu_);
    VHOSTD_TRY(usable_locked());
    return md_->reserve(vol, vchunk);
}

void Pool::release(uint64_t pchunk) {
    std::lock_guard<std::mutex> g(mu_);
    md_->release(pchunk);
}

Status Pool::checkpoint() {
    std::lock_guard<std::mutex> g(mu_);
    VHOSTD_TRY(usable_locked());
    return write_checkpoint_locked();
}

VolumeInfo Pool::describe_locked(const Volume& v) const {
    VolumeInfo i;
    i.id = v.id;
    i.snapshot = v.snapshot;
    i.thick = v.thick;
    i.layout = v.layout;
    i.size = v.size;
    i.allocated = v.owned * sb_.chunk_size;
    i.clones = v.children;
    if (v.snapshot) {
        const Volume* o = md_->find(v.origin);
        i.name = fmt::format("{}@{}", o ? o->name : "", v.name);
    } else {
        i.name = v.name;
    }
    if (v.parent != 0) {
        const Volume* p = md_->find(v.parent);
        if (p != nullptr && !p->hidden()) {
            const Volume* o = md_->find(p->origin);
            i.parent = fmt::format("{}@{}", o ? o->name : "", p->name);
        } else {
            i.parent = "(deleted snapshot)";
        }
    }
    return i;
}

Result<VolumeInfo> Pool::one_record_locked(const Record& r, uint32_t report_id) {
    if (guard_) VHOSTD_TRY(guard_(r));
    std::vector<Status> res;
    VHOSTD_TRY(commit_locked({r}, &res));
    if (!res[0].ok()) return res[0].error();
    changed_locked();
    const Volume* v = md_->find(report_id);
    if (v == nullptr) return VolumeInfo{};
    return describe_locked(*v);
}

Result<VolumeInfo> Pool::create_volume(std::string_view name, uint64_t size, bool thick, std::optional<Layout> layout) {
    std::lock_guard<std::mutex> g(mu_);
    VHOSTD_TRY(usable_locked());
    Record r;
    r.type = RecordType::kCreate;
    r.vol = md_->next_id();
    r.size = size;
    r.thick = thick;
    r.layout = layout.value_or(sb_.layout);
    r.name = std::string(name);
    return one_record_locked(r, r.vol);
}

Result<VolumeInfo> Pool::clone(std::string_view snapshot, std::string_view name) {
    std::lock_guard<std::mutex> g(mu_);
    VHOSTD_TRY(usable_locked());
    std::string_view vol, snap;
    split_snapshot_name(snapshot, &vol, &snap);
    const Volume* s = md_->find_snapshot(vol, snap);
    if (snap.empty() || s == nullptr) return make_error(Errc::kInvalid, "no snapshot '{}/{}'", sb_.pool_name, snapshot);
    Record r;
    r.type = RecordType::kCreate;
    r.vol = md_->next_id();
    r.other = s->id;
    r.size = s->size;
    r.layout = s->layout;
    r.name = std::string(name);
    return one_record_locked(r, r.vol);
}

Result<VolumeInfo> Pool::snapshot(std::string_view volume, std::string_view snap) {
    std::lock_guard<std::mutex> g(mu_);
    VHOSTD_TRY(usable_locked());
    const Volume* v = md_->find_volume(volume);
    if (v == nullptr) return make_error(Errc::kInvalid, "no volume '{}/{}'", sb_.pool_name, volume);
    Record r;
    r.type = RecordType::kSnapshot;
    r.vol = v->id;
    r.other = md_->next_id();
    r.name = std::string(snap);
    return one_record_locked(r, r.other);
}

Status Pool::delete_volume(std::string_view name) {
    std::lock_guard<std::mutex> g(mu_);
    VHOSTD_TRY(usable_locked());
    std::string_view vol, snap;
    split_snapshot_name(name, &vol, &snap);
    const Volume* v = snap.empty() && name.find('@') == std::string_view::npos ? md_->find_volume(vol) : md_->find_snapshot(vol, snap);
    if (v == nullptr) return make_error(Errc::kInvalid, "no volume or snapshot '{}/{}'", sb_.pool_name, name);
    Record r;
    r.type = RecordType::kDelete;
    r.vol = v->id;
    if (guard_) VHOSTD_TRY(guard_(r));
    std::vector<Status> res;
    VHOSTD_TRY(commit_locked({r}, &res));
    if (!res[0].ok()) return res[0];
    changed_locked();
    return ok_status();
}

Result<VolumeInfo> Pool::resize_volume(std::string_view name, uint64_t size) {
    std::lock_guard<std::mutex> g(mu_);
    VHOSTD_TRY(usable_locked());
    const Volume* v = md_->find_volume(name);
    if (v == nullptr) return make_error(Errc::kInvalid, "no volume '{}/{}'", sb_.pool_name, name);
    Record r;
    r.type = RecordType::kResize;
    r.vol = v->id;
    r.size = size;
    return one_record_locked(r, r.vol);
}

Result<VolumeInfo> Pool::volume(std::string_view name) {
    std::lock_guard<std::mutex> g(mu_);
    std::string_view vol, snap;
    split_snapshot_name(name, &vol, &snap);
    const Volume* v = name.find('@') == std::string_view::npos ? md_->find_volume(vol) : md_->find_snapshot(vol, snap);
    if (v == nullptr) return make_error(Errc::kInvalid, "no volume or snapshot '{}/{}'", sb_.pool_name, name);
    return describe_locked(*v);
}

std::vector<VolumeInfo> Pool::volumes() {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<VolumeInfo> out;
    for (const auto& [id, v] : md_->volumes()) {
        if (!v->hidden()) out.push_back(describe_locked(*v));
    }
    std::sort(out.begin(), out.end(), [](const VolumeInfo& a, const VolumeInfo& b) { return a.name < b.name; });
    return out;
}

PoolInfo Pool::info() {
    std::lock_guard<std::mutex> g(mu_);
    PoolInfo p;
    p.name = sb_.pool_name;
    p.uuid = uuid_string(sb_.pool_uuid);
    p.layout = sb_.layout;
    p.chunk_size = sb_.chunk_size;
    const Geometry& geo = md_->geometry();
    std::vector<uint64_t> used(disks_.size(), 0);
    for (const auto& [id, v] : md_->volumes()) {
        v->map.for_each([&](uint64_t, uint64_t pc) {
            uint64_t idx;
            ++used[geo.member_of(pc, &idx)];
        });
        if (v->hidden()) {
            ++p.hidden_snapshots;
        } else if (v->snapshot) {
            ++p.snapshots;
        } else {
            ++p.volumes;
        }
    }
    for (size_t i = 0; i < disks_.size(); ++i) {
        p.members.push_back({disks_[i]->path(), uuid_string(sb_.members[i].uuid), sb_.members[i].chunks, used[i]});
    }
    p.chunks = geo.total_chunks;
    p.chunks_used = md_->chunks_owned();
    p.chunks_available = md_->chunks_available();
    p.chunks_reserved = md_->thick_reserve();
    p.virtual_bytes = md_->virtual_chunks() * sb_.chunk_size;
    p.generation = generation_;
    p.journal_used = next_seq_ - replay_seq_;
    p.journal_blocks = sb_.journal_blocks;
    p.failed = failed_;
    p.note = note_;
    return p;
}

CheckReport Pool::check() {
    std::lock_guard<std::mutex> g(mu_);
    CheckReport rep;
    rep.problems = md_->verify();
    rep.volumes = static_cast<uint32_t>(md_->volumes().size());
    rep.chunks_used = md_->chunks_owned();
    if (failed_) rep.problems.push_back(fmt::format("the pool failed: {}", note_));
    for (size_t i = 0; i < disks_.size(); ++i) {
        std::vector<uint8_t> b(kMetaAreaStart);
        Status st = disks_[i]->read(0, b.data(), b.size());
        if (!st.ok()) {
            rep.problems.push_back(fmt::format("member {} ({}): {}", i, disks_[i]->path(), st.error().describe()));
            continue;
        }
        for (int c = 0; c < 2; ++c) {
            auto sb = Superblock::decode(b.data() + c * kBlock, disks_[i]->size());
            if (!sb.ok()) {
                rep.problems.push_back(fmt::format("member {} ({}) superblock copy {}: {}", i, disks_[i]->path(), c ? 'B' : 'A', sb.error().context));
            } else if (!sb->same_pool(sb_) || sb->member_index != i) {
                rep.problems.push_back(fmt::format("member {} ({}) superblock copy {} describes another pool or member", i, disks_[i]->path(), c ? 'B' : 'A'));
            }
        }
    }
    auto l = load(*disks_[0], sb_);
    if (!l.ok()) {
        rep.problems.push_back(fmt::format("the metadata on disk does not load: {}", l.error().context));
    } else {
        rep.journal_blocks_replayed = l->replayed;
        std::string why;
        if (!Metadata::same(*md_, *l->md, &why)) rep.problems.push_back(fmt::format("the metadata on disk differs from memory: {}", why));
        if (!failed_ && (l->next_seq != next_seq_ || l->last_crc != last_crc_)) {
            rep.problems.push_back(fmt::format("the journal on disk ends at block {}, memory at {}", l->next_seq, next_seq_));
        }
    }
    return rep;
}

}  // namespace vhostd::pool
