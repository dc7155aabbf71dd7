#include "backends/nvme_backend.hpp"

#include <fcntl.h>
#include <linux/nvme_ioctl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

// NVM command set opcodes (NVMe base spec 2.0, NVM command set spec 1.0).
constexpr uint8_t kOpFlush = 0x00, kOpWrite = 0x01, kOpRead = 0x02, kOpWriteZeroes = 0x08, kOpDsm = 0x09;
// Zoned namespace command set (NVMe ZNS spec 1.1).
constexpr uint8_t kOpZoneMgmtSend = 0x79, kOpZoneMgmtRecv = 0x7a, kOpZoneAppend = 0x7d;
constexpr uint32_t kZsaClose = 1, kZsaFinish = 2, kZsaOpen = 3, kZsaReset = 4;  // Send CDW13
constexpr uint32_t kZsaSelectAll = 1u << 8;
constexpr uint32_t kZraPartialReport = 1u << 16;  // Receive CDW13: nr_zones counts what came back
constexpr uint32_t kZoneDescBytes = 64;
constexpr uint32_t kFua = 1u << 30;         // read/write CDW12
constexpr uint32_t kDeac = 1u << 25;        // write zeroes CDW12: deallocate
constexpr uint32_t kDsmDeallocate = 1u << 2;  // DSM CDW11 AD
// One command's NLB field is 16 bits (0's based) for write zeroes, 32 bits in a DSM range.
constexpr uint64_t kMaxZeroLbas = 65536;
constexpr uint64_t kMaxDsmLbas = UINT32_MAX;

struct DsmRange {
    uint32_t cattr;
    uint32_t nlb;
    uint64_t slba;
};
static_assert(sizeof(DsmRange) == 16);

// A positive result of a passthrough command is the NVMe status (SCT << 8 | SC, plus the DNR and
// More bits): what the block layer would have made of it.
int32_t nvme_errno(int32_t status) {
    const int sct = (status >> 8) & 0x7, sc = status & 0xff;
    if (sct == 0 && sc == 0x01) return -EOPNOTSUPP;  // Invalid Command Opcode
    if (sct == 0 && (sc == 0x80 || sc == 0x02)) return -EINVAL;  // LBA Out of Range, Invalid Field
    if (sct == 1 && sc == 0x20) return -EROFS;  // Namespace is Write Protected
    if (sct == 1) {
        switch (sc) {
            case 0xbc: return kErrZoneUnalignedWrite;  // Zone Invalid Write
            case 0xbd: return kErrZoneActiveResource;  // Too Many Active Zones
            case 0xbe: return kErrZoneOpenResource;    // Too Many Open Zones
            case 0xb8:  // Zone Boundary Error
            case 0xb9:  // Zone Is Full
            case 0xba:  // Zone Is Read Only
            case 0xbb:  // Zone Is Offline
            case 0xbf:  // Invalid Zone State Transition
                return kErrZoneInvalid;
            default: break;
        }
    }
    return -EIO;
}

Result<std::string> read_attr(const std::string& path) {
    std::ifstream f(path);
    if (!f) return make_error(Errc::kSystem, "cannot read {}", path);
    std::string s;
    std::getline(f, s);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

Result<uint64_t> read_number(const std::string& path) {
    VHOSTD_ASSIGN_OR_RETURN(std::string s, read_attr(path));
    errno = 0;
    char* end = nullptr;
    unsigned long long v = std::strtoull(s.c_str(), &end, 10);
    if (s.empty() || end == nullptr || *end != '\0' || errno != 0 || s[0] == '-')
        return make_error(Errc::kInvalid, "{}: '{}' is not a number", path, s);
    return static_cast<uint64_t>(v);
}

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
    NvmeCmd* next_deferred = nullptr;
    void complete_cmd(int32_t res, uint64_t result) override;
};

class NvmeChannel final : public BlockChannel {
public:
    NvmeChannel(Reactor& r, int fd, const NvmeNamespace& ns, uint32_t depth)
        : r_(r), fd_(fd), ns_(ns), shift_(static_cast<unsigned>(__builtin_ctz(ns.lba_size))), cmds_(depth) {
        free_.reserve(depth);
        for (auto& k : cmds_) {
            k.ch = this;
            free_.push_back(&k);
        }
    }
    ~NvmeChannel() override = default;  // the device drains first: idle() before it lets go

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
        int32_t err = res < 0 ? res : res > 0 ? nvme_errno(res) : 0;
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
                    if (io_uring_sqe* sqe = r_.cmd_sqe()) {
                        prep(k, sqe);
                    } else {
                        k.next_deferred = deferred_;
                        deferred_ = &k;
                    }
                    return;
                }
                break;
        }
        Completion* c = k.c;
        free_.push_back(&k);
        c->complete(out);
    }

private:
    // The part of a read/write one command carries: at most max_bytes, in whole LBAs, over at
    // most max_segments memory pages. The block layer splits nothing for passthrough: it maps
    // the buffer (or a bounce copy of it) page by page, and a command whose pages do not merge
    // into max_segments segments is refused (EINVAL). Counting every page touched as a segment
    // of its own is the worst case, so a command never fails on how guest memory lies. The last
    // iovec is cut short in place (the caller's array is ours until completion; the kernel may
    // read it again when it retries the command from a worker).
    // `granule`: the unit a command's length comes in (an LBA; a zone descriptor for a report);
    // `lbas`: the bytes are the command's LBAs (checked against the namespace's end).
    Status cut(NvmeCmd& k, const BlockRequest& q, uint32_t granule, bool lbas) {
        const uint64_t lba_mask = granule - 1;
        constexpr unsigned kPageShift = 12;
        uint64_t sum = 0, pages = 0;
        for (unsigned i = 0; i < q.iovcnt && sum < ns_.max_bytes; ++i) {
            const uint64_t len = q.iov[i].iov_len;
            if (len == 0) continue;
            const auto base = reinterpret_cast<uint64_t>(q.iov[i].iov_base);
            uint64_t take = std::min<uint64_t>(len, ns_.max_bytes - sum);
            const uint64_t first = base >> kPageShift;
            uint64_t p = ((base + take - 1) >> kPageShift) - first + 1;
            if (pages + p > ns_.max_segments) {
                p = ns_.max_segments - pages;
                take = std::min(take, ((first + p) << kPageShift) - base);
            }
            pages += p;
            sum += take;
            if (take < len || pages >= ns_.max_segments) break;
        }
        const uint64_t bytes = sum & ~lba_mask;
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
        std::memset(sqe, 0, 2 * sizeof(io_uring_sqe));  // a 128-byte SQE
        sqe->opcode = IORING_OP_URING_CMD;
        sqe->fd = fd_;
        sqe->cmd_op = NVME_URING_CMD_IO;
        auto* cmd = reinterpret_cast<nvme_uring_cmd*>(sqe->cmd);
        cmd->nsid = ns_.nsid;
        switch (k.op) {
            case BlockOp::kRead:
            case BlockOp::kWrite:
                cmd->opcode = k.op == BlockOp::kRead ? kOpRead : kOpWrite;
                cmd->cdw10 = static_cast<uint32_t>(k.slba);
                cmd->cdw11 = static_cast<uint32_t>(k.slba >> 32);
                cmd->cdw12 = (k.nlb - 1) | (k.op == BlockOp::kWrite && k.fua ? kFua : 0);
                set_data(k, sqe, cmd);
                break;
            case BlockOp::kFlush:
                cmd->opcode = kOpFlush;
                break;
            case BlockOp::kZoneAppend:
            case BlockOp::kZoneReport:
                cmd->cdw10 = static_cast<uint32_t>(k.slba);
                cmd->cdw11 = static_cast<uint32_t>(k.slba >> 32);
                if (k.op == BlockOp::kZoneAppend) {
                    cmd->opcode = kOpZoneAppend;
                    cmd->cdw12 = (k.nlb - 1) | (k.fua ? kFua : 0);
                } else {
                    cmd->opcode = kOpZoneMgmtRecv;
                    cmd->cdw12 = k.bytes / 4 - 1;  // dwords, 0's based
                    cmd->cdw13 = kZraPartialReport;  // report zones (ZRA 0), all states (ZRASF 0)
                }
                set_data(k, sqe, cmd);
                break;
            case BlockOp::kZoneOpen:
            case BlockOp::kZoneClose:
            case BlockOp::kZoneFinish:
            case BlockOp::kZoneReset:
            case BlockOp::kZoneResetAll:
                cmd->opcode = kOpZoneMgmtSend;
                cmd->cdw10 = static_cast<uint32_t>(k.slba);
                cmd->cdw11 = static_cast<uint32_t>(k.slba >> 32);
                cmd->cdw13 = k.op == BlockOp::kZoneOpen    ? kZsaOpen
                             : k.op == BlockOp::kZoneClose  ? kZsaClose
                             : k.op == BlockOp::kZoneFinish ? kZsaFinish
                                                            : kZsaReset;
                if (k.op == BlockOp::kZoneResetAll) cmd->cdw13 |= kZsaSelectAll;
                break;
            case BlockOp::kDiscard: {
                const uint64_t n = std::min(k.left, kMaxDsmLbas);
                k.range = DsmRange{0, static_cast<uint32_t>(n), k.slba};
                cmd->opcode = kOpDsm;
                cmd->cdw10 = 0;  // one range (0's based)
                cmd->cdw11 = kDsmDeallocate;
                cmd->addr = reinterpret_cast<uint64_t>(&k.range);
                cmd->data_len = sizeof(k.range);
                k.slba += n;
                k.left -= n;
                break;
            }
            case BlockOp::kWriteZeroes:
            case BlockOp::kWriteZeroesUnmap: {
                const uint64_t n = std::min(k.left, ns_.write_zeroes_max_lbas);
                cmd->opcode = kOpWriteZeroes;
                cmd->cdw10 = static_cast<uint32_t>(k.slba);
                cmd->cdw11 = static_cast<uint32_t>(k.slba >> 32);
                cmd->cdw12 = static_cast<uint32_t>(n - 1) | (k.op == BlockOp::kWriteZeroesUnmap ? kDeac : 0);
                k.slba += n;
                k.left -= n;
                break;
            }
        }
        io_uring_sqe_set_data(sqe, static_cast<CmdCompletion*>(&k));
    }

    static void set_data(const NvmeCmd& k, io_uring_sqe* sqe, nvme_uring_cmd* cmd) {
        if (k.iovcnt == 1) {
            cmd->addr = reinterpret_cast<uint64_t>(k.iov[0].iov_base);
            cmd->data_len = k.bytes;
        } else {
            sqe->cmd_op = NVME_URING_CMD_IO_VEC;
            cmd->addr = reinterpret_cast<uint64_t>(k.iov);
            cmd->data_len = k.iovcnt;
        }
    }

    Reactor& r_;
    const int fd_;
    const NvmeNamespace ns_;
    const unsigned shift_;
    std::vector<NvmeCmd> cmds_;
    std::vector<NvmeCmd*> free_;
    NvmeCmd* deferred_ = nullptr;
    LogRateLimit log_limit_;
};

void NvmeCmd::complete_cmd(int32_t res, uint64_t result) { ch->on_cmd(*this, res, result); }

// A host-managed namespace's zones (sysfs, as the driver read them from the ZNS Identify data).
Status read_zones(const std::string& dir, NvmeNamespace& ns) {
    VHOSTD_ASSIGN_OR_RETURN(uint64_t zone_sectors, read_number(dir + "/queue/chunk_sectors"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t nr_zones, read_number(dir + "/queue/nr_zones"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t max_open, read_number(dir + "/queue/max_open_zones"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t max_active, read_number(dir + "/queue/max_active_zones"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t append_bytes, read_number(dir + "/queue/zone_append_max_bytes"));
    const uint64_t lba = ns.lba_size;
    const auto zone_bytes = checked_mul(zone_sectors, uint64_t{512});
    // virtio-blk's zone_sectors is 32 bits; a zone is whole LBAs, and the zones cover the namespace.
    if (!zone_bytes || zone_sectors == 0 || zone_sectors > UINT32_MAX || *zone_bytes % lba != 0)
        return make_error(Errc::kUnsupported, "{}: zone size of {} sectors cannot be served", dir, zone_sectors);
    const uint64_t zone_lbas = *zone_bytes / lba;
    if (nr_zones == 0 || nr_zones != (ns.lbas + zone_lbas - 1) / zone_lbas)
        return make_error(Errc::kInvalid, "{}: {} zones of {} LBAs do not make {} LBAs", dir, nr_zones, zone_lbas, ns.lbas);
    if (max_open > UINT32_MAX || max_active > UINT32_MAX)
        return make_error(Errc::kInvalid, "{}: open/active zone limits {}/{} out of range", dir, max_open, max_active);
    // One append is one command: within the drive's limit, the transfer limit, the zone, and the
    // worst-case page count of any buffer (max_segments - 1 whole pages plus two part pages).
    const uint64_t pages_bound = (uint64_t{ns.max_segments} - 1) * 4096;
    const uint64_t append = std::min({append_bytes, uint64_t{ns.max_bytes}, pages_bound, *zone_bytes}) & ~(lba - 1);
    if (append == 0)
        return make_error(Errc::kUnsupported, "{}: the namespace takes no zone append of one LBA ({} bytes)", dir, append_bytes);
    ns.zone_lbas = zone_lbas;
    ns.nr_zones = nr_zones;
    ns.max_open = static_cast<uint32_t>(max_open);
    ns.max_active = static_cast<uint32_t>(max_active);
    ns.max_append_bytes = static_cast<uint32_t>(append);
    // A host-managed namespace takes no deallocate or write zeroes here (their effect on write
    // pointers is the drive's business; guests on zoned storage reset zones instead).
    ns.deallocate = false;
    ns.write_zeroes = false;
    ns.write_zeroes_max_lbas = 0;
    return ok_status();
}

}  // namespace

Result<NvmeNamespace> read_nvme_namespace(const std::string& dir) {
    NvmeNamespace ns;
    auto slash = dir.find_last_of('/');
    ns.block_name = slash == std::string::npos ? dir : dir.substr(slash + 1);
    auto zoned = read_attr(dir + "/queue/zoned");
    const bool is_zoned = zoned.ok() && *zoned != "none";
    if (is_zoned && *zoned != "host-managed")
        return make_error(Errc::kUnsupported, "{} is a zoned namespace of model '{}' (host-managed ones are served)",
                          ns.block_name, *zoned);
    VHOSTD_ASSIGN_OR_RETURN(uint64_t nsid, read_number(dir + "/nsid"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t lba, read_number(dir + "/queue/logical_block_size"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t pbs, read_number(dir + "/queue/physical_block_size"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t sectors, read_number(dir + "/size"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t max_kb, read_number(dir + "/queue/max_hw_sectors_kb"));
    VHOSTD_ASSIGN_OR_RETURN(uint64_t max_segs, read_number(dir + "/queue/max_segments"));
    VHOSTD_ASSIGN_OR_RETURN(std::string cache, read_attr(dir + "/queue/write_cache"));
    auto discard = read_number(dir + "/queue/discard_max_hw_bytes");
    auto zeroes = read_number(dir + "/queue/write_zeroes_max_bytes");
    if (nsid == 0 || nsid >= 0xffffffffu) return make_error(Errc::kInvalid, "{}: namespace id {} is not valid", dir, nsid);
    if (lba < 512 || lba > 4096 || (lba & (lba - 1)) != 0)
        return make_error(Errc::kUnsupported, "{}: LBA size {} (512..4096, a power of two, is served)", dir, lba);
    const auto total = checked_mul(sectors, uint64_t{512});
    const uint64_t bytes = total ? *total : 0;
    if (bytes / lba == 0)
        return make_error(Errc::kUnsupported,
                          "{}: the block layer shows no capacity (an LBA format with metadata, or a namespace not "
                          "ready): it cannot be served",
                          dir);
    ns.nsid = static_cast<uint32_t>(nsid);
    ns.lba_size = static_cast<uint32_t>(lba);
    ns.physical_block = pbs >= lba && pbs <= 65536 && (pbs & (pbs - 1)) == 0 ? static_cast<uint32_t>(pbs) : ns.lba_size;
    ns.lbas = bytes / lba;
    // One command: at most 16 MiB (the NVMe MDTS the kernel honours is far below), whole LBAs.
    uint64_t max_bytes = std::min<uint64_t>(max_kb, 16384) * 1024;
    ns.max_bytes = static_cast<uint32_t>(std::max<uint64_t>(max_bytes & ~(lba - 1), lba));
    ns.max_segments = static_cast<uint32_t>(std::clamp<uint64_t>(max_segs, 1, 1024));
    ns.volatile_cache = cache == "write back";
    ns.deallocate = discard.ok() && *discard > 0;
    ns.write_zeroes = zeroes.ok() && *zeroes >= lba;
    ns.write_zeroes_max_lbas = ns.write_zeroes ? std::min<uint64_t>(*zeroes / lba, kMaxZeroLbas) : 0;
    if (is_zoned) VHOSTD_TRY(read_zones(dir, ns));
    return ns;
}

Result<std::unique_ptr<NvmeBackend>> NvmeBackend::open(const NvmeOptions& o) {
    if (o.path.empty()) return make_error(Errc::kInvalid, "backend=nvme needs path=/dev/ngXnY");
    char real[PATH_MAX];
    if (realpath(o.path.c_str(), real) == nullptr) return sys_error("{}", o.path);
    std::string name = real;
    name = name.substr(name.find_last_of('/') + 1);
    static const std::regex kGeneric(R"(ng([0-9]+)n([0-9]+))");
    std::smatch m;
    if (!std::regex_match(name, m, kGeneric))
        return make_error(Errc::kInvalid, "{} is not an NVMe namespace's generic device (/dev/ngXnY)", o.path);
    struct stat st {};
    if (stat(real, &st) != 0) return sys_error("stat {}", o.path);
    if (!S_ISCHR(st.st_mode)) return make_error(Errc::kInvalid, "{} is not a character device", o.path);

    auto be = std::unique_ptr<NvmeBackend>(new NvmeBackend());
    VHOSTD_ASSIGN_OR_RETURN(be->ns_, read_nvme_namespace(fmt::format("/sys/block/nvme{}n{}", m[1].str(), m[2].str())));
    int fd = ::open(real, (o.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) return sys_error("open {}", o.path);
    be->fd_.reset(fd);
    int id = ioctl(fd, NVME_IOCTL_ID);
    if (id < 0) return sys_error("{}: NVME_IOCTL_ID", o.path);
    if (static_cast<uint32_t>(id) != be->ns_.nsid)
        return make_error(Errc::kInvalid, "{} is namespace {}, but sysfs {} says {}", o.path, id, be->ns_.block_name, be->ns_.nsid);

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
    if (ns.zone_lbas != 0)
        be->info_.description += fmt::format(", zoned: {} zones of {} LBAs, max open {} active {}, append {} KiB", ns.nr_zones,
                                             ns.zone_lbas, ns.max_open, ns.max_active, ns.max_append_bytes / 1024);
    VLOG_INFO("{}", be->info_.description);
    return be;
}

Result<std::unique_ptr<BlockChannel>> NvmeBackend::open_channel(Reactor& reactor, uint32_t depth) {
    VHOSTD_TRY(reactor.cmd_ring_status());
    return std::unique_ptr<BlockChannel>(std::make_unique<NvmeChannel>(reactor, fd_.get(), ns_, depth));
}

}  // namespace vhostd::backends
