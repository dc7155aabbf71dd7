// Parsing of device specs given on the command line (QEMU-style key=value lists).
#pragma once

#include <array>
#include <map>
#include <cstdint>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace vhostd::app {

// --blk socket=PATH,path=FILE[,queues=N][,readonly=on][,direct=on][,block-size=512|4096][,serial=ID][,client=on]
// --blk socket=PATH,backend=null,size=1G[,queues=N][,block-size=..][,readonly=on][,serial=ID][,client=on]
// --blk socket=PATH,backend=nbd,uri=nbd://HOST[:PORT]/EXPORT|nbd+unix:///EXPORT?socket=PATH[,timeout=SECS][,...]
// --blk socket=PATH,backend=rbd,pool=P,image=I[,snap=S][,conf=FILE][,user=NAME][,timeout=SECS][,...]
// --blk socket=PATH,volume=POOL/NAME[,readonly=on][,...]  (a volume of a pool: --pool, pool_import)
// Per-device I/O limits (device_set_qos, or iops=/bps=/... on --blk); 0 = no limit.
struct QosSpec {
    uint64_t iops = 0, bps = 0, read_iops = 0, write_iops = 0, read_bps = 0, write_bps = 0;
    uint32_t burst_ms = 0;  // 0: the default burst
    bool operator==(const QosSpec&) const = default;
};

// Every device key also works in the management API (device_add members) and the config file.
// id=NAME names the device (default blk0, blk1, ... / net0, ...): 1..64 of [A-Za-z0-9_.-].
// socket-mode=OCTAL, socket-group=NAME|GID (both device kinds): who may connect to a socket vhostd
// listens on. Default 0600 (0660 with a group): only the hypervisor's user (and group).
struct SocketAccess {
    uint32_t mode = 0;  // 0: the default
    std::string group;
    uint32_t effective_mode() const { return mode != 0 ? mode : group.empty() ? 0600 : 0660; }
    bool operator==(const SocketAccess&) const = default;
};

struct BlkSpec {
    std::string id;
    std::string socket;
    bool client = false;  // connect to the socket instead of listening on it
    SocketAccess access;
    std::string backend = "file";
    std::string path;
    uint64_t size = 0;  // null backend
    std::string uri;    // nbd backend
    std::string pool, image, snap, conf, user;  // rbd backend
    std::string volume;  // volume backend: POOL/NAME
    uint32_t timeout = 0;  // nbd/rbd: seconds a request may wait for the server (0: forever)
    bool timeout_set = false;
    uint32_t queues = 0;  // 0: default
    bool readonly = false;
    bool direct = false;
    bool fixed = false;  // nvme backend: guest memory as io_uring fixed buffers (pinned)
    uint32_t block_size = 0;  // 0: backend default
    std::string serial;
    uint32_t submit_batch = 0;  // file backend: requests per io_uring_enter; 0: backend default
    QosSpec qos;
};

// Queues offered when queues= is not given. QEMU's vhost-user-blk defaults num-queues to the
// guest's vCPU count and refuses to start if the backend offers fewer, so be generous: a queue
// costs nothing until the guest starts it.
inline constexpr uint32_t kDefaultQueues = 16;
inline constexpr uint32_t kMaxQueues = 64;
// QoS ceilings: far above any device, low enough that rate arithmetic cannot overflow.
inline constexpr uint64_t kMaxQosIops = 100'000'000;
inline constexpr uint64_t kMaxQosBps = 1ull << 40;  // 1 TiB/s

// --net socket=PATH,tap=NAME[,queues=N][,mac=MAC][,mtu=N][,client=on]
// queues= counts queue pairs (one RX + one TX vring and one tap queue each), as QEMU's
// -netdev vhost-user,queues=N does.
struct NetSpec {
    std::string id;
    std::string socket;
    bool client = false;
    SocketAccess access;
    std::string tap;
    uint32_t queue_pairs = 1;
    std::array<uint8_t, 6> mac{};
    bool mac_set = false;  // otherwise a random locally administered address
    uint32_t mtu = 0;      // 0: keep the tap's MTU
};
inline constexpr uint32_t kMaxNetQueuePairs = 32;

using KeyMap = std::map<std::string, std::string>;
Result<BlkSpec> parse_blk_spec(const std::string& text);
Result<NetSpec> parse_net_spec(const std::string& text);
// The same from key/value pairs (the management API's device_add members).
Result<BlkSpec> parse_blk_keys(const KeyMap& kv);
Result<NetSpec> parse_net_keys(const KeyMap& kv);
// A spec back as keys (only what differs from the defaults): parse_*_keys(to_keys(s)) == s.
KeyMap to_keys(const BlkSpec& s);
KeyMap to_keys(const NetSpec& s);
// A QoS key (iops, bps, read-iops, write-iops, read-bps, write-bps, burst-ms; bps keys take
// K/M/G suffixes) into q. False if `key` is not a QoS key.
Result<bool> parse_qos_key(const std::string& key, const std::string& value, QosSpec& q);
// A device id: 1..64 of [A-Za-z0-9_.-].
Status check_device_id(const std::string& id);
Result<std::array<uint8_t, 6>> parse_mac(const std::string& text);
// "512", "4k", "1M", "2G", "1T" (binary units).
Result<uint64_t> parse_size(const std::string& text);
// "0,1,3" or "0-3" or a mix.
Result<std::vector<int>> parse_cpu_list(const std::string& text);

}  // namespace vhostd::app
