// A lock-free list many threads push onto and one thread takes everything from, oldest first:
// completions handed from a library's or a helper's thread back to a reactor. T has a
// `std::atomic<T*> next` member; the list never allocates.
#pragma once

#include <atomic>

namespace vhostd {

template <typename T>
class MpscList {
public:
    // Any thread. True if the list was empty (the consumer may be asleep: wake it).
    bool push(T* n) {
        T* head = head_.load(std::memory_order_relaxed);
        do {
            n->next.store(head, std::memory_order_relaxed);
        } while (!head_.compare_exchange_weak(head, n, std::memory_order_release, std::memory_order_relaxed));
        return head == nullptr;
    }
    // The consumer: everything pushed so far, oldest first (linked through `next`).
    T* take_all() {
        T* n = head_.exchange(nullptr, std::memory_order_acquire);
        T* fifo = nullptr;
        while (n != nullptr) {
            T* next = n->next.load(std::memory_order_relaxed);
            n->next.store(fifo, std::memory_order_relaxed);
            fifo = n;
            n = next;
        }
        return fifo;
    }
    bool empty() const { return head_.load(std::memory_order_relaxed) == nullptr; }

private:
    std::atomic<T*> head_{nullptr};
};

}  // namespace vhostd
