// The null backend: every request completes on the next reactor pass; reads return zeroes,
// writes are dropped. It measures the protocol and ring overhead alone.
#pragma once

#include "backends/block_backend.hpp"

namespace vhostd::backends {

class NullBackend : public BlockBackend {
public:
    NullBackend(uint64_t size_bytes, uint32_t block_size, bool readonly);
    const BlockInfo& info() const override { return info_; }
    Result<std::unique_ptr<BlockChannel>> open_channel(Reactor& reactor, uint32_t depth) override;
    Result<uint64_t> resize(uint64_t new_size) override;

private:
    BlockInfo info_;
};

}  // namespace vhostd::backends
