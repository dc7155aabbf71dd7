#include "nvme/nvme.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <fstream>
#include <regex>

#include "core/checked.hpp"

namespace vhostd::nvme {

namespace {

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


bool is_char_device(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode);
}

Result<Generic> open_generic(const std::string& path, bool readonly) {
    if (path.empty()) return make_error(Errc::kInvalid, "an NVMe namespace needs a path (/dev/ngXnY)");
    char real[PATH_MAX];
    if (realpath(path.c_str(), real) == nullptr) return sys_error("{}", path);
    std::string name = real;
    name = name.substr(name.find_last_of('/') + 1);
    static const std::regex kGeneric(R"(ng([0-9]+)n([0-9]+))");
    std::smatch m;
    if (!std::regex_match(name, m, kGeneric))
        return make_error(Errc::kInvalid, "{} is not an NVMe namespace's generic device (/dev/ngXnY)", path);
    struct stat st {};
    if (stat(real, &st) != 0) return sys_error("stat {}", path);
    if (!S_ISCHR(st.st_mode)) return make_error(Errc::kInvalid, "{} is not a character device", path);

    Generic g;
    g.path = path;
    VHOSTD_ASSIGN_OR_RETURN(g.ns, read_nvme_namespace(fmt::format("/sys/block/nvme{}n{}", m[1].str(), m[2].str())));
    int fd = ::open(real, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) return sys_error("open {}", path);
    g.fd.reset(fd);
    int id = ioctl(fd, NVME_IOCTL_ID);
    if (id < 0) return sys_error("{}: NVME_IOCTL_ID", path);
    if (static_cast<uint32_t>(id) != g.ns.nsid)
        return make_error(Errc::kInvalid, "{} is namespace {}, but sysfs {} says {}", path, id, g.ns.block_name, g.ns.nsid);
    return g;
}

int32_t status_errno(int32_t status) {
    // The zone statuses' errnos are the ones backends/block_backend.hpp names kErrZone* (checked
    // there): they become virtio-blk's zone statuses.
    const int sct = (status >> 8) & 0x7, sc = status & 0xff;
    if (sct == 0 && sc == 0x01) return -EOPNOTSUPP;  // Invalid Command Opcode
    if (sct == 0 && (sc == 0x80 || sc == 0x02)) return -EINVAL;  // LBA Out of Range, Invalid Field
    if (sct == 1 && sc == 0x20) return -EROFS;  // Namespace is Write Protected
    if (sct == 1) {
        switch (sc) {
            case 0xbc: return -EILSEQ;        // Zone Invalid Write: unaligned write pointer
            case 0xbd: return -EOVERFLOW;     // Too Many Active Zones
            case 0xbe: return -ETOOMANYREFS;  // Too Many Open Zones
            case 0xb8:  // Zone Boundary Error
            case 0xb9:  // Zone Is Full
            case 0xba:  // Zone Is Read Only
            case 0xbb:  // Zone Is Offline
            case 0xbf:  // Invalid Zone State Transition
                return -EBADE;
            default: break;
        }
    }
    return -EIO;
}

uint64_t fit_bytes(const iovec* iov, unsigned iovcnt, uint64_t max_bytes, uint32_t max_segments, uint64_t granule) {
    constexpr unsigned kPageShift = 12;
    uint64_t sum = 0, pages = 0;
    for (unsigned i = 0; i < iovcnt && sum < max_bytes; ++i) {
        const uint64_t len = iov[i].iov_len;
        if (len == 0) continue;
        const auto base = reinterpret_cast<uint64_t>(iov[i].iov_base);
        uint64_t take = std::min<uint64_t>(len, max_bytes - sum);
        const uint64_t first = base >> kPageShift;
        uint64_t p = ((base + take - 1) >> kPageShift) - first + 1;
        if (pages + p > max_segments) {
            p = max_segments - pages;
            take = std::min(take, ((first + p) << kPageShift) - base);
        }
        pages += p;
        sum += take;
        if (take < len || pages >= max_segments) break;
    }
    return sum - sum % granule;
}

namespace {

int submit_sync(int fd, nvme_passthru_cmd& c) {
    for (;;) {
        int r = ::ioctl(fd, NVME_IOCTL_IO_CMD, &c);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        return r > 0 ? status_errno(r) : 0;
    }
}

}  // namespace

int io_rw(int fd, const NvmeNamespace& ns, bool write, uint64_t slba, uint32_t nlb, void* buf) {
    if (nlb == 0 || uint64_t{nlb} * ns.lba_size > ns.max_bytes || !range_within(slba, nlb, 0, ns.lbas)) return -EINVAL;
    nvme_passthru_cmd c{};
    c.opcode = write ? kOpWrite : kOpRead;
    c.nsid = ns.nsid;
    c.addr = reinterpret_cast<uint64_t>(buf);
    c.data_len = nlb * ns.lba_size;
    c.cdw10 = static_cast<uint32_t>(slba);
    c.cdw11 = static_cast<uint32_t>(slba >> 32);
    c.cdw12 = nlb - 1;
    return submit_sync(fd, c);
}

int io_flush(int fd, const NvmeNamespace& ns) {
    nvme_passthru_cmd c{};
    c.opcode = kOpFlush;
    c.nsid = ns.nsid;
    return submit_sync(fd, c);
}

int io_write_zeroes(int fd, const NvmeNamespace& ns, uint64_t slba, uint32_t nlb) {
    if (nlb == 0 || nlb > ns.write_zeroes_max_lbas || !range_within(slba, nlb, 0, ns.lbas)) return -EINVAL;
    nvme_passthru_cmd c{};
    c.opcode = kOpWriteZeroes;
    c.nsid = ns.nsid;
    c.cdw10 = static_cast<uint32_t>(slba);
    c.cdw11 = static_cast<uint32_t>(slba >> 32);
    c.cdw12 = nlb - 1;
    return submit_sync(fd, c);
}

}  // namespace vhostd::nvme
