// Parsing of device specs given on the command line (QEMU-style key=value lists).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/result.hpp"

namespace vhostd::app {

// --blk socket=PATH,path=FILE[,queues=N][,readonly=on][,direct=on][,block-size=512|4096][,serial=ID][,client=on]
// --blk socket=PATH,backend=null,size=1G[,queues=N][,block-size=..][,readonly=on][,serial=ID][,client=on]
struct BlkSpec {
    std::string socket;
    bool client = false;  // connect to the socket instead of listening on it
    std::string backend = "file";
    std::string path;
    uint64_t size = 0;  // null backend
    uint32_t queues = 0;  // 0: default
    bool readonly = false;
    bool direct = false;
    uint32_t block_size = 0;  // 0: backend default
    std::string serial;
    uint32_t submit_batch = 0;  // file backend: requests per io_uring_enter; 0: backend default
};

// Queues offered when queues= is not given. QEMU's vhost-user-blk defaults num-queues to the
// guest's vCPU count and refuses to start if the backend offers fewer, so be generous: a queue
// costs nothing until the guest starts it.
inline constexpr uint32_t kDefaultQueues = 16;
inline constexpr uint32_t kMaxQueues = 64;

// --net socket=PATH,tap=NAME[,queues=N][,mac=MAC][,mtu=N][,client=on]
// queues= counts queue pairs (one RX + one TX vring and one tap queue each), as QEMU's
// -netdev vhost-user,queues=N does.
struct NetSpec {
    std::string socket;
    bool client = false;
    std::string tap;
    uint32_t queue_pairs = 1;
    std::array<uint8_t, 6> mac{};
    bool mac_set = false;  // otherwise a random locally administered address
    uint32_t mtu = 0;      // 0: keep the tap's MTU
};
inline constexpr uint32_t kMaxNetQueuePairs = 32;

Result<BlkSpec> parse_blk_spec(const std::string& text);
Result<NetSpec> parse_net_spec(const std::string& text);
Result<std::array<uint8_t, 6>> parse_mac(const std::string& text);
// "512", "4k", "1M", "2G", "1T" (binary units).
Result<uint64_t> parse_size(const std::string& text);
// "0,1,3" or "0-3" or a mix.
Result<std::vector<int>> parse_cpu_list(const std::string& text);

}  // namespace vhostd::app
