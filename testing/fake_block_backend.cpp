#include "testing/fake_block_backend.hpp"

#include <sys/uio.h>

#include <cerrno>
#include <cstring>

namespace vhostd::testing {

namespace {

using backends::BlockOp;
using backends::BlockRequest;

class FakeChannel final : public backends::BlockChannel {
public:
    explicit FakeChannel(FakeBlockBackend& be) : be_(be) { pending_.reserve(1024); }

    bool ready() override { return true; }

    Status submit(const BlockRequest& req, Completion* c) override {
        const auto& o = be_.options();
        if (o.busy_every != 0 && ++submits_ % o.busy_every == 0) {
            be_.busies++;
            return make_error(Errc::kBusy, "fake: busy");
        }
        if (o.hold_odd_writes && req.op == BlockOp::kWrite && (req.offset / 512) % 2 == 1) return ok_status();
        pending_.push_back({req, c});
        return ok_status();
    }

    bool poll() override {
        if (pending_.empty()) return false;
        auto batch = std::move(pending_);
        pending_.clear();
        pending_.reserve(1024);
        if (be_.options().reverse_completions) {
            for (auto it = batch.rbegin(); it != batch.rend(); ++it) it->c->complete(execute(it->req));
        } else {
            for (auto& p : batch) p.c->complete(execute(p.req));
        }
        return true;
    }

    bool idle() const override { return pending_.empty(); }

private:
    int32_t execute(const BlockRequest& q) {
        const auto& o = be_.options();
        if (q.op != BlockOp::kRead && q.op != BlockOp::kWrite) {
            if (q.op != BlockOp::kFlush && o.fd < 0) std::memset(be_.disk.data() + q.offset, 0, q.len);
            return 0;
        }
        uint64_t total = 0;
        for (unsigned i = 0; i < q.iovcnt; ++i) total += q.iov[i].iov_len;
        // Large transfers complete short, at a 512-byte boundary (inside an iovec if possible).
        uint64_t n = o.short_over != 0 && total > o.short_over ? (total / 2 + 100) / 512 * 512 : total;
        if (n < total) be_.shorts++;
        uint64_t done = 0;
        for (unsigned i = 0; i < q.iovcnt && done < n; ++i) {
            uint64_t c = std::min<uint64_t>(q.iov[i].iov_len, n - done);
            auto off = static_cast<off_t>(q.offset + done);
            if (o.fd >= 0) {
                ssize_t r = q.op == BlockOp::kRead ? ::pread(o.fd, q.iov[i].iov_base, c, off)
                                                   : ::pwrite(o.fd, q.iov[i].iov_base, c, off);
                if (r < 0) return -errno;
                done += static_cast<uint64_t>(r);
                if (static_cast<uint64_t>(r) < c) break;
                continue;
            }
            uint8_t* d = be_.disk.data() + q.offset + done;
            if (q.op == BlockOp::kRead) std::memcpy(q.iov[i].iov_base, d, c);
            else std::memcpy(d, q.iov[i].iov_base, c);
            done += c;
        }
        return static_cast<int32_t>(done);
    }

    struct Pending {
        BlockRequest req;
        Completion* c;
    };
    FakeBlockBackend& be_;
    std::vector<Pending> pending_;
    uint64_t submits_ = 0;
};

}  // namespace

FakeBlockBackend::FakeBlockBackend(FakeBlockOptions opts)
    : disk(opts.fd < 0 ? opts.size_bytes : 0), opts_(std::move(opts)) {
    info_.size_bytes = opts_.size_bytes;
    info_.discard = opts_.discard;
    info_.write_zeroes = opts_.write_zeroes;
    info_.description = opts_.description;
}

Result<std::unique_ptr<backends::BlockChannel>> FakeBlockBackend::open_channel(Reactor&, uint32_t) {
    return std::unique_ptr<backends::BlockChannel>(std::make_unique<FakeChannel>(*this));
}

}  // namespace vhostd::testing
