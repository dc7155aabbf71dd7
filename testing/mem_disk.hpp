// A pool member in memory, for tests and fuzzing: sparse (4 KiB pages made on first write),
// shared between Disk objects (an "after the crash" import opens the same image), and able to
// die at a chosen write, as a machine losing power would: each write since the last flush,
// that one included, independently lands whole, not at all, or torn (some of its 512-byte
// sectors old, and the crashing write maybe with a sector of garbage after what landed), in
// any order; every later write and flush fails.
#pragma once

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "pool/disk.hpp"

namespace vhostd::testing {

struct CrashPlan {
    uint64_t writes = 0;       // writes so far, over every disk sharing this plan
    uint64_t crash_at = 0;     // the write that tears (1-based); 0: never
    bool crashed = false;
    std::mt19937_64 rng{1};
    // When set, the fate of unflushed write i (0: the oldest) of n: 0 kept, 1 lost, 2 torn.
    std::function<int(size_t i, size_t n)> fate;
};

class MemImage {
public:
    explicit MemImage(uint64_t size) : size_(size) {}
    uint64_t size() const { return size_; }
    void read(uint64_t off, uint8_t* dst, size_t len) const {
        while (len > 0) {
            uint64_t page = off / kPage, in = off % kPage;
            size_t n = std::min<size_t>(len, kPage - in);
            auto it = pages_.find(page);
            if (it == pages_.end()) {
                std::memset(dst, 0, n);
            } else {
                std::memcpy(dst, it->second.data() + in, n);
            }
            dst += n;
            off += n;
            len -= n;
        }
    }
    void write(uint64_t off, const uint8_t* src, size_t len) {
        while (len > 0) {
            uint64_t page = off / kPage, in = off % kPage;
            size_t n = std::min<size_t>(len, kPage - in);
            auto& p = pages_[page];
            if (p.empty()) p.assign(kPage, 0);
            std::memcpy(p.data() + in, src, n);
            src += n;
            off += n;
            len -= n;
        }
    }

private:
    static constexpr uint64_t kPage = 4096;
    uint64_t size_;
    std::unordered_map<uint64_t, std::vector<uint8_t>> pages_;
};

class MemDisk : public pool::Disk {
public:
    MemDisk(std::shared_ptr<MemImage> img, std::string path, std::shared_ptr<CrashPlan> plan = nullptr)
        : img_(std::move(img)), path_(std::move(path)), plan_(std::move(plan)) {}
    Status read(uint64_t off, void* buf, size_t len) override {
        if (off > img_->size() || len > img_->size() - off) return make_error(Errc::kOutOfRange, "read past the end");
        img_->read(off, static_cast<uint8_t*>(buf), len);
        return ok_status();
    }
    Status write(uint64_t off, const void* buf, size_t len) override {
        if (off > img_->size() || len > img_->size() - off) return make_error(Errc::kOutOfRange, "write past the end");
        auto* p = static_cast<const uint8_t*>(buf);
        if (plan_) {
            if (plan_->crashed) return sys_error_code(EIO, "crashed");
            Undo u{off, std::vector<uint8_t>(len)};
            img_->read(off, u.old.data(), len);
            img_->write(off, p, len);
            pending_.push_back(std::move(u));
            if (++plan_->writes == plan_->crash_at) {
                plan_->crashed = true;
                lose_unflushed();
                return sys_error_code(EIO, "crashed while writing");
            }
            return ok_status();
        }
        img_->write(off, p, len);
        return ok_status();
    }
    Status sync() override {
        if (plan_ && plan_->crashed) return sys_error_code(EIO, "crashed");
        pending_.clear();
        return ok_status();
    }
    uint64_t size() const override { return img_->size(); }
    const std::string& path() const override { return path_; }

private:
    struct Undo {
        uint64_t off;
        std::vector<uint8_t> old;
    };
    // Newest first, each unflushed write: kept, undone, or torn (sectors undone at random).
    void lose_unflushed() {
        for (size_t i = pending_.size(); i-- > 0;) {
            Undo& u = pending_[i];
            uint64_t fate = plan_->fate ? static_cast<uint64_t>(plan_->fate(i, pending_.size())) : plan_->rng() % 3;
            if (fate == 0) continue;
            for (size_t s = 0; s < u.old.size(); s += 512) {
                if (fate == 1 || (plan_->rng() & 1)) {
                    img_->write(u.off + s, u.old.data() + s, std::min<size_t>(512, u.old.size() - s));
                }
            }
            if (i + 1 == pending_.size() && fate == 2 && u.old.size() >= 512 && (plan_->rng() & 1)) {
                uint8_t junk[512];
                for (auto& b : junk) b = static_cast<uint8_t>(plan_->rng());
                img_->write(u.off + (plan_->rng() % (u.old.size() / 512)) * 512, junk, 512);
            }
        }
        pending_.clear();
    }
    std::shared_ptr<MemImage> img_;
    std::string path_;
    std::shared_ptr<CrashPlan> plan_;
    std::vector<Undo> pending_;
};

}  // namespace vhostd::testing
