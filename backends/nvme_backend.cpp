#include "backends/nvme_backend.hpp"

#include <fcntl.h>
#include <linux/nvme_ioctl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <vector>

#include "core/checked.hpp"
#include "core/log.hpp"

namespace vhostd::backends {

namespace {

using namespace nvme;  // opcodes, command preparation

// Zone Management Send / Receive fields (NVMe ZNS spec 1.1).
constexpr uint32_t kZsaClose = 1, kZsaFinish = 2, kZsaOpen = 3, kZsaReset = 4;  // Send CDW13
constexpr uint32_t kZsaSelectAll = 1u << 8;
constexpr uint32_t kZraPartialReport = 1u << 16;  // Receive CDW13: nr_zones counts what came back
constexpr uint32_t kZoneDescBytes = 64;

// nvme::status_errno's zone errnos are the backends' zone errors (virtio-blk's zone statuses).
static_assert(kErrZoneInvalid == -EBADE && kErrZoneUnalignedWrite == -EILSEQ && kErrZoneOpenResource == -ETOOMANYREFS &&
              kErrZoneActiveResource == -EOVERFLOW);

class NvmeChannel;

struct NvmeCmd final : CmdCompletion {
    NvmeChannel* ch = nullptr;
    Completion* c = nullptr;
    BlockOp op = BlockOp::kRead;
    bool fua = false;
    uint64_t slba = 0;
    uint64_t left = 0;     // discard / write zeroes: LBAs still to do from slba
    uint32_t nlb = 0;      // this command's LBAs
    uint32_t bytes = 0;    // read / write / append / report: this command's bytes
    uint64_t* append_at = nullptr;
    const iovec* iov = nullptr;
    unsigned iovcnt = 0;   // iovecs this command uses
    iovec* trimmed = nullptr;  // the last of them, cut short until the command completes
    size_t saved_len = 0;
    DsmRange range{};
    bool fixed = false;    // sent with a registered buffer
    NvmeCmd* next_deferred = nullptr;
    void complete_cmd(int32_t res, uint64_t result) override;
};

class NvmeChannel final : public BlockChannel {
public:
    NvmeChannel(Reactor& r, int fd, const NvmeNamespace& ns, uint32_t depth, bool fixed)
        : r_(r), fd_(fd), ns_(ns), shift_(static_cast<unsigned>(__builtin_ctz(ns.lba_size))), cmds_(depth), want_fixed_(fixed) {
        free_.reserve(depth);
        for (auto& k : cmds_) {
            k.ch = this;
            free_.push_back(&k);
        }
    }
    // The device drains first: idle() before it lets go.
    ~NvmeChannel() override {
        if (slot_n_ > 0) {
            VLOG_INFO("nvme {}: {} of {} data commands used registered buffers", ns_.block_name, fixed_cmds_, data_cmds_);
            r_.cmd_buffers_free(slot_first_, slot_n_);
        }
    }

    // Guest memory into the reactor's buffer table (fixed=on), each region in pieces of at most
    // max_segments pages, one slot each. Why so small: a command on a registered buffer is
    // mapped (blk_rq_map_user_bvec) with every page from its start to the end of the buffer
    // counted as a segment, and refused (EINVAL) past max_segments - measured on Linux 6.1 with
    // 64 MiB buffers, where every such command failed and with these pieces none did. A command
    // that crosses two pieces maps its pages as without fixed buffers.
    void set_memory(const shm::MemoryMap& mem) override {
        if (!want_fixed_) return;
        const auto t0 = std::chrono::steady_clock::now();
        const uint64_t piece = uint64_t{ns_.max_segments} * 4096;
        fixed_.clear();
        std::vector<iovec> iov;
        for (const auto& reg : mem.regions()) {
            for (uint64_t off = 0; off < reg->size(); off += piece)
                iov.push_back({reg->host() + off, static_cast<size_t>(std::min(piece, reg->size() - off))});
        }
        if (iov.size() > slot_n_) {
            if (slot_n_ > 0) r_.cmd_buffers_free(slot_first_, slot_n_);
            slot_n_ = 0;
            auto first = r_.cmd_buffers_alloc(static_cast<unsigned>(iov.size()));
            if (!first.ok()) {
                VLOG_LIMITED(log_limit_, log_at(ns_.block_name), warn, "nvme {}: guest memory not registered: {}", ns_.block_name,
                             first.error().describe());
                return;
            }
            slot_first_ = first.value();
            slot_n_ = static_cast<unsigned>(iov.size());
        }
        const size_t used = iov.size();
        iov.resize(slot_n_, iovec{nullptr, 0});  // slots a larger table used before: emptied
        uint64_t bytes = 0;
        if (Status st = r_.cmd_buffers_set(slot_first_, iov.data(), slot_n_); !st.ok()) {
            VLOG_LIMITED(log_limit_, log_at(ns_.block_name), warn,
                         "nvme {}: guest memory not registered ({}; RLIMIT_MEMLOCK?): commands map their buffers", ns_.block_name,
                         st.error().describe());
            return;
        }
        for (size_t i = 0; i < used; ++i) {
            fixed_.push_back({reinterpret_cast<uint64_t>(iov[i].iov_base), iov[i].iov_len, static_cast<uint16_t>(slot_first_ + i)});
            bytes += iov[i].iov_len;
        }
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
        VLOG_INFO("nvme {}: guest memory registered as {} fixed buffers ({} MiB, {} ms)", ns_.block_name, used, bytes >> 20, ms);
    }

    bool ready() override { return !free_.empty(); }

    Status submit(const BlockRequest& q, Completion* c) override {
        if (free_.empty()) return make_error(Errc::kBusy, "all command slots in use");
        NvmeCmd& k = *free_.back();
        k.c = c;
        k.op = q.op;
        k.fua = q.fua;
        k.trimmed = nullptr;
        k.left = 0;
        k.append_at = q.append_at;
        const uint64_t lba_mask = ns_.lba_size - 1;
        // A report starts at the zone holding any sector; everything else names whole LBAs.
        if ((q.offset & lba_mask) != 0 && q.op != BlockOp::kZoneReport)
            return make_error(Errc::kInvalid, "offset {} is not a multiple of the {} B LBA", q.offset, ns_.lba_size);
        k.slba = q.offset >> shift_;
        switch (q.op) {
            case BlockOp::kRead:
            case BlockOp::kWrite:
                VHOSTD_TRY(cut(k, q, ns_.lba_size, true));
                break;
            case BlockOp::kFlush:
                break;
            case BlockOp::kZoneAppend:
                // All of it in one command: an append cannot be continued (the next piece could
                // land anywhere). max_append_bytes leaves room for any page layout.
                if (ns_.zone_lbas == 0 || q.append_at == nullptr || k.slba % ns_.zone_lbas != 0)
                    return make_error(Errc::kInvalid, "zone append to LBA {}, not a zone's start", k.slba);
                VHOSTD_TRY(cut(k, q, ns_.lba_size, true));
                if (k.bytes != q.len) {
                    untrim(k);
                    return make_error(Errc::kInvalid, "zone append of {} bytes does not fit one command", q.len);
                }
                break;
            case BlockOp::kZoneReport:
                if (ns_.zone_lbas == 0 || k.slba >= ns_.lbas) return make_error(Errc::kInvalid, "zone report at LBA {}", k.slba);
                VHOSTD_TRY(cut(k, q, kZoneDescBytes, false));
                if (k.bytes < 2 * kZoneDescBytes) {
                    untrim(k);
                    return make_error(Errc::kInvalid, "zone report buffer holds no zone in one command");
                }
                break;
            case BlockOp::kZoneOpen:
            case BlockOp::kZoneClose:
            case BlockOp::kZoneFinish:
            case BlockOp::kZoneReset:
            case BlockOp::kZoneResetAll:
                if (ns_.zone_lbas == 0) return make_error(Errc::kUnsupported, "the namespace is not zoned");
                if (q.op != BlockOp::kZoneResetAll && (k.slba % ns_.zone_lbas != 0 || k.slba >= ns_.lbas))
                    return make_error(Errc::kInvalid, "LBA {} is not a zone's start", k.slba);
                break;
            case BlockOp::kDiscard:
            case BlockOp::kWriteZeroes:
            case BlockOp::kWriteZeroesUnmap: {
                if (q.op == BlockOp::kDiscard ? !ns_.deallocate : !ns_.write_zeroes)
                    return make_error(Errc::kUnsupported, "the namespace does not support this command");
                if (q.len == 0 || (q.len & lba_mask) != 0)
                    return make_error(Errc::kInvalid, "length {} is not a positive multiple of the {} B LBA", q.len, ns_.lba_size);
                k.left = q.len >> shift_;
                if (!range_within(k.slba, k.left, 0, ns_.lbas))
                    return make_error(Errc::kInvalid, "LBAs {}+{} lie past the namespace's {}", k.slba, k.left, ns_.lbas);
                break;
            }
        }
        io_uring_sqe* sqe = r_.cmd_sqe();
        if (sqe == nullptr) {
            untrim(k);
            return make_error(Errc::kBusy, "command ring full");
        }
        free_.pop_back();
        prep(k, sqe);
        return ok_status();
    }

    bool poll() override {
        bool work = false;
        // Discard / write zeroes continuations that found the command ring full.
        while (deferred_ != nullptr) {
            io_uring_sqe* sqe = r_.cmd_sqe();
            if (sqe == nullptr) break;
            NvmeCmd* k = deferred_;
            deferred_ = k->next_deferred;
            prep(*k, sqe);
            work = true;
        }
        return work;
    }
    bool idle() const override { return free_.size() == cmds_.size(); }
    // Completions arrive through the reactor's command ring (and its eventfd while it sleeps).
    bool must_poll() const override { return deferred_ != nullptr; }

    void on_cmd(NvmeCmd& k, int32_t res, uint64_t result) {
        if (k.fixed && (res == -EINVAL || res == -EOPNOTSUPP)) {
            // A kernel that takes no registered buffer for passthrough: this command again
            // without, and no more registered buffers on this channel.
            VLOG_LIMITED(log_limit_, log_at(ns_.block_name), warn,
                         "nvme {}: a command with a registered buffer failed ({}): going on without them", ns_.block_name,
                         std::strerror(-res));
            fixed_.clear();
            send(k);
            return;
        }
        int32_t err = res < 0 ? res : res > 0 ? status_errno(res) : 0;
        if (res > 0) {
            VLOG_LIMITED(log_limit_, log_at(ns_.block_name), warn, "nvme {}: command {} at LBA {} failed with NVMe status {:#x}",
                         ns_.block_name, static_cast<int>(k.op), k.slba, res);
        }
        int32_t out = err;
        switch (k.op) {
            case BlockOp::kRead:
            case BlockOp::kWrite:
                untrim(k);
                if (err == 0) out = static_cast<int32_t>(k.bytes);
                break;
            case BlockOp::kZoneAppend:
                untrim(k);
                if (err == 0) {
                    // The LBA the drive chose: inside the zone the append named, or the device
                    // cannot tell the guest where its data is.
                    if (result < k.slba || result - k.slba > ns_.zone_lbas - k.nlb) {
                        VLOG_LIMITED(log_limit_, log_at(ns_.block_name), warn,
                                     "nvme {}: zone append at zone LBA {} answered LBA {}, outside the zone",
                                     ns_.block_name, k.slba, result);
                        out = -EIO;
                    } else {
                        *k.append_at = result << shift_;
                        out = static_cast<int32_t>(k.bytes);
                    }
                }
                break;
            case BlockOp::kZoneReport:
                untrim(k);
                if (err == 0) out = static_cast<int32_t>(convert_report(k));
                break;
            case BlockOp::kFlush:
            case BlockOp::kZoneOpen:
            case BlockOp::kZoneClose:
            case BlockOp::kZoneFinish:
            case BlockOp::kZoneReset:
            case BlockOp::kZoneResetAll:
                break;
            default:
                if (err == 0 && k.left > 0) {
                    // The next piece, one after the other (a discard / write zeroes larger than
                    // a command covers).
                    send(k);
                    return;
                }
                break;
        }
        Completion* c = k.c;
        free_.push_back(&k);
        c->complete(out);
    }

private:
    // The part of a read/write one command carries (nvme::fit_bytes: max_bytes, max_segments
    // pages, whole granules). The last iovec is cut short in place (the caller's array is ours
    // until completion; the kernel may read it again when it retries the command from a worker).
    // `granule`: the unit a command's length comes in (an LBA; a zone descriptor for a report);
    // `lbas`: the bytes are the command's LBAs (checked against the namespace's end).
    Status cut(NvmeCmd& k, const BlockRequest& q, uint32_t granule, bool lbas) {
        const uint64_t bytes = fit_bytes(q.iov, q.iovcnt, ns_.max_bytes, ns_.max_segments, granule);
        if (bytes == 0) {
            return make_error(Errc::kInvalid, "the request's first {} bytes span more than {} memory pages (or it has no data)",
                              granule, ns_.max_segments);
        }
        if (lbas && !range_within(k.slba, bytes >> shift_, 0, ns_.lbas))
            return make_error(Errc::kInvalid, "LBAs {}+{} lie past the namespace's {}", k.slba, bytes >> shift_, ns_.lbas);
        uint64_t acc = 0;
        unsigned last = 0;
        for (;; ++last) {
            if (acc + q.iov[last].iov_len >= bytes) break;
            acc += q.iov[last].iov_len;
        }
        k.iov = q.iov;
        k.iovcnt = last + 1;
        const size_t part = static_cast<size_t>(bytes - acc);
        if (part < q.iov[last].iov_len) {
            k.trimmed = const_cast<iovec*>(&q.iov[last]);
            k.saved_len = k.trimmed->iov_len;
            k.trimmed->iov_len = part;
        }
        k.bytes = static_cast<uint32_t>(bytes);
        k.nlb = static_cast<uint32_t>(bytes >> shift_);
        return ok_status();
    }

    // The command (again, or its next piece) on the command ring, or deferred to poll() when
    // the ring is full.
    void send(NvmeCmd& k) {
        if (io_uring_sqe* sqe = r_.cmd_sqe()) {
            prep(k, sqe);
        } else {
            k.next_deferred = deferred_;
            deferred_ = &k;
        }
    }

    static void untrim(NvmeCmd& k) {
        if (k.trimmed != nullptr) {
            k.trimmed->iov_len = k.saved_len;
            k.trimmed = nullptr;
        }
    }

    // The drive's report (ZNS layout, LBAs) turned in place into the interface's (virtio's
    // layout, 512-byte sectors); returns the bytes of the report. The buffer is the guest's: the
    // values read back are only translated, and the loop is bounded by the command's length.
    uint64_t convert_report(const NvmeCmd& k) {
        ZoneReportHeader h{};
        iov_at(k, 0, &h, sizeof(h), false);
        const uint64_t room = (k.bytes - sizeof(h)) / kZoneDescBytes;
        const uint64_t n = std::min<uint64_t>(h.nr_zones, room);
        const unsigned to_sectors = shift_ - 9;
        for (uint64_t i = 0; i < n; ++i) {
            uint8_t raw[kZoneDescBytes];
            const size_t at = sizeof(h) + i * kZoneDescBytes;
            iov_at(k, at, raw, sizeof(raw), false);
            uint64_t zcap, zslba, wp;
            std::memcpy(&zcap, raw + 8, 8);
            std::memcpy(&zslba, raw + 16, 8);
            std::memcpy(&wp, raw + 24, 8);
            ZoneDescriptor d{};
            d.capacity = zcap << to_sectors;
            d.start = zslba << to_sectors;
            d.wp = wp << to_sectors;
            d.type = raw[0] & 0x0f;  // ZT: 2, sequential write required (the same number)
            d.state = raw[1] >> 4;   // ZS: the same numbers as virtio's states
            iov_at(k, at, &d, sizeof(d), true);
        }
        h = ZoneReportHeader{};
        h.nr_zones = n;
        iov_at(k, 0, &h, sizeof(h), true);
        return sizeof(h) + n * kZoneDescBytes;
    }

    // Copies between `p` and [off, off+len) of the command's buffer.
    static void iov_at(const NvmeCmd& k, size_t off, void* p, size_t len, bool to_iov) {
        auto* b = static_cast<uint8_t*>(p);
        for (unsigned i = 0; i < k.iovcnt && len > 0; ++i) {
            const size_t l = k.iov[i].iov_len;
            if (off >= l) {
                off -= l;
                continue;
            }
            const size_t c = std::min(l - off, len);
            uint8_t* at = static_cast<uint8_t*>(k.iov[i].iov_base) + off;
            if (to_iov) std::memcpy(at, b, c);
            else std::memcpy(b, at, c);
            b += c;
            len -= c;
            off = 0;
        }
    }

    void prep(NvmeCmd& k, io_uring_sqe* sqe) {
        k.fixed = false;
        switch (k.op) {
            case BlockOp::kRead:
            case BlockOp::kWrite:
                prep_rw(sqe, fd_, ns_.nsid, k.op == BlockOp::kWrite, k.slba, k.nlb, k.fua, k.iov, k.iovcnt, k.bytes);
                use_fixed(k, sqe);
                break;
            case BlockOp::kFlush:
                nvme::prep(sqe, fd_, ns_.nsid, kOpFlush);
                break;
            case BlockOp::kZoneAppend: {
                nvme_uring_cmd* cmd = nvme::prep(sqe, fd_, ns_.nsid, kOpZoneAppend);
                set_slba(cmd, k.slba);
                cmd->cdw12 = (k.nlb - 1) | (k.fua ? kFua : 0);
                set_data(sqe, cmd, k.iov, k.iovcnt, k.bytes);
                use_fixed(k, sqe);
                break;
            }
            case BlockOp::kZoneReport: {
                nvme_uring_cmd* cmd = nvme::prep(sqe, fd_, ns_.nsid, kOpZoneMgmtRecv);
                set_slba(cmd, k.slba);
                cmd->cdw12 = k.bytes / 4 - 1;    // dwords, 0's based
                cmd->cdw13 = kZraPartialReport;  // report zones (ZRA 0), all states (ZRASF 0)
                set_data(sqe, cmd, k.iov, k.iovcnt, k.bytes);
                break;
            }
            case BlockOp::kZoneOpen:
            case BlockOp::kZoneClose:
            case BlockOp::kZoneFinish:
            case BlockOp::kZoneReset:
            case BlockOp::kZoneResetAll: {
                nvme_uring_cmd* cmd = nvme::prep(sqe, fd_, ns_.nsid, kOpZoneMgmtSend);
                set_slba(cmd, k.slba);
                cmd->cdw13 = k.op == BlockOp::kZoneOpen    ? kZsaOpen
                             : k.op == BlockOp::kZoneClose  ? kZsaClose
                             : k.op == BlockOp::kZoneFinish ? kZsaFinish
                                                            : kZsaReset;
                if (k.op == BlockOp::kZoneResetAll) cmd->cdw13 |= kZsaSelectAll;
                break;
            }
            case BlockOp::kDiscard: {
                const uint64_t n = std::min(k.left, kMaxDsmLbas);
                k.range = DsmRange{0, static_cast<uint32_t>(n), k.slba};
                prep_deallocate(sqe, fd_, ns_.nsid, &k.range);
                k.slba += n;
                k.left -= n;
                break;
            }
            case BlockOp::kWriteZeroes:
            case BlockOp::kWriteZeroesUnmap: {
                const uint64_t n = std::min(k.left, ns_.write_zeroes_max_lbas);
                prep_write_zeroes(sqe, fd_, ns_.nsid, k.slba, static_cast<uint32_t>(n), k.op == BlockOp::kWriteZeroesUnmap);
                k.slba += n;
                k.left -= n;
                break;
            }
        }
        io_uring_sqe_set_data(sqe, static_cast<CmdCompletion*>(&k));
    }

    // A command whose data is one buffer inside a registered piece of guest memory names its
    // slot (vectored commands take no registered buffer on the kernels this runs on).
    void use_fixed(NvmeCmd& k, io_uring_sqe* sqe) {
        ++data_cmds_;
        if (fixed_.empty() || k.iovcnt != 1) return;
        const auto a = reinterpret_cast<uint64_t>(k.iov[0].iov_base);
        for (const FixedBuf& f : fixed_) {
            if (a >= f.base && a - f.base <= f.len && k.bytes <= f.len - (a - f.base)) {
                sqe->uring_cmd_flags = IORING_URING_CMD_FIXED;
                sqe->buf_index = f.slot;
                k.fixed = true;
                ++fixed_cmds_;
                return;
            }
        }
    }

    struct FixedBuf {
        uint64_t base, len;
        uint16_t slot;
    };

    Reactor& r_;
    const int fd_;
    const NvmeNamespace ns_;
    const unsigned shift_;
    std::vector<NvmeCmd> cmds_;
    std::vector<NvmeCmd*> free_;
    NvmeCmd* deferred_ = nullptr;
    LogRateLimit log_limit_;
    const bool want_fixed_;
    std::vector<FixedBuf> fixed_;  // registered guest memory (empty: none)
    unsigned slot_first_ = 0, slot_n_ = 0;
    uint64_t fixed_cmds_ = 0, data_cmds_ = 0;
};

void NvmeCmd::complete_cmd(int32_t res, uint64_t result) { ch->on_cmd(*this, res, result); }

}  // namespace

Result<std::unique_ptr<NvmeBackend>> NvmeBackend::open(const NvmeOptions& o) {
    auto be = std::unique_ptr<NvmeBackend>(new NvmeBackend());
    VHOSTD_ASSIGN_OR_RETURN(auto g, open_generic(o.path, o.readonly));
    be->fd_ = std::move(g.fd);
    be->ns_ = g.ns;
    be->fixed_ = o.fixed_buffers;
    const NvmeNamespace& ns = be->ns_;
    be->info_.size_bytes = ns.lbas * ns.lba_size;
    be->info_.block_size = ns.lba_size;
    be->info_.physical_block = ns.physical_block;
    be->info_.readonly = o.readonly;
    be->info_.discard = ns.deallocate && !o.readonly;
    be->info_.write_zeroes = ns.write_zeroes && !o.readonly;
    if (ns.zone_lbas != 0) {
        be->info_.zoned.model = 1;  // host-managed
        be->info_.zoned.zone_bytes = ns.zone_lbas * ns.lba_size;
        be->info_.zoned.max_open = ns.max_open;
        be->info_.zoned.max_active = ns.max_active;
        be->info_.zoned.max_append_bytes = ns.max_append_bytes;
    }
    be->info_.description = fmt::format("nvme passthrough {} (nsid {}, {} LBAs of {} B, {} KiB per command{})", o.path, ns.nsid,
                                        ns.lbas, ns.lba_size, ns.max_bytes / 1024, ns.volatile_cache ? ", write cache" : "");
    if (o.fixed_buffers) be->info_.description += ", guest memory as fixed buffers";
    if (ns.zone_lbas != 0)
        be->info_.description += fmt::format(", zoned: {} zones of {} LBAs, max open {} active {}, append {} KiB", ns.nr_zones,
                                             ns.zone_lbas, ns.max_open, ns.max_active, ns.max_append_bytes / 1024);
    VLOG_INFO("{}", be->info_.description);
    return be;
}

Result<std::unique_ptr<BlockChannel>> NvmeBackend::open_channel(Reactor& reactor, uint32_t depth) {
    VHOSTD_TRY(reactor.cmd_ring_status());
    return std::unique_ptr<BlockChannel>(std::make_unique<NvmeChannel>(reactor, fd_.get(), ns_, depth, fixed_));
}

}  // namespace vhostd::backends
