#include "backends/pool_backend.hpp"

#include <linux/falloc.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "core/log.hpp"
#include "core/mpsc_list.hpp"

namespace vhostd::backends {

class PoolChannel;

struct AllocNode {
    std::atomic<AllocNode*> next{nullptr};
    PoolChannel* ch = nullptr;
    void* slot = nullptr;
    uint32_t vol = 0;
    uint64_t vchunk = 0;
    int result = 0;
};

class PoolChannel final : public BlockChannel, public Completion {
public:
    PoolChannel(Reactor& r, PoolService& svc, VolumeState& vs, uint32_t depth, UniqueFd efd)
        : r_(r), svc_(svc), vs_(vs), slots_(depth), efd_(std::move(efd)), chunk_(svc.chunk_size()) {
        free_.reserve(depth);
        for (auto& s : slots_) {
            s.ch = this;
            s.alloc.ch = this;
            s.alloc.slot = &s;
            free_.push_back(&s);
        }
        stalled_.resize(depth);
        held_.resize(depth);
        svc_.add_channel(&vs_, &active_);
    }
    ~PoolChannel() override { svc_.remove_channel(&active_); }

    bool ready() override {
        if (vs_.gate.load(std::memory_order_acquire) != 0 || free_.empty()) return false;
        if (r_.sq_space_left() > 0) return true;
        io_uring_submit(r_.ring());
        return r_.sq_space_left() > 0;
    }

    Status submit(const BlockRequest& q, Completion* c) override {
        if (is_zone_op(q.op)) return make_error(Errc::kUnsupported, "zone commands need a zoned backend");
        // Counted before the gate is read (seq_cst both sides): a holder that set the gate and
        // then saw no active request cannot miss this one.
        if (free_.empty() || !activate()) return make_error(Errc::kBusy, "volume held");
        Slot* s = free_.back();
        free_.pop_back();
        s->c = c;
        s->req = q;
        s->total = 0;
        if (q.op == BlockOp::kRead || q.op == BlockOp::kWrite) {
            for (unsigned i = 0; i < q.iovcnt; ++i) s->total += q.iov[i].iov_len;
        } else if (q.op != BlockOp::kFlush) {
            s->total = q.len;
        }
        s->pos = 0;
        s->err = 0;
        s->member = 0;
        s->tries = 0;
        s->sliced = false;
        in_submit_ = true;
        step(*s);
        in_submit_ = false;
        return ok_status();
    }

    bool poll() override {
        bool work = false;
        if (!done_.empty()) work |= drain_done();
        if (n_stalled_ > 0) {
            size_t n = n_stalled_;
            n_stalled_ = 0;
            for (size_t i = 0; i < n; ++i) step(*stalled_[i]);
            work = true;
        }
        while (deferred_ != nullptr) {
            Slot* s = deferred_;
            deferred_ = s->next_deferred;
            deliver(*s);
            work = true;
        }
        if (n_held_ > 0 && vs_.gate.load(std::memory_order_acquire) == 0) {
            size_t n = n_held_;
            n_held_ = 0;
            for (size_t i = 0; i < n; ++i) resume(*held_[i]);
            work = true;
        }
        if (alloc_out_ > 0 && !armed_) arm();
        if (alloc_out_ == 0) disarm();
        return work;
    }
    bool idle() const override {
        return alloc_out_ == 0 && !armed_ && deferred_ == nullptr && n_stalled_ == 0 && n_held_ == 0;
    }
    bool must_poll() const override {
        return vs_.gate.load(std::memory_order_relaxed) != 0 || !done_.empty() || deferred_ != nullptr || n_stalled_ > 0 || n_held_ > 0 ||
               (alloc_out_ > 0 && !armed_) || (alloc_out_ == 0 && armed_ && !cancel_sent_);
    }

    // The committer's thread.
    void alloc_done(AllocNode* n) {
        if (done_.push(n)) {
            uint64_t one = 1;
            [[maybe_unused]] ssize_t w = ::write(efd_.get(), &one, sizeof(one));
        }
    }

private:
    struct Slot final : public Completion, public CmdCompletion {
        PoolChannel* ch = nullptr;
        Completion* c = nullptr;
        BlockRequest req;
        uint64_t total = 0;
        uint64_t pos = 0;       // bytes done (flush: members done)
        uint64_t cur = 0;       // the piece in flight
        int32_t err = 0;
        uint32_t member = 0;
        uint32_t tries = 0;     // allocations for the current piece
        // The request's iovecs are cut in place for a piece and restored when it completes.
        bool sliced = false;
        size_t first = 0, last = 0;
        iovec saved_first{}, saved_last{};
        AllocNode alloc;
        nvme::DsmRange range{};  // a deallocate's range (NVMe members), until it completes
        Slot* next_deferred = nullptr;
        void complete(int32_t res) override { ch->piece_done(*this, res); }
        void complete_cmd(int32_t res, uint64_t) override { ch->cmd_done(*this, res); }
    };

    // The eventfd read: an allocation answer was pushed (or the read was cancelled).
    void complete(int32_t) override {
        armed_ = false;
        cancel_sent_ = false;
        drain_done();
        if (alloc_out_ > 0) arm();
    }

    bool drain_done() {
        AllocNode* n = done_.take_all();
        bool any = false;
        while (n != nullptr) {
            AllocNode* next = n->next.load(std::memory_order_relaxed);
            Slot& s = *static_cast<Slot*>(n->slot);
            --alloc_out_;
            any = true;
            if (n->result < 0) s.err = n->result;
            resume(s);  // the volume owns the chunk now: write into it (or fail)
            n = next;
        }
        if (alloc_out_ == 0) disarm();
        return any;
    }

    void arm() {
        if (armed_) return;
        io_uring_sqe* sqe = r_.get_sqe();
        if (sqe == nullptr) return;  // poll() tries again (must_poll keeps the queue hot)
        io_uring_prep_read(sqe, efd_.get(), &efd_buf_, sizeof(efd_buf_), 0);
        io_uring_sqe_set_data(sqe, static_cast<Completion*>(this));
        armed_ = true;
    }
    void disarm() {
        if (!armed_ || cancel_sent_) return;
        if (io_uring_sqe* sqe = r_.get_sqe()) {
            io_uring_prep_cancel(sqe, static_cast<Completion*>(this), 0);
            io_uring_sqe_set_data(sqe, nullptr);
            cancel_sent_ = true;
        }
    }

    // [pos, pos + len) of the request's data as an iovec run, cut in place.
    void slice(Slot& s, uint64_t pos, uint64_t len, const iovec** iov, unsigned* cnt) {
        auto* v = const_cast<iovec*>(s.req.iov);  // the device's slot array; restored in unslice()
        size_t i = 0;
        uint64_t skip = pos;
        while (i < s.req.iovcnt && skip >= v[i].iov_len) skip -= v[i++].iov_len;
        size_t j = i;
        uint64_t need = len + skip;
        while (j < s.req.iovcnt && need > v[j].iov_len) need -= v[j++].iov_len;
        s.first = i;
        s.last = j;
        s.saved_first = v[i];
        s.saved_last = v[j];
        v[j].iov_len = need;  // the last one ends where the piece does
        v[i].iov_base = static_cast<uint8_t*>(v[i].iov_base) + skip;
        v[i].iov_len -= skip;
        s.sliced = true;
        *iov = &v[i];
        *cnt = static_cast<unsigned>(j - i + 1);
    }
    void unslice(Slot& s) {
        if (!s.sliced) return;
        auto* v = const_cast<iovec*>(s.req.iov);
        v[s.last] = s.saved_last;
        v[s.first] = s.saved_first;
        s.sliced = false;
    }
    void zero_fill(Slot& s, uint64_t pos, uint64_t len) {
        for (unsigned i = 0; i < s.req.iovcnt && len > 0; ++i) {
            uint64_t l = s.req.iov[i].iov_len;
            if (pos >= l) {
                pos -= l;
                continue;
            }
            uint64_t n = std::min(l - pos, len);
            std::memset(static_cast<uint8_t*>(s.req.iov[i].iov_base) + pos, 0, n);
            len -= n;
            pos = 0;
        }
    }

    const PoolService::Member& place(uint64_t pchunk, uint64_t* off) const {
        const auto& ms = svc_.members();
        size_t m = ms.size() - 1;
        while (m > 0 && pchunk < ms[m].base) --m;
        *off = ms[m].data_offset + (pchunk - ms[m].base) * chunk_;
        return ms[m];
    }

    // Issues the request's next piece, or finishes it.
    void step(Slot& s) {
        for (;;) {
            if (s.err != 0) return finish(s);
            const BlockOp op = s.req.op;
            if (op == BlockOp::kFlush) {
                const auto& ms = svc_.members();
                if (s.member >= ms.size()) return finish(s);
                const auto& m = ms[s.member];
                if (m.ns != nullptr) {
                    io_uring_sqe* sqe = r_.cmd_sqe();
                    if (sqe == nullptr) return stall(s);
                    nvme::prep(sqe, m.fd, m.ns->nsid, nvme::kOpFlush);
                    io_uring_sqe_set_data(sqe, static_cast<CmdCompletion*>(&s));
                    ++s.member;
                    return;
                }
                io_uring_sqe* sqe = r_.get_sqe();
                if (sqe == nullptr) return stall(s);
                io_uring_prep_fsync(sqe, ms[s.member++].fd, IORING_FSYNC_DATASYNC);
                io_uring_sqe_set_data(sqe, static_cast<Completion*>(&s));
                return;
            }
            if (s.pos >= s.total) return finish(s);
            const uint64_t off = s.req.offset + s.pos;
            const uint64_t vc = off / chunk_, in = off % chunk_;
            const uint64_t len = std::min(s.total - s.pos, chunk_ - in);
            const pool::Chain* chain = vs_.chain.load(std::memory_order_acquire);
            uint64_t p = 0;
            uint32_t owner = 0;
            const bool found = chain->resolve(vc, &p, &owner);
            const bool own = found && owner == 0;
            if (op == BlockOp::kRead && !found) {
                zero_fill(s, s.pos, len);  // nobody wrote it: zeroes
                s.pos += len;
                continue;
            }
            if ((op == BlockOp::kDiscard || op == BlockOp::kWriteZeroes || op == BlockOp::kWriteZeroesUnmap) && !own) {
                if (op == BlockOp::kDiscard || !found) {
                    s.pos += len;  // nothing of its own to drop; unowned and unshared reads as zeroes
                    continue;
                }
            }
            if (op != BlockOp::kRead && !own) {
                // A first write (or zeroes over an ancestor's data): the volume needs its own chunk.
                if (++s.tries > 3) {
                    s.err = -EIO;
                    return finish(s);
                }
                s.alloc.vol = vs_.vol;
                s.alloc.vchunk = vc;
                s.alloc.result = 0;
                ++alloc_out_;
                // Waiting for the committer it holds nothing: not active (a holder must not wait
                // for it, the committer may be waiting for the holder's pool lock).
                active_.fetch_sub(1, std::memory_order_seq_cst);
                svc_.request_alloc(&s.alloc);
                arm();
                return;
            }
            uint64_t base = 0;
            const auto& m = place(p, &base);
            if (m.ns != nullptr) {
                if (!nvme_piece(s, m, base + in, len)) continue;  // done without a command (or failed)
                return;
            }
            io_uring_sqe* sqe = r_.get_sqe();
            if (sqe == nullptr) return stall(s);
            s.cur = len;
            s.tries = 0;
            switch (op) {
            case BlockOp::kRead:
            case BlockOp::kWrite: {
                const iovec* iov;
                unsigned cnt;
                slice(s, s.pos, len, &iov, &cnt);
                if (op == BlockOp::kRead) {
                    io_uring_prep_readv(sqe, m.fd, iov, cnt, base + in);
                } else {
                    io_uring_prep_writev(sqe, m.fd, iov, cnt, base + in);
                    if (s.req.fua) sqe->rw_flags = RWF_DSYNC;
                }
                break;
            }
            case BlockOp::kDiscard:
                io_uring_prep_fallocate(sqe, m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, base + in, len);
                break;
            case BlockOp::kWriteZeroes:
                io_uring_prep_fallocate(sqe, m.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, base + in, len);
                break;
            case BlockOp::kWriteZeroesUnmap:
                io_uring_prep_fallocate(sqe, m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, base + in, len);
                break;
            case BlockOp::kFlush:
                break;
            VHOSTD_CASE_ZONE_OPS:
                break;  // refused in submit()
            }
            io_uring_sqe_set_data(sqe, static_cast<Completion*>(&s));
            return;
        }
    }

    // A piece on an NVMe member: one command on the reactor's command ring (false: none was
    // needed, or the piece failed; the caller goes on). A read or write carries what one command
    // may (the rest follows as the next piece); every piece is whole LBAs.
    bool nvme_piece(Slot& s, const PoolService::Member& m, uint64_t at, uint64_t len) {
        const nvme::NvmeNamespace& ns = *m.ns;
        const uint64_t lba = ns.lba_size;
        const BlockOp op = s.req.op;
        if (op == BlockOp::kDiscard && !ns.deallocate) {
            s.pos += len;  // advisory: the member cannot drop it
            return false;
        }
        if (at % lba != 0) {
            VLOG_LIMITED(log_limit_, log_at(vs_.name), warn, "pool volume {}: a request at byte {} is not in whole {} B LBAs of {}",
                         vs_.name, s.req.offset + s.pos, lba, ns.block_name);
            s.err = -EINVAL;
            return false;
        }
        const uint64_t slba = at / lba;
        if (op == BlockOp::kRead || op == BlockOp::kWrite) {
            const iovec* iov;
            unsigned cnt;
            slice(s, s.pos, len, &iov, &cnt);
            const uint64_t fit = nvme::fit_bytes(iov, cnt, ns.max_bytes, ns.max_segments, lba);
            if (fit != len) {
                unslice(s);
                if (fit == 0) {
                    VLOG_LIMITED(log_limit_, log_at(vs_.name), warn,
                                 "pool volume {}: a request at byte {} has no whole {} B LBA in {} memory pages", vs_.name,
                                 s.req.offset + s.pos, lba, ns.max_segments);
                    s.err = -EINVAL;
                    return false;
                }
                len = fit;
                slice(s, s.pos, len, &iov, &cnt);
            }
            io_uring_sqe* sqe = r_.cmd_sqe();
            if (sqe == nullptr) {
                unslice(s);
                stall(s);
                return true;
            }
            nvme::prep_rw(sqe, m.fd, ns.nsid, op == BlockOp::kWrite, slba, static_cast<uint32_t>(len / lba), s.req.fua, iov, cnt,
                          static_cast<uint32_t>(len));
            s.cur = len;
            s.tries = 0;
            io_uring_sqe_set_data(sqe, static_cast<CmdCompletion*>(&s));
            return true;
        }
        if (len % lba != 0) {
            s.err = -EINVAL;
            return false;
        }
        io_uring_sqe* sqe = r_.cmd_sqe();
        if (sqe == nullptr) {
            stall(s);
            return true;
        }
        if (op == BlockOp::kDiscard) {
            s.range = nvme::DsmRange{0, static_cast<uint32_t>(len / lba), slba};  // len <= a chunk: 32 bits of LBAs
            nvme::prep_deallocate(sqe, m.fd, ns.nsid, &s.range);
        } else {
            len = std::min(len, ns.write_zeroes_max_lbas * lba);  // the rest: the next piece
            nvme::prep_write_zeroes(sqe, m.fd, ns.nsid, slba, static_cast<uint32_t>(len / lba), op == BlockOp::kWriteZeroesUnmap);
        }
        s.cur = len;
        s.tries = 0;
        io_uring_sqe_set_data(sqe, static_cast<CmdCompletion*>(&s));
        return true;
    }

    // An NVMe command's completion: 0, a negative errno, or the NVMe status.
    void cmd_done(Slot& s, int32_t res) {
        if (res > 0) {
            VLOG_LIMITED(log_limit_, log_at(vs_.name), warn, "pool volume {}: an NVMe command of request {} at byte {} failed with status {:#x}",
                         vs_.name, static_cast<int>(s.req.op), s.req.offset + s.pos, res);
            res = nvme::status_errno(res);
        } else if (res == 0 && (s.req.op == BlockOp::kRead || s.req.op == BlockOp::kWrite)) {
            res = static_cast<int32_t>(s.cur);
        }
        piece_done(s, res);
    }

    void piece_done(Slot& s, int32_t res) {
        unslice(s);
        if (res < 0) {
            s.err = res;
            return finish(s);
        }
        const BlockOp op = s.req.op;
        if (op == BlockOp::kFlush) return step(s);
        if (op == BlockOp::kRead || op == BlockOp::kWrite) {
            if (res == 0) {
                s.err = -EIO;  // past a member's end: the superblock said otherwise
                return finish(s);
            }
            s.pos += static_cast<uint64_t>(res);  // a short transfer continues from there
        } else {
            s.pos += s.cur;
        }
        step(s);
    }

    void stall(Slot& s) { stalled_[n_stalled_++] = &s; }

    // Counts a request active unless its volume is held.
    bool activate() {
        active_.fetch_add(1, std::memory_order_seq_cst);
        if (vs_.gate.load(std::memory_order_seq_cst) != 0) {
            active_.fetch_sub(1, std::memory_order_seq_cst);
            return false;
        }
        return true;
    }
    // A request back from the committer (or a gate): active again, or held until the gate opens.
    void resume(Slot& s) {
        if (s.err == 0 && !activate()) {
            held_[n_held_++] = &s;
            return;
        }
        if (s.err != 0) active_.fetch_add(1, std::memory_order_seq_cst);  // deliver() counts it out
        step(s);
    }

    void finish(Slot& s) {
        unslice(s);
        if (in_submit_) {
            // Never complete from inside submit(): poll() delivers it.
            s.next_deferred = deferred_;
            deferred_ = &s;
            return;
        }
        deliver(s);
    }
    void deliver(Slot& s) {
        int32_t res = s.err;
        if (res == 0) res = (s.req.op == BlockOp::kRead || s.req.op == BlockOp::kWrite) ? static_cast<int32_t>(s.total) : 0;
        Completion* c = s.c;
        free_.push_back(&s);
        active_.fetch_sub(1, std::memory_order_seq_cst);
        c->complete(res);
    }

    Reactor& r_;
    PoolService& svc_;
    VolumeState& vs_;
    std::vector<Slot> slots_;
    std::vector<Slot*> free_;
    std::vector<Slot*> stalled_;
    size_t n_stalled_ = 0;
    std::vector<Slot*> held_;
    size_t n_held_ = 0;
    Slot* deferred_ = nullptr;
    bool in_submit_ = false;
    UniqueFd efd_;
    uint64_t efd_buf_ = 0;
    MpscList<AllocNode> done_;
    uint32_t alloc_out_ = 0;
    bool armed_ = false;
    bool cancel_sent_ = false;
    const uint64_t chunk_;
    std::atomic<uint32_t> active_{0};
    LogRateLimit log_limit_;
};

// ---- the service ----

Result<std::shared_ptr<PoolService>> PoolService::start(std::unique_ptr<pool::Pool> p) {
    auto svc = std::shared_ptr<PoolService>(new PoolService);
    const pool::Superblock& sb = p->superblock();
    svc->chunk_ = sb.chunk_size;
    uint64_t base = 0;
    for (size_t i = 0; i < sb.members.size(); ++i) {
        int fd = p->disk(i).fd();
        if (fd < 0) return make_error(Errc::kInvalid, "pool '{}': member {} has no file descriptor", sb.pool_name, i);
        const nvme::NvmeNamespace* ns = p->disk(i).nvme();
        // Chunks in whole LBAs (always so: data offsets are 4 KiB multiples, chunks >= 64 KiB).
        if (ns != nullptr && (sb.members[i].data_offset % ns->lba_size != 0 || svc->chunk_ % ns->lba_size != 0))
            return make_error(Errc::kInvalid, "pool '{}': member {}'s chunks are not whole {} B LBAs", sb.pool_name, i, ns->lba_size);
        svc->members_.push_back({fd, ns, sb.members[i].data_offset, sb.members[i].chunks, base});
        base += sb.members[i].chunks;
    }
    svc->pool_ = std::move(p);
    PoolService* raw = svc.get();
    svc->pool_->set_live([raw] { return raw->after_change(); }, [raw](const pool::Record& r) { return raw->guard(r); });
    svc->thread_ = std::thread([raw] { raw->committer(); });
    return svc;
}

PoolService::~PoolService() { close(); }

void PoolService::close() {
    if (closed_) return;
    closed_ = true;
    stop_.store(true);
    inbox_seq_.fetch_add(1);
    inbox_seq_.notify_all();
    if (thread_.joinable()) thread_.join();
    pool_->set_live(nullptr);
    if (Status st = pool_->checkpoint(); !st.ok()) {
        VLOG_WARN("pool '{}': checkpoint at close: {}", pool_->name(), st.error().describe());
    }
}

void PoolService::request_alloc(AllocNode* n) {
    inbox_.push(n);
    inbox_seq_.fetch_add(1, std::memory_order_release);
    inbox_seq_.notify_one();
}

void PoolService::committer() {
    pthread_setname_np(pthread_self(), "vhostd-pool");
    std::vector<AllocNode*> nodes;
    std::vector<pool::Pool::Allocation> wants;
    while (!stop_.load()) {
        uint32_t seen = inbox_seq_.load(std::memory_order_acquire);
        AllocNode* n = inbox_.take_all();
        if (n == nullptr) {
            inbox_seq_.wait(seen, std::memory_order_acquire);
            continue;
        }
        nodes.clear();
        wants.clear();
        for (; n != nullptr; n = n->next.load(std::memory_order_relaxed)) nodes.push_back(n);
        for (AllocNode* a : nodes) wants.push_back({a->vol, a->vchunk, 0});
        // One flush and one journal commit per batch of up to kBatch (a batch must fit the
        // journal: a pool made with a small one takes a few hundred records at a time).
        constexpr size_t kBatch = 128;
        for (size_t at = 0; at < wants.size(); at += kBatch) {
            std::vector<pool::Pool::Allocation> part(wants.begin() + static_cast<long>(at),
                                                     wants.begin() + static_cast<long>(std::min(wants.size(), at + kBatch)));
            pool_->allocate(part);
            std::copy(part.begin(), part.end(), wants.begin() + static_cast<long>(at));
        }
        for (size_t i = 0; i < nodes.size(); ++i) {
            nodes[i]->result = wants[i].result;
            if (wants[i].result < 0) {
                VLOG_LIMITED(pool_log_, log_at(name()), warn, "pool '{}': volume {} chunk {}: allocation failed: {}",
                             name(), wants[i].vol, wants[i].vchunk, std::strerror(-wants[i].result));
            }
            nodes[i]->ch->alloc_done(nodes[i]);
        }
    }
}

void PoolService::add_channel(VolumeState* vs, std::atomic<uint32_t>* inflight) {
    std::lock_guard g(mu_);
    channels_.emplace_back(vs, inflight);
}

void PoolService::remove_channel(std::atomic<uint32_t>* inflight) {
    std::lock_guard g(mu_);
    channels_.erase(std::remove_if(channels_.begin(), channels_.end(), [&](auto& c) { return c.second == inflight; }),
                    channels_.end());
}

bool PoolService::after_change() {
    std::vector<std::unique_ptr<pool::Chain>> old;
    {
        std::lock_guard g(mu_);
        for (auto& vs : volumes_) {
            auto c = std::make_unique<pool::Chain>();
            if (!pool_->build_chain_locked(vs->vol, *c).ok()) continue;  // deleted: the guard refuses that
            const pool::Chain& cur = *vs->owned;
            bool same = cur.n == c->n;
            for (uint32_t i = 0; same && i < c->n; ++i) {
                same = cur.link[i].map == c->link[i].map && cur.link[i].limit == c->link[i].limit;
            }
            if (same) continue;
            vs->chain.store(c.get(), std::memory_order_release);
            old.push_back(std::move(vs->owned));
            vs->owned = std::move(c);
        }
    }
    if (old.empty() && !pool_->reclaim_pending_locked()) return true;
    // Until no request that may have read an old chain (or has I/O on a chunk just freed) is
    // active, nothing is released: hold every attached volume and wait for its requests.
    Status st = hold(nullptr, std::chrono::seconds(30));
    release(nullptr);
    if (!st.ok()) {
        VLOG_WARN("pool '{}': {}; freed chunks stay reserved until the next change", name(), st.error().describe());
        // The old chains must outlive any reader: keep them with the volume state until then.
        std::lock_guard g(mu_);
        for (auto& c : old) leaked_.push_back(std::move(c));
        return false;
    }
    std::lock_guard g(mu_);
    leaked_.clear();
    return true;
}

Status PoolService::guard(const pool::Record& r) {
    using pool::RecordType;
    if (r.type != RecordType::kDelete && r.type != RecordType::kResize && r.type != RecordType::kSnapshot) return ok_status();
    std::lock_guard g(mu_);
    for (auto& vs : volumes_) {
        if (vs->vol != r.vol) continue;
        if (r.type == RecordType::kDelete) {
            return make_error(Errc::kState, "volume '{}' is attached to a device: remove the device first", vs->name);
        }
        if (r.type == RecordType::kResize && resizing_ != r.vol) {
            return make_error(Errc::kState, "volume '{}' is attached: resize it through its device (device_resize)", vs->name);
        }
        if (r.type == RecordType::kSnapshot && snapshotting_ != r.vol) {
            return make_error(Errc::kState, "volume '{}' is attached: its snapshot must hold its I/O", vs->name);
        }
    }
    return ok_status();
}

Status PoolService::hold(VolumeState* only, std::chrono::milliseconds wait) {
    std::vector<std::atomic<uint32_t>*> counts;
    {
        std::lock_guard g(mu_);
        for (auto& vs : volumes_) {
            if (only == nullptr || vs.get() == only) vs->gate.fetch_add(1, std::memory_order_seq_cst);
        }
        for (auto& [v, active] : channels_) {
            if (only == nullptr || v == only) counts.push_back(active);
        }
    }
    // Channels are only removed with their device, after its requests completed; a device
    // removal waits for the registry, not for this.
    auto until = std::chrono::steady_clock::now() + wait;
    for (;;) {
        uint32_t n = 0;
        {
            std::lock_guard g(mu_);
            for (auto& [v, active] : channels_) {
                if (only == nullptr || v == only) n += active->load(std::memory_order_seq_cst);
            }
        }
        if (n == 0) return ok_status();
        if (std::chrono::steady_clock::now() > until) {
            return make_error(Errc::kBusy, "{} requests still active after {} ms", n, wait.count());
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
}

void PoolService::release(VolumeState* only) {
    std::lock_guard g(mu_);
    for (auto& vs : volumes_) {
        if (only == nullptr || vs.get() == only) vs->gate.fetch_sub(1, std::memory_order_seq_cst);
    }
}

Result<uint64_t> PoolService::resize_attached(VolumeState* vs, uint64_t new_size) {
    std::string vol = vs->name.substr(vs->name.find('/') + 1);
    {
        auto lk = pool_->lock();
        resizing_ = vs->vol;
    }
    auto r = pool_->resize_volume(vol, new_size);
    {
        auto lk = pool_->lock();
        resizing_ = 0;
    }
    if (!r.ok()) return std::move(r).take_error();
    vs->size.store(r->size);
    return r->size;
}

Result<std::shared_ptr<VolumeBackend>> PoolService::attach(const std::string& volume, bool readonly) {
    auto lk = pool_->lock();
    const pool::Volume* v = pool_->metadata_locked().find_volume(volume);
    if (v == nullptr) return make_error(Errc::kInvalid, "no volume '{}/{}'", name(), volume);
    std::lock_guard g(mu_);
    for (auto& vs : volumes_) {
        if (vs->vol == v->id) return make_error(Errc::kState, "volume '{}/{}' is attached to another device", name(), volume);
    }
    auto c = std::make_unique<pool::Chain>();
    VHOSTD_TRY(pool_->build_chain_locked(v->id, *c));
    auto vs = std::make_unique<VolumeState>();
    vs->vol = v->id;
    vs->name = name() + "/" + volume;
    vs->size.store(v->size);
    vs->chain.store(c.get());
    vs->owned = std::move(c);
    VolumeState* raw = vs.get();
    volumes_.push_back(std::move(vs));
    return std::make_shared<VolumeBackend>(shared_from_this(), raw, readonly);
}

bool PoolService::attached(const std::string& volume) const {
    std::lock_guard g(mu_);
    std::string full = name() + "/" + volume;
    for (auto& vs : volumes_) {
        if (vs->name == full) return true;
    }
    return false;
}

void PoolService::detach(VolumeState* vs) {
    auto lk = pool_->lock();  // no chain rebuild in between
    std::lock_guard g(mu_);
    volumes_.erase(std::remove_if(volumes_.begin(), volumes_.end(), [&](auto& v) { return v.get() == vs; }), volumes_.end());
}


Result<pool::VolumeInfo> PoolService::snapshot(const std::string& volume, const std::string& snap) {
    VolumeState* vs = nullptr;
    {
        std::lock_guard g(mu_);
        for (auto& v : volumes_) {
            if (v->name == name() + "/" + volume) vs = v.get();
        }
    }
    if (vs == nullptr) return pool_->snapshot(volume, snap);
    // The snapshot takes the volume's chunks: no write may be on its way into one of them.
    Status st = hold(vs, std::chrono::seconds(30));
    if (!st.ok()) {
        release(vs);
        return make_error(Errc::kBusy, "volume '{}': {}", vs->name, st.error().context);
    }
    {
        auto lk = pool_->lock();
        snapshotting_ = vs->vol;
    }
    auto out = pool_->snapshot(volume, snap);
    {
        auto lk = pool_->lock();
        snapshotting_ = 0;
    }
    release(vs);
    return out;
}

Status PoolService::delete_volume(const std::string& n) { return pool_->delete_volume(n); }

// ---- one volume ----

VolumeBackend::VolumeBackend(std::shared_ptr<PoolService> svc, VolumeState* vs, bool readonly)
    : svc_(std::move(svc)), vs_(vs) {
    info_.size_bytes = vs->size.load();
    info_.block_size = 512;
    info_.physical_block = 4096;
    bool zeroes = true;
    for (const auto& m : svc_->members()) {
        if (m.ns == nullptr) continue;
        // NVMe members take whole LBAs: the volume's logical block is the largest of theirs.
        info_.block_size = std::max(info_.block_size, m.ns->lba_size);
        info_.physical_block = std::max(info_.physical_block, m.ns->physical_block);
        zeroes = zeroes && m.ns->write_zeroes;
    }
    info_.readonly = readonly;
    info_.discard = !readonly;
    info_.write_zeroes = !readonly && zeroes;
    info_.description = fmt::format("volume {}{}", vs->name, readonly ? " read-only" : "");
}

VolumeBackend::~VolumeBackend() { svc_->detach(vs_); }

Result<std::unique_ptr<BlockChannel>> VolumeBackend::open_channel(Reactor& reactor, uint32_t depth) {
    for (const auto& m : svc_->members()) {
        if (m.ns != nullptr) {
            VHOSTD_TRY(reactor.cmd_ring_status());  // NVMe members' commands go through it
            break;
        }
    }
    UniqueFd efd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd.valid()) return sys_error("eventfd");
    return std::unique_ptr<BlockChannel>(std::make_unique<PoolChannel>(reactor, *svc_, *vs_, depth, std::move(efd)));
}

Result<uint64_t> VolumeBackend::resize(uint64_t new_size) {
    if (new_size == 0) return info_.size_bytes;
    VHOSTD_ASSIGN_OR_RETURN(uint64_t size, svc_->resize_attached(vs_, new_size));
    info_.size_bytes = size;
    return size;
}

}  // namespace vhostd::backends
