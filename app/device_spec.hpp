// Parsing of device specs given on the command line (QEMU-style key=value lists).
#pragma once

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
};

// Queues offered when queues= is not given. QEMU's vhost-user-blk defaults num-queues to the
// guest's vCPU count and refuses to start if the backend offers fewer, so be generous: a queue
// costs nothing until the guest starts it.
inline constexpr uint32_t kDefaultQueues = 16;
inline constexpr uint32_t kMaxQueues = 64;

Result<BlkSpec> parse_blk_spec(const std::string& text);
// "512", "4k", "1M", "2G", "1T" (binary units).
Result<uint64_t> parse_size(const std::string& text);
// "0,1,3" or "0-3" or a mix.
Result<std::vector<int>> parse_cpu_list(const std::string& text);

}  // namespace vhostd::app
