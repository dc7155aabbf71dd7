// A deliberately awkward block backend for tests: storage in RAM or in a file, and behaviours
// a real backend may show but rarely does on demand — completions in reverse order, transfers
// that complete short, submissions refused as busy, writes that never complete (a crash then
// leaves completions out of order). Completions arrive from the channel's poll(), on the
// owning reactor, never from inside submit(), as the BlockChannel contract requires.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/block_backend.hpp"

namespace vhostd::testing {

struct FakeBlockOptions {
    uint64_t size_bytes = 0;
    int fd = -1;  // >= 0: data goes to this file (pwritev/preadv, borrowed fd); else a RAM disk
    bool discard = false;
    bool write_zeroes = false;
    bool reverse_completions = false;  // each poll completes its batch newest first
    uint64_t short_over = 0;           // > 0: reads/writes larger than this complete about half
    uint32_t busy_every = 0;           // > 0: every N-th submission is refused with kBusy
    bool hold_odd_writes = false;      // writes starting at an odd sector never complete
    std::string description = "fake";
};

class FakeBlockBackend final : public backends::BlockBackend {
public:
    explicit FakeBlockBackend(FakeBlockOptions opts);
    const backends::BlockInfo& info() const override { return info_; }
    Result<std::unique_ptr<backends::BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) override;

    const FakeBlockOptions& options() const { return opts_; }
    std::vector<uint8_t> disk;  // the RAM disk (fd < 0); touched only by the reactor that owns the channels
    std::atomic<uint64_t> shorts{0};  // transfers completed short
    std::atomic<uint64_t> busies{0};  // submissions refused as busy

private:
    FakeBlockOptions opts_;
    backends::BlockInfo info_;
};

}  // namespace vhostd::testing
