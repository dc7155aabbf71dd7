#include "backends/null_backend.hpp"

#include <cstring>
#include <vector>

namespace vhostd::backends {

namespace {

class NullChannel final : public BlockChannel {
public:
    explicit NullChannel(uint32_t depth) { pending_.reserve(depth); }

    bool ready() override { return pending_.size() < pending_.capacity(); }

    Status submit(const BlockRequest& q, Completion* c) override {
        if (!ready()) return make_error(Errc::kBusy, "null channel full");
        int32_t res = 0;
        if (q.op == BlockOp::kRead || q.op == BlockOp::kWrite) {
            uint64_t total = 0;
            for (unsigned i = 0; i < q.iovcnt; ++i) {
                if (q.op == BlockOp::kRead) std::memset(q.iov[i].iov_base, 0, q.iov[i].iov_len);
                total += q.iov[i].iov_len;
            }
            res = static_cast<int32_t>(total);
        }
        pending_.push_back({c, res});  // never reallocates: capacity is the queue depth
        return ok_status();
    }

    bool poll() override {
        if (pending_.empty()) return false;
        // Completions may submit again (short transfers never happen here, but be safe):
        // take the batch first.
        size_t n = pending_.size();
        for (size_t i = 0; i < n; ++i) pending_[i].c->complete(pending_[i].res);
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(n));
        return true;
    }

    bool idle() const override { return pending_.empty(); }

private:
    struct Pending {
        Completion* c;
        int32_t res;
    };
    std::vector<Pending> pending_;
};

}  // namespace

NullBackend::NullBackend(uint64_t size_bytes, uint32_t block_size, bool readonly) {
    info_.size_bytes = size_bytes / block_size * block_size;
    info_.block_size = block_size;
    info_.readonly = readonly;
    info_.discard = !readonly;
    info_.write_zeroes = !readonly;
    info_.description = fmt::format("null ({} bytes)", info_.size_bytes);
}

Result<uint64_t> NullBackend::resize(uint64_t new_size) {
    if (new_size == 0 || new_size % info_.block_size != 0)
        return make_error(Errc::kInvalid, "size {} must be a non-zero multiple of the block size {}", new_size,
                          info_.block_size);
    info_.size_bytes = new_size;
    info_.description = fmt::format("null ({} bytes)", info_.size_bytes);
    return new_size;
}

Result<std::unique_ptr<BlockChannel>> NullBackend::open_channel(Reactor&, uint32_t depth) {
    return std::unique_ptr<BlockChannel>(std::make_unique<NullChannel>(depth));
}

}  // namespace vhostd::backends
