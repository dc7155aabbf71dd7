#include "backends/rbd_backend.hpp"

#include <rados/librados.h>
#include <rbd/librbd.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "core/log.hpp"
#include "core/mpsc_list.hpp"
#include "core/unique_fd.hpp"

namespace vhostd::backends {

namespace {

std::string rerr(int r) { return std::strerror(r < 0 ? -r : r); }

class RbdChannel;

struct RbdReq {
    RbdChannel* ch = nullptr;
    Completion* c = nullptr;
    BlockRequest req;
    uint64_t bytes = 0;           // read/write: the request's length
    ssize_t ret = 0;              // librbd's result (set on its thread)
    bool flushing = false;        // FUA: the write is done, its flush is out
    std::atomic<RbdReq*> next{nullptr};
};

class RbdChannel final : public BlockChannel, public Completion {
public:
    RbdChannel(Reactor& r, rbd_image_t image, uint32_t depth, UniqueFd efd)
        : r_(r), image_(image), reqs_(depth), efd_(std::move(efd)) {
        free_.reserve(depth);
        for (auto& q : reqs_) {
            q.ch = this;
            free_.push_back(&q);
        }
    }
    ~RbdChannel() override = default;  // the device drains first: idle() before it lets go

    bool ready() override { return !free_.empty(); }

    Status submit(const BlockRequest& q, Completion* c) override {
        if (is_zone_op(q.op)) return make_error(Errc::kUnsupported, "zone commands need a zoned backend");
        if (free_.empty()) return make_error(Errc::kBusy, "all request slots in use");
        RbdReq* r = free_.back();
        r->c = c;
        r->req = q;
        r->flushing = false;
        r->bytes = 0;
        for (unsigned i = 0; i < q.iovcnt; ++i) r->bytes += q.iov[i].iov_len;
        int rc = issue(r);
        if (rc < 0) return make_error(Errc::kSystem, "librbd refused the request: {}", rerr(rc));
        free_.pop_back();
        ++outstanding_;
        arm();
        return ok_status();
    }

    bool poll() override {
        bool work = drain();
        if (outstanding_ > 0 && !armed_) arm();
        if (outstanding_ == 0) disarm();  // (again, if the SQ was full the last time)
        return work;
    }
    bool idle() const override { return outstanding_ == 0 && !armed_; }
    // Completions pushed but not taken, requests out with no eventfd read armed, or a read left
    // to cancel (both: the SQ was full).
    bool must_poll() const override {
        return !done_.empty() || (outstanding_ > 0 && !armed_) || (outstanding_ == 0 && armed_ && !cancel_sent_);
    }

    // librbd's thread.
    static void on_rbd(rbd_completion_t comp, void* arg) {
        auto* r = static_cast<RbdReq*>(arg);
        r->ret = rbd_aio_get_return_value(comp);
        rbd_aio_release(comp);
        if (r->ch->done_.push(r)) {
            uint64_t one = 1;
            // Cannot fail short of a bad fd: an eventfd write of 1 never blocks below its limit.
            [[maybe_unused]] ssize_t n = ::write(r->ch->efd_.get(), &one, sizeof(one));
        }
    }

private:
    // The eventfd read completed (a completion was pushed) or was cancelled.
    void complete(int32_t) override {
        armed_ = false;
        cancel_sent_ = false;
        drain();
        if (outstanding_ > 0) arm();
    }

    int issue(RbdReq* r) {
        rbd_completion_t comp = nullptr;
        int rc = rbd_aio_create_completion(r, &RbdChannel::on_rbd, &comp);
        if (rc < 0) return rc;
        const BlockRequest& q = r->req;
        if (r->flushing) {
            rc = rbd_aio_flush(image_, comp);
        } else {
            switch (q.op) {
                case BlockOp::kRead:
                    rc = rbd_aio_readv(image_, q.iov, static_cast<int>(q.iovcnt), q.offset, comp);
                    break;
                case BlockOp::kWrite:
                    rc = rbd_aio_writev(image_, q.iov, static_cast<int>(q.iovcnt), q.offset, comp);
                    break;
                case BlockOp::kFlush:
                    rc = rbd_aio_flush(image_, comp);
                    break;
                case BlockOp::kDiscard:
                    // Advisory (librbd skips parts of objects by default: rbd_skip_partial_discard).
                    rc = rbd_aio_discard(image_, q.offset, q.len, comp);
                    break;
                case BlockOp::kWriteZeroesUnmap:
                    // Zeroes; whole objects may be deallocated.
                    rc = rbd_aio_write_zeroes(image_, q.offset, q.len, comp, 0, 0);
                    break;
                case BlockOp::kWriteZeroes:
                    rc = rbd_aio_write_zeroes(image_, q.offset, q.len, comp, RBD_WRITE_ZEROES_FLAG_THICK_PROVISION, 0);
                    break;
                VHOSTD_CASE_ZONE_OPS:
                    rc = -EOPNOTSUPP;  // refused in submit()
                    break;
            }
        }
        if (rc < 0) rbd_aio_release(comp);
        return rc;
    }

    bool drain() {
        if (done_.empty()) return false;
        RbdReq* r = done_.take_all();
        bool any = false;
        while (r != nullptr) {
            RbdReq* next = r->next.load(std::memory_order_relaxed);
            any = true;
            if (r->ret >= 0 && !r->flushing && r->req.op == BlockOp::kWrite && r->req.fua) {
                // The write is in librbd; its cache may hold it: a flush makes it durable first.
                r->flushing = true;
                int rc = issue(r);
                if (rc >= 0) {
                    r = next;
                    continue;
                }
                r->ret = rc;
            }
            int32_t res;
            if (r->ret < 0) res = static_cast<int32_t>(r->ret);
            else if (r->req.op == BlockOp::kRead || r->req.op == BlockOp::kWrite) res = static_cast<int32_t>(r->bytes);
            else res = 0;
            Completion* c = r->c;
            free_.push_back(r);
            --outstanding_;
            c->complete(res);
            r = next;
        }
        if (outstanding_ == 0) disarm();
        return any;
    }

    // Nothing more will come: take the eventfd read back, so the channel is idle (it completes
    // -ECANCELED, or with a count if a completion raced it).
    void disarm() {
        if (!armed_ || cancel_sent_) return;
        if (io_uring_sqe* sqe = r_.get_sqe()) {
            io_uring_prep_cancel(sqe, static_cast<Completion*>(this), 0);
            io_uring_sqe_set_data(sqe, nullptr);
            cancel_sent_ = true;
        }
    }

    void arm() {
        if (armed_) return;
        io_uring_sqe* sqe = r_.get_sqe();
        if (sqe == nullptr) return;  // poll() tries again (the queue stays hot with requests out)
        io_uring_prep_read(sqe, efd_.get(), &efd_buf_, sizeof(efd_buf_), 0);
        io_uring_sqe_set_data(sqe, static_cast<Completion*>(this));
        armed_ = true;
    }

    Reactor& r_;
    rbd_image_t image_;
    std::vector<RbdReq> reqs_;
    std::vector<RbdReq*> free_;
    UniqueFd efd_;
    uint64_t efd_buf_ = 0;
    MpscList<RbdReq> done_;  // librbd's threads push completed requests
    uint32_t outstanding_ = 0;
    bool armed_ = false;
    bool cancel_sent_ = false;
};

}  // namespace

Result<std::unique_ptr<RbdBackend>> RbdBackend::open(const RbdOptions& o) {
    if (o.pool.empty() || o.image.empty()) return make_error(Errc::kInvalid, "backend=rbd needs pool= and image=");
    auto b = std::unique_ptr<RbdBackend>(new RbdBackend());
    b->opts_ = o;
    const std::string name = fmt::format("rbd {}/{}{}{}", o.pool, o.image, o.snap.empty() ? "" : "@", o.snap);
    rados_t cluster = nullptr;
    int rc = rados_create(&cluster, o.user.empty() ? nullptr : o.user.c_str());
    if (rc < 0) return make_error(Errc::kSystem, "{}: rados_create: {}", name, rerr(rc));
    b->cluster_ = cluster;
    rc = rados_conf_read_file(cluster, o.conf.empty() ? nullptr : o.conf.c_str());
    if (rc < 0) return make_error(Errc::kSystem, "{}: reading {}: {}", name, o.conf.empty() ? "ceph.conf" : o.conf, rerr(rc));
    const std::string t = std::to_string(o.timeout_s), ct = std::to_string(o.connect_timeout_s);
    for (auto [k, v] : {std::pair{"rados_osd_op_timeout", t.c_str()}, {"rados_mon_op_timeout", t.c_str()},
                        {"client_mount_timeout", ct.c_str()}}) {
        rc = rados_conf_set(cluster, k, v);
        if (rc < 0) return make_error(Errc::kSystem, "{}: setting {}: {}", name, k, rerr(rc));
    }
    rc = rados_connect(cluster);
    if (rc < 0) return make_error(Errc::kSystem, "{}: cannot connect to the cluster: {}", name, rerr(rc));
    rados_ioctx_t io = nullptr;
    rc = rados_ioctx_create(cluster, o.pool.c_str(), &io);
    if (rc < 0) return make_error(Errc::kSystem, "{}: pool '{}': {}", name, o.pool, rerr(rc));
    b->ioctx_ = io;
    rbd_image_t img = nullptr;
    const bool ro = o.readonly || !o.snap.empty();
    const char* snap = o.snap.empty() ? nullptr : o.snap.c_str();
    rc = ro ? rbd_open_read_only(io, o.image.c_str(), &img, snap) : rbd_open(io, o.image.c_str(), &img, snap);
    if (rc < 0) return make_error(Errc::kSystem, "{}: cannot open the image: {}", name, rerr(rc));
    b->image_ = img;
    uint64_t size = 0;
    rc = rbd_get_size(img, &size);
    if (rc < 0) return make_error(Errc::kSystem, "{}: size: {}", name, rerr(rc));
    BlockInfo& in = b->info_;
    in.block_size = o.block_size != 0 ? o.block_size : 512;
    if (in.block_size != 512 && in.block_size != 4096)
        return make_error(Errc::kInvalid, "block-size must be 512 or 4096, not {}", in.block_size);
    in.size_bytes = size / in.block_size * in.block_size;
    if (in.size_bytes == 0) return make_error(Errc::kInvalid, "{}: the image is empty", name);
    in.readonly = ro;
    in.discard = !ro;
    in.write_zeroes = !ro;
    in.description = fmt::format("{}{}, timeout {} s", name, ro ? " read-only" : "", o.timeout_s);
    return b;
}

RbdBackend::~RbdBackend() {
    // Waits for a callback under way; none comes after it.
    if (watching_) rbd_update_unwatch(static_cast<rbd_image_t>(image_), watch_handle_);
    if (image_ != nullptr) rbd_close(static_cast<rbd_image_t>(image_));
    if (ioctx_ != nullptr) rados_ioctx_destroy(static_cast<rados_ioctx_t>(ioctx_));
    if (cluster_ != nullptr) rados_shutdown(static_cast<rados_t>(cluster_));
}

Result<std::unique_ptr<BlockChannel>> RbdBackend::open_channel(Reactor& reactor, uint32_t depth) {
    UniqueFd efd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!efd.valid()) return sys_error("eventfd");
    return std::unique_ptr<BlockChannel>(
        new RbdChannel(reactor, static_cast<rbd_image_t>(image_), depth, std::move(efd)));
}

Status RbdBackend::watch_size(std::function<void()> changed) {
    if (watching_ || !changed) return ok_status();
    size_changed_ = std::move(changed);
    auto cb = [](void* arg) { static_cast<RbdBackend*>(arg)->size_changed_(); };
    int rc = rbd_update_watch(static_cast<rbd_image_t>(image_), &watch_handle_, cb, this);
    if (rc < 0) return make_error(Errc::kSystem, "rbd_update_watch: {}", rerr(rc));
    watching_ = true;
    return ok_status();
}

Result<uint64_t> RbdBackend::resize(uint64_t new_size) {
    auto* img = static_cast<rbd_image_t>(image_);
    const uint32_t bs = info_.block_size;
    if (new_size != 0) {
        if (info_.readonly) return make_error(Errc::kInvalid, "the image is open read-only");
        if (new_size % bs != 0)
            return make_error(Errc::kInvalid, "size {} must be a multiple of the block size {}", new_size, bs);
        int rc = rbd_resize(img, new_size);
        if (rc < 0) return make_error(Errc::kSystem, "rbd_resize to {}: {}", new_size, rerr(rc));
    }
    uint64_t size = 0;
    int rc = rbd_get_size(img, &size);
    if (rc < 0) return make_error(Errc::kSystem, "rbd_get_size: {}", rerr(rc));
    size = size / bs * bs;
    if (size == 0) return make_error(Errc::kInvalid, "the image has no whole block");
    info_.size_bytes = size;
    return size;
}

}  // namespace vhostd::backends
