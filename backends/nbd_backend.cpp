#include "backends/nbd_backend.hpp"

#include <libnbd.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <cerrno>
#include <cstring>

#include "core/log.hpp"
#include "core/stats.hpp"

namespace vhostd::backends {

namespace {

// Timeouts and reconnects are checked every NbdOptions::tick_us; reconnect attempts are
// first_backoff_us apart, doubling up to this:
constexpr uint64_t kMaxBackoffNs = 2'000'000'000;
// Bytes per read/write command when the server names no maximum (the NBD spec's advice), and per
// trim/zero command (the wire's 32-bit length, kept block-aligned).
constexpr uint64_t kDefaultMaxRequest = 32u << 20;
constexpr uint64_t kMaxLengthCommand = 1u << 30;

std::string nbd_err() {
    const char* e = nbd_get_error();
    return e != nullptr ? e : "unknown libnbd error";
}

// The connection is gone (libnbd aborts what was in flight with ENOTCONN) or the server is
// shutting down: such a command is sent again after a reconnect.
bool connection_error(int e) { return e == ENOTCONN || e == ESHUTDOWN || e == ECONNRESET || e == EPIPE; }

}  // namespace

class NbdChannel;

// One request of a channel: a guest request, split into NBD commands.
struct NbdReq {
    NbdChannel* ch = nullptr;
    Completion* c = nullptr;
    BlockRequest req;
    uint64_t start_ns = 0;   // when the guest's request arrived (its timeout counts from here)
    uint64_t gen = 0;        // the connection its commands went to
    uint32_t pieces = 0;     // commands not completed yet
    int err = 0;             // the first error a command returned
    bool busy = false;
    bool lost = false;       // a command died with its connection: send it all again
    bool flushing = false;   // FUA on a server without FUA: the write is done, a flush follows
    bool waiting = false;    // on the waiting list
    bool in_done = false;    // on the done list
    NbdReq* next = nullptr;  // waiting / done list
};

// A FIFO list threaded through NbdReq::next (no allocation).
struct ReqList {
    NbdReq* head = nullptr;
    NbdReq* tail = nullptr;
    bool empty() const { return head == nullptr; }
    void push(NbdReq* r) {
        r->next = nullptr;
        if (tail != nullptr) tail->next = r;
        else head = r;
        tail = r;
    }
    NbdReq* pop() {
        NbdReq* r = head;
        if (r != nullptr) {
            head = r->next;
            if (head == nullptr) tail = nullptr;
            r->next = nullptr;
        }
        return r;
    }
};

// The connection of one reactor: an nbd_handle whose socket that reactor's io_uring polls.
class NbdConn {
public:
    NbdConn(NbdBackend& b, Reactor& r, nbd_handle* connected) : b_(b), r_(r) {
        for (auto& p : polls_) p.conn = this;
        tick_.conn = this;
        if (connected != nullptr) {
            h_ = connected;
            ++gen_;
            st_ = State::kReady;
        }
    }
    ~NbdConn() { close_handle(); }

    Reactor& reactor() const { return r_; }
    void attach(NbdChannel* ch) { channels_.push_back(ch); }
    void detach(NbdChannel* ch) { channels_.erase(std::remove(channels_.begin(), channels_.end(), ch), channels_.end()); }
    // Nothing of ours is in the kernel (polls, the tick) and no request is outstanding.
    bool quiescent() const { return outstanding_ == 0 && armed_ == 0 && !tick_.armed; }
    // Progress needs a poll: completions to deliver, or requests out with no tick armed (the SQ
    // was full). Otherwise the armed polls and the tick wake the reactor.
    bool must_poll() const { return !done_.empty() || (outstanding_ > 0 && !tick_.armed); }

    void start(NbdReq* r) {
        ++outstanding_;
        arm_tick();
        if (st_ == State::kReady && waiting_.empty()) {
            issue(r);
            after_call();
        } else {
            wait(r);
            if (st_ == State::kDown && mono_ns() >= next_attempt_ns_) connect();
        }
    }
    // Completions libnbd reported: hand them to their owners. Never called from inside libnbd.
    bool deliver();
    // The backend goes away: drop the connection and cancel what is in the kernel; the backend
    // deletes this once quiescent() (the tick is not armed again, cancelled polls complete).
    void retire() {
        retiring_ = true;
        kill("the device is removed");
        cancel_stale_polls();
    }

private:
    enum class State { kDown, kConnecting, kReady };
    struct PollOp final : Completion {
        NbdConn* conn = nullptr;
        uint64_t gen = 0;
        unsigned dir = 0;
        bool busy = false;
        void complete(int32_t res) override { conn->on_poll(*this, res); }
    };
    struct Tick final : Completion {
        NbdConn* conn = nullptr;
        bool armed = false;
        __kernel_timespec ts{};
        void complete(int32_t) override { conn->on_tick(); }
    };

    static int on_command(void* user, int* error);
    void issue(NbdReq* r);
    bool issue_one(NbdReq* r, int64_t cookie);
    void wait(NbdReq* r) {
        r->waiting = true;
        waiting_.push(r);
    }
    void push_done(NbdReq* r) {
        if (r->in_done) return;
        r->in_done = true;
        done_.push(r);
    }
    void finish(NbdReq* r, int32_t res);
    void after_call();
    void arm(unsigned dir);
    void arm_tick();
    void cancel_stale_polls();
    void on_poll(PollOp& p, int32_t res);
    void on_tick();
    void connect();
    void kill(const char* why);
    void close_handle();
    void check_timeouts(uint64_t now);
    void resend_waiting();

    NbdBackend& b_;
    Reactor& r_;
    nbd_handle* h_ = nullptr;
    uint64_t gen_ = 0;  // handles made so far; commands and polls remember theirs
    State st_ = State::kDown;
    std::vector<NbdChannel*> channels_;
    ReqList waiting_;  // for a connection (or a resend)
    ReqList done_;     // all commands completed, not delivered yet
    uint32_t outstanding_ = 0;
    PollOp polls_[8];
    unsigned armed_ = 0;      // polls in the kernel (any handle)
    unsigned armed_dir_ = 0;  // directions polled for the current handle
    Tick tick_;
    uint64_t first_backoff_ns() const { return uint64_t{b_.opts_.first_backoff_us} * 1000; }
    uint64_t backoff_ns_ = first_backoff_ns();
    uint64_t next_attempt_ns_ = 0;  // no reconnect attempt before this (back-off)
    uint64_t down_since_ns_ = 0;
    bool retiring_ = false;
    bool in_close_ = false;
    bool delivering_ = false;
};

class NbdChannel final : public BlockChannel {
public:
    NbdChannel(NbdConn& conn, uint32_t depth) : conn_(conn), reqs_(depth) {
        free_.reserve(depth);
        for (auto& r : reqs_) {
            r.ch = this;
            free_.push_back(&r);
        }
        conn_.attach(this);
    }
    // The connection stays for the backend's life (a queue that stops and starts again, as on a
    // guest reboot, finds it; a server that allows one client keeps it).
    ~NbdChannel() override { conn_.detach(this); }

    bool ready() override { return !free_.empty(); }
    Status submit(const BlockRequest& q, Completion* c) override {
        if (is_zone_op(q.op)) return make_error(Errc::kUnsupported, "zone commands need a zoned backend");
        if (free_.empty()) return make_error(Errc::kBusy, "all request slots in use");
        NbdReq* r = free_.back();
        free_.pop_back();
        r->c = c;
        r->req = q;
        r->start_ns = conn_.reactor().now_ns();  // the pass's clock: a clock read per request cost ~10 % here
        r->busy = true;
        ++busy_;
        conn_.start(r);
        return ok_status();
    }
    bool poll() override { return conn_.deliver(); }
    bool idle() const override { return busy_ == 0; }
    bool must_poll() const override { return conn_.must_poll(); }

    void put(NbdReq* r) {
        r->busy = false;
        r->lost = r->flushing = r->waiting = r->in_done = false;
        r->err = 0;
        r->pieces = 0;
        --busy_;
        free_.push_back(r);
    }
    std::vector<NbdReq>& reqs() { return reqs_; }
    NbdConn& conn() { return conn_; }

private:
    NbdConn& conn_;
    std::vector<NbdReq> reqs_;
    std::vector<NbdReq*> free_;
    uint32_t busy_ = 0;
};

// ---- NbdConn ------------------------------------------------------------------------------------

int NbdConn::on_command(void* user, int* error) {
    // Called by libnbd with its handle locked: no nbd_* call and no completion to the device here.
    auto* r = static_cast<NbdReq*>(user);
    NbdConn& c = r->ch->conn();
    if (c.in_close_) return 1;  // nbd_close frees commands without us: the sweep in close_handle
    if (*error != 0) {
        if (connection_error(*error)) r->lost = true;
        else if (r->err == 0) r->err = *error;
    }
    if (r->pieces > 0 && --r->pieces == 0) c.push_done(r);
    return 1;  // retire the command
}

// Sends r's commands (a write with FUA and no server FUA: the flush, once the write is done).
void NbdConn::issue(NbdReq* r) {
    r->gen = gen_;
    r->lost = false;
    // A guard piece while the commands go out: libnbd may call back during a call (a command
    // aborted as the connection dies), and r must not count as done before all were sent.
    r->pieces = 1;
    const BlockRequest& q = r->req;
    const auto& caps = b_.caps();
    // One command per call: nbd_aio_* returns -1 without calling back (libnbd 1.14: the
    // callback is called only for a queued command).
    auto send = [&](auto&& call) -> bool {
        ++r->pieces;
        int64_t cookie = call();
        return issue_one(r, cookie);
    };
    nbd_completion_callback cb{.callback = &NbdConn::on_command, .user_data = r, .free = nullptr};
    bool ok = true;
    if (r->flushing) {
        ok = send([&] { return nbd_aio_flush(h_, cb, 0); });
    } else {
        switch (q.op) {
            case BlockOp::kRead:
            case BlockOp::kWrite: {
                const bool write = q.op == BlockOp::kWrite;
                const uint32_t flags = write && q.fua && caps.fua ? LIBNBD_CMD_FLAG_FUA : 0;
                uint64_t off = q.offset;
                for (unsigned i = 0; ok && i < q.iovcnt; ++i) {
                    auto* base = static_cast<uint8_t*>(q.iov[i].iov_base);
                    size_t len = q.iov[i].iov_len;
                    for (size_t done = 0; ok && done < len;) {
                        size_t n = std::min<uint64_t>(len - done, caps.max_request);
                        ok = send([&] {
                            return write ? nbd_aio_pwrite(h_, base + done, n, off, cb, flags)
                                         : nbd_aio_pread(h_, base + done, n, off, cb, 0);
                        });
                        done += n;
                        off += n;
                    }
                }
                break;
            }
            case BlockOp::kFlush:
                if (caps.flush) ok = send([&] { return nbd_aio_flush(h_, cb, 0); });
                break;
            case BlockOp::kDiscard:
            case BlockOp::kWriteZeroes:
            case BlockOp::kWriteZeroesUnmap: {
                const bool trim = q.op == BlockOp::kDiscard;
                if (trim ? !caps.trim : !caps.zero) {
                    r->err = EOPNOTSUPP;
                    break;
                }
                const uint32_t flags = q.op == BlockOp::kWriteZeroes ? LIBNBD_CMD_FLAG_NO_HOLE : 0;
                for (uint64_t done = 0; ok && done < q.len;) {
                    uint64_t n = std::min(q.len - done, kMaxLengthCommand);
                    uint64_t off = q.offset + done;
                    ok = send([&] {
                        return trim ? nbd_aio_trim(h_, n, off, cb, 0) : nbd_aio_zero(h_, n, off, cb, flags);
                    });
                    done += n;
                }
                break;
            }
            VHOSTD_CASE_ZONE_OPS:
                break;  // refused in submit()
        }
    }
    (void)ok;
    if (--r->pieces == 0) push_done(r);  // nothing in flight any more: the next deliver() has it
}

// The result of one nbd_aio_* call for r; false stops r's issuing.
bool NbdConn::issue_one(NbdReq* r, int64_t cookie) {
    if (cookie >= 0) return true;
    --r->pieces;  // not queued: no callback will come for it
    int e = nbd_get_errno();
    if (nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_) || connection_error(e)) {
        r->lost = true;
    } else {
        if (r->err == 0) r->err = e != 0 ? e : EIO;
        VLOG_LIMITED(b_.log_limit_, log_at(b_.opts_.uri), warn, "nbd {}: a command was refused: {}", b_.opts_.uri, nbd_err());
    }
    return false;
}

bool NbdConn::deliver() {
    if (delivering_ || done_.empty()) return false;
    delivering_ = true;
    bool any = false;
    // Bounded: each request is on the list at most once per round, and a round ends when the
    // list is empty (completions that submit again add to it; those are new requests).
    for (NbdReq* r = done_.pop(); r != nullptr; r = done_.pop()) {
        r->in_done = false;
        any = true;
        if (r->lost) {
            wait(r);  // its connection died: all of it again, once there is one
            continue;
        }
        if (r->err == 0 && !r->flushing && r->req.op == BlockOp::kWrite && r->req.fua && !b_.caps().fua &&
            b_.caps().flush) {
            r->flushing = true;  // the write is done; make it durable before the guest hears of it
            if (st_ == State::kReady) {
                issue(r);
                after_call();
            } else {
                wait(r);
            }
            continue;
        }
        int32_t res = 0;
        if (r->err != 0) res = -r->err;
        else if (r->req.op == BlockOp::kRead || r->req.op == BlockOp::kWrite) {
            uint64_t total = 0;
            for (unsigned i = 0; i < r->req.iovcnt; ++i) total += r->req.iov[i].iov_len;
            res = static_cast<int32_t>(total);
        }
        finish(r, res);
    }
    delivering_ = false;
    return any;
}

void NbdConn::finish(NbdReq* r, int32_t res) {
    Completion* c = r->c;
    r->ch->put(r);
    --outstanding_;
    c->complete(res);
}

// After any libnbd call that may have moved its state machine.
void NbdConn::after_call() {
    if (h_ == nullptr) return;
    if (nbd_aio_is_dead(h_) || nbd_aio_is_closed(h_)) {
        VLOG_LIMITED(b_.log_limit_, log_at(b_.opts_.uri), warn, "nbd {}: connection lost: {}", b_.opts_.uri, nbd_err());
        close_handle();
        st_ = State::kDown;
        down_since_ns_ = mono_ns();
        next_attempt_ns_ = mono_ns() + backoff_ns_;
        return;
    }
    if (st_ == State::kConnecting && nbd_aio_is_ready(h_)) {
        int64_t size = nbd_get_size(h_);
        if (size < 0 || static_cast<uint64_t>(size) < b_.info_.size_bytes) {
            VLOG_LIMITED(b_.log_limit_, log_at(b_.opts_.uri), error,
                         "nbd {}: the export is {} bytes now, {} when the device was added: not using it",
                         b_.opts_.uri, size, b_.info_.size_bytes);
            kill("the export shrank");
            return;
        }
        st_ = State::kReady;
        backoff_ns_ = first_backoff_ns();
        if (down_since_ns_ != 0)
            VLOG_INFO("nbd {}: connected again after {} ms", b_.opts_.uri, (mono_ns() - down_since_ns_) / 1'000'000);
        down_since_ns_ = 0;
        resend_waiting();
        if (h_ == nullptr) return;
    }
    unsigned dir = nbd_aio_get_direction(h_);
    // Replies are only read while something is in flight (or the handshake runs): an idle
    // connection leaves nothing in the kernel; a server that went away is found at the next
    // request.
    if (st_ == State::kConnecting || nbd_aio_in_flight(h_) > 0) dir |= LIBNBD_AIO_DIRECTION_READ;
    else dir &= ~LIBNBD_AIO_DIRECTION_READ;
    if (st_ == State::kReady && nbd_aio_in_flight(h_) == 0) dir &= ~LIBNBD_AIO_DIRECTION_WRITE;
    arm(dir & ~armed_dir_);
}

void NbdConn::resend_waiting() {
    ReqList batch = waiting_;
    waiting_ = {};
    for (NbdReq* r = batch.pop(); r != nullptr; r = batch.pop()) {
        r->waiting = false;
        if (st_ != State::kReady) {
            wait(r);
            continue;
        }
        issue(r);
    }
}

void NbdConn::arm(unsigned dir) {
    for (unsigned bit : {LIBNBD_AIO_DIRECTION_READ, LIBNBD_AIO_DIRECTION_WRITE}) {
        if ((dir & bit) == 0) continue;
        PollOp* p = nullptr;
        for (auto& op : polls_) {
            if (!op.busy) {
                p = &op;
                break;
            }
        }
        io_uring_sqe* sqe = p != nullptr ? r_.get_sqe() : nullptr;
        if (sqe == nullptr) return;  // the tick tries again
        p->busy = true;
        p->gen = gen_;
        p->dir = bit;
        io_uring_prep_poll_add(sqe, nbd_aio_get_fd(h_), bit == LIBNBD_AIO_DIRECTION_READ ? POLLIN : POLLOUT);
        io_uring_sqe_set_data(sqe, static_cast<Completion*>(p));
        ++armed_;
        armed_dir_ |= bit;
    }
}

void NbdConn::arm_tick() {
    if (tick_.armed) return;
    io_uring_sqe* sqe = r_.get_sqe();
    if (sqe == nullptr) return;  // the next start() or poll completion tries again
    const uint64_t tick_ns = std::max<uint64_t>(uint64_t{b_.opts_.tick_us} * 1000, 1000);
    tick_.ts.tv_sec = static_cast<long long>(tick_ns / 1'000'000'000);
    tick_.ts.tv_nsec = static_cast<long long>(tick_ns % 1'000'000'000);
    io_uring_prep_timeout(sqe, &tick_.ts, 0, 0);
    io_uring_sqe_set_data(sqe, static_cast<Completion*>(&tick_));
    tick_.armed = true;
}

// Polls still in the kernel for a handle that is gone: cancel them (they complete -ECANCELED),
// so its socket is really closed and nothing of ours stays behind.
void NbdConn::cancel_stale_polls() {
    for (auto& p : polls_) {
        if (!p.busy || p.gen == gen_) continue;
        io_uring_sqe* sqe = r_.get_sqe();
        if (sqe == nullptr) return;
        io_uring_prep_cancel(sqe, static_cast<Completion*>(&p), 0);
        io_uring_sqe_set_data(sqe, nullptr);
    }
}

void NbdConn::on_poll(PollOp& p, int32_t res) {
    p.busy = false;
    --armed_;
    if (p.gen != gen_ || h_ == nullptr) return;  // a poll of a handle that is gone
    armed_dir_ &= ~p.dir;
    if (res >= 0 || res == -EINTR) {
        int rc = p.dir == LIBNBD_AIO_DIRECTION_READ ? nbd_aio_notify_read(h_) : nbd_aio_notify_write(h_);
        (void)rc;  // a failure shows as a dead handle in after_call
    }
    after_call();
    deliver();
}

void NbdConn::on_tick() {
    tick_.armed = false;
    uint64_t now = mono_ns();
    if (retiring_) return;
    check_timeouts(now);
    if (st_ == State::kDown && !waiting_.empty() && now >= next_attempt_ns_) connect();
    else if (st_ == State::kReady && !waiting_.empty()) {
        resend_waiting();  // e.g. the server said ESHUTDOWN but kept the connection
        after_call();
    } else if (h_ != nullptr) {
        after_call();  // a poll that found no SQE last time
    }
    deliver();
    cancel_stale_polls();
    if (outstanding_ > 0) arm_tick();
}

void NbdConn::check_timeouts(uint64_t now) {
    const uint64_t limit = static_cast<uint64_t>(b_.opts_.timeout_s) * 1'000'000'000ull;
    if (limit == 0) return;
    // Waiting requests past their time fail now.
    ReqList keep;
    for (NbdReq* r = waiting_.pop(); r != nullptr; r = waiting_.pop()) {
        if (now - r->start_ns >= limit) {
            r->waiting = false;
            r->lost = false;
            if (r->err == 0) r->err = EIO;
            push_done(r);
            VLOG_LIMITED(b_.log_limit_, log_at(b_.opts_.uri), error, "nbd {}: a request failed after {} s without the server",
                         b_.opts_.uri, b_.opts_.timeout_s);
        } else {
            keep.push(r);
        }
    }
    waiting_ = keep;
    // A request in flight past its time: the server does not answer. Its buffer may still be
    // written by a late reply, so the connection goes (that aborts its commands; they come back
    // as lost, and having run out of time, fail at the next tick).
    if (h_ == nullptr) return;
    for (NbdChannel* ch : channels_) {
        for (auto& r : ch->reqs()) {
            if (r.busy && !r.waiting && r.pieces > 0 && r.gen == gen_ && now - r.start_ns >= limit) {
                kill("a request got no reply in time");
                return;
            }
        }
    }
}

void NbdConn::connect() {
    auto h = b_.new_handle();
    if (!h.ok()) {
        VLOG_LIMITED(b_.log_limit_, log_at(b_.opts_.uri), error, "nbd {}: {}", b_.opts_.uri, h.error().describe());
        next_attempt_ns_ = mono_ns() + backoff_ns_;
        return;
    }
    h_ = *h;
    ++gen_;
    armed_dir_ = 0;
    st_ = State::kConnecting;
    backoff_ns_ = std::min(backoff_ns_ * 2, kMaxBackoffNs);
    if (nbd_aio_connect_uri(h_, b_.opts_.uri.c_str()) == -1) {
        VLOG_LIMITED(b_.log_limit_, log_at(b_.opts_.uri), warn, "nbd {}: cannot connect: {}", b_.opts_.uri, nbd_err());
        close_handle();
        st_ = State::kDown;
        next_attempt_ns_ = mono_ns() + backoff_ns_;
        return;
    }
    after_call();
}

// Takes the connection down: its commands are aborted (they come back lost and wait for the
// next connection, or fail when out of time).
void NbdConn::kill(const char* why) {
    if (h_ == nullptr) return;
    VLOG_LIMITED(b_.log_limit_, log_at(b_.opts_.uri), warn, "nbd {}: dropping the connection: {}", b_.opts_.uri, why);
    int fd = nbd_aio_get_fd(h_);
    if (fd >= 0) {
        ::shutdown(fd, SHUT_RDWR);
        // The state machine sees the end of the socket and enters DEAD: that aborts the
        // commands in flight through their callbacks.
        if (nbd_aio_get_direction(h_) & LIBNBD_AIO_DIRECTION_READ) nbd_aio_notify_read(h_);
        else nbd_aio_notify_write(h_);
    }
    close_handle();
    st_ = State::kDown;
    if (down_since_ns_ == 0) down_since_ns_ = mono_ns();
    next_attempt_ns_ = mono_ns() + backoff_ns_;
    cancel_stale_polls();
}

void NbdConn::close_handle() {
    if (h_ == nullptr) return;
    in_close_ = true;
    nbd_close(h_);
    in_close_ = false;
    h_ = nullptr;
    ++gen_;  // polls of the old handle are stale from here
    armed_dir_ = 0;
    // Commands libnbd dropped without calling back (it calls back for everything it aborts; this
    // is a safety net): they were sent on a handle that no longer exists.
    for (NbdChannel* ch : channels_) {
        for (auto& r : ch->reqs()) {
            if (r.busy && !r.waiting && r.pieces > 0 && r.gen + 1 == gen_) {
                r.pieces = 0;
                r.lost = true;
                push_done(&r);
            }
        }
    }
}

// ---- NbdBackend ---------------------------------------------------------------------------------

Result<nbd_handle*> NbdBackend::new_handle() const {
    nbd_handle* h = nbd_create();
    if (h == nullptr) return make_error(Errc::kSystem, "nbd_create: {}", nbd_err());
    // The guest's buffers are its own memory: no need for libnbd to zero them before a read (a
    // server that sends less than asked for fails the read).
    if (nbd_set_pread_initialize(h, false) == -1 || nbd_set_handle_name(h, "vhostd") == -1 ||
        nbd_set_uri_allow_local_file(h, true) == -1) {
        std::string e = nbd_err();
        nbd_close(h);
        return make_error(Errc::kSystem, "configuring the libnbd handle: {}", e);
    }
    return h;
}

Result<std::unique_ptr<NbdBackend>> NbdBackend::open(const NbdOptions& o) {
    if (o.uri.empty()) return make_error(Errc::kInvalid, "backend=nbd needs uri=");
    if (o.timeout_s > NbdOptions::kMaxTimeout)
        return make_error(Errc::kInvalid, "timeout={} must be 0..{} seconds", o.timeout_s, NbdOptions::kMaxTimeout);
    auto b = std::unique_ptr<NbdBackend>(new NbdBackend());
    b->opts_ = o;
    VHOSTD_ASSIGN_OR_RETURN(nbd_handle * h, b->new_handle());
    auto fail = [&](const std::string& what) {
        std::string e = nbd_err();
        nbd_close(h);
        return make_error(Errc::kSystem, "nbd {}: {}: {}", o.uri, what, e);
    };
    if (nbd_supports_uri(h) != 1) {
        nbd_close(h);
        return make_error(Errc::kUnsupported, "this libnbd cannot parse NBD URIs");
    }
    // The first connection, made here with a deadline (the control thread waits; reactors do not).
    if (nbd_aio_connect_uri(h, o.uri.c_str()) == -1) return fail("cannot connect");
    const uint64_t deadline = mono_ns() + static_cast<uint64_t>(o.connect_timeout_s) * 1'000'000'000ull;
    while (nbd_aio_is_connecting(h) == 1) {
        uint64_t now = mono_ns();
        if (now >= deadline) {
            nbd_close(h);
            return make_error(Errc::kSystem, "nbd {}: no connection within {} s", o.uri, o.connect_timeout_s);
        }
        pollfd pfd{nbd_aio_get_fd(h), 0, 0};
        unsigned dir = nbd_aio_get_direction(h);
        if (dir & LIBNBD_AIO_DIRECTION_READ) pfd.events |= POLLIN;
        if (dir & LIBNBD_AIO_DIRECTION_WRITE) pfd.events |= POLLOUT;
        int n = ::poll(&pfd, 1, static_cast<int>(std::min<uint64_t>((deadline - now) / 1'000'000 + 1, 1000)));
        if (n < 0 && errno != EINTR) return fail("poll");
        if (n > 0) {
            int rc = (pfd.revents & (POLLIN | POLLHUP | POLLERR)) && (dir & LIBNBD_AIO_DIRECTION_READ)
                         ? nbd_aio_notify_read(h)
                         : nbd_aio_notify_write(h);
            if (rc == -1) return fail("handshake");
        }
    }
    if (nbd_aio_is_ready(h) != 1) return fail("handshake");
    int64_t size = nbd_get_size(h);
    if (size < 0) return fail("export size");
    int64_t min_block = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    int64_t max_block = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    Caps& c = b->caps_;
    c.multi_conn = nbd_can_multi_conn(h) == 1;
    c.fua = nbd_can_fua(h) == 1;
    c.flush = nbd_can_flush(h) == 1;
    c.trim = nbd_can_trim(h) == 1;
    c.zero = nbd_can_zero(h) == 1;
    bool server_ro = nbd_is_read_only(h) == 1;
    BlockInfo& in = b->info_;
    uint32_t bs = o.block_size != 0 ? o.block_size : (min_block > 512 ? static_cast<uint32_t>(min_block) : 512);
    if (bs != 512 && bs != 4096) {
        nbd_close(h);
        return make_error(Errc::kInvalid, "nbd {}: block size {} (the server's minimum is {}): 512 or 4096 only", o.uri,
                          bs, min_block);
    }
    if (min_block > 0 && bs < static_cast<uint64_t>(min_block)) {
        nbd_close(h);
        return make_error(Errc::kInvalid, "nbd {}: block-size={} is below the server's minimum {}", o.uri, bs,
                          min_block);
    }
    c.max_request = max_block > 0 ? std::min<uint64_t>(static_cast<uint64_t>(max_block), kDefaultMaxRequest)
                                   : kDefaultMaxRequest;
    c.max_request = std::max<uint64_t>(c.max_request / bs * bs, bs);
    in.block_size = bs;
    in.size_bytes = static_cast<uint64_t>(size) / bs * bs;
    if (in.size_bytes == 0) {
        nbd_close(h);
        return make_error(Errc::kInvalid, "nbd {}: the export has no whole {}-byte block", o.uri, bs);
    }
    in.readonly = o.readonly || server_ro;
    in.discard = !in.readonly && c.trim;
    in.write_zeroes = !in.readonly && c.zero;
    b->multi_conn_ = c.multi_conn;
    std::string caps;
    for (auto [on, name] : {std::pair{c.multi_conn, "multi-conn"}, {c.fua, "fua"}, {c.flush, "flush"},
                            {c.trim, "trim"}, {c.zero, "zero"}}) {
        if (on) caps += fmt::format("{}{}", caps.empty() ? "" : ",", name);
    }
    in.description = fmt::format("nbd '{}' ({}{}{})", o.uri, caps.empty() ? "-" : caps,
                                 nbd_get_tls_negotiated(h) == 1 ? ", TLS" : "", in.readonly ? ", read-only" : "");
    if (server_ro && !o.readonly) VLOG_INFO("nbd {}: the server exports it read-only", o.uri);
    b->spare_ = h;
    return b;
}

NbdBackend::~NbdBackend() {
    // Devices are stopped before their backend goes: no request is outstanding. Each connection
    // is dropped on its own reactor.
    std::vector<NbdConn*> conns;
    {
        std::lock_guard lk(mu_);
        conns.swap(conns_);
    }
    for (NbdConn* c : conns) {
        c->reactor().run_sync([c] { c->retire(); });
        // Cancelled polls and the last tick complete within a reactor pass or two (the tick
        // within 100 ms); the control thread waits for that, bounded.
        bool gone = false;
        for (int i = 0; i < 500 && !gone; ++i) {
            c->reactor().run_sync([&] {
                if (c->quiescent()) {
                    delete c;
                    gone = true;
                }
            });
            if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (!gone) VLOG_ERROR("nbd {}: a connection did not wind down in 2.5 s; leaving it", opts_.uri);
    }
    if (spare_ != nullptr) nbd_close(spare_);
}

Result<std::unique_ptr<BlockChannel>> NbdBackend::open_channel(Reactor& reactor, uint32_t depth) {
    NbdConn* conn = nullptr;
    {
        std::lock_guard lk(mu_);
        for (NbdConn* c : conns_) {
            if (&c->reactor() == &reactor) conn = c;
        }
        if (conn == nullptr) {
            if (!multi_conn_ && !conns_.empty())
                return make_error(Errc::kState,
                                  "nbd {}: the server does not offer multi-conn, so all queues must be on one reactor",
                                  opts_.uri);
            conn = new NbdConn(*this, reactor, std::exchange(spare_, nullptr));
            conns_.push_back(conn);
        }
    }
    return std::unique_ptr<BlockChannel>(new NbdChannel(*conn, depth));
}

}  // namespace vhostd::backends
