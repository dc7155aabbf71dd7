// What every device whose queues run on reactors shares: the vhost layer's queue lifecycle
// (start, stop with drain, call fd swaps, memory swaps) forwarded to the device's QueueWorkers.
// A device registers its workers in vring order and owns them; it overrides a call only to add
// its own work around the forwarding (virtio-net attaches its backend queue on start).
#pragma once

#include <memory>
#include <vector>

#include "virtio/device.hpp"
#include "virtio/queue_worker.hpp"

namespace vhostd::virtio {

class QueuedDevice : public VirtioDevice {
public:
    uint32_t num_queues() const override { return static_cast<uint32_t>(workers_.size()); }
    Status start_queue(uint32_t index, QueueStart&& start) override { return queue(index).start(std::move(start)); }
    uint32_t stop_queue(uint32_t index) override { return queue(index).stop(); }
    bool queue_running(uint32_t index) const override { return queue(index).running(); }
    void set_call_fd(uint32_t index, int fd) override { queue(index).set_call(fd); }
    void set_logging(uint32_t index, LogSettings log) override { queue(index).set_logging(std::move(log)); }
    // Every queue drains and switches; the first error is returned, the other queues still switch.
    Status set_memory(std::shared_ptr<const shm::MemoryMap> mem) override {
        Status result;
        for (QueueWorker* q : workers_) {
            Status st = q->set_memory(mem);
            if (!st.ok() && result.ok()) result = std::move(st);
        }
        return result;
    }

    // Every running queue drains the requests it holds and goes on (see QueueWorker::quiesce).
    Status quiesce_queues() {
        Status result;
        for (QueueWorker* q : workers_) {
            Status st = q->quiesce();
            if (!st.ok() && result.ok()) result = std::move(st);
        }
        return result;
    }

protected:
    // Vring `num_queues()` is `w` (the device keeps it alive as long as the device lives).
    void add_queue(QueueWorker& w) { workers_.push_back(&w); }
    QueueWorker& queue(uint32_t index) const { return *workers_.at(index); }
    // For the device's destructor, while its workers still exist: stops (drains) every queue.
    void stop_all_queues() {
        for (uint32_t i = 0; i < num_queues(); ++i) stop_queue(i);
    }

private:
    std::vector<QueueWorker*> workers_;
};

}  // namespace vhostd::virtio
