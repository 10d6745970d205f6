// WritePool: one queue's buffers for NEED_GET_DATA writes that become the outgoing gRPC payload.
// The kernel copies a write straight into a slot; the slot is then wrapped in a grpc::Slice whose
// release callback drops a reference, so gRPC sends the very memory the kernel filled and the
// slot is reused only when both the request has completed and gRPC has let go of every slice over
// it. Acquire runs on the queue thread only; references are dropped from any thread (atomics per
// slot, nothing shared with other queues). Memory is mlocked (IoBuffers).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "common/status.h"
#include "frontend/buffer_pool.h"

namespace unbd::frontend {

class WritePool {
 public:
  Status Init(size_t slots, size_t slot_bytes);

  // A free slot with one reference (the request's), or -1 when every slot is busy.
  int Acquire();
  // The NEED_GET_DATA hand-off, per tag (< slots): a slot for the tag's write of `length` bytes,
  // kept for its Submit; nullptr (the write then lands in the tag's own buffer) when it is too
  // long or every slot is busy. TakePending: that slot, now the request's reference, or -1.
  uint8_t* ReservePending(uint16_t tag, uint32_t length);
  int TakePending(uint16_t tag) { return std::exchange(pending_[tag], -1); }
  uint8_t* data(int slot) const { return buffers_.at(static_cast<size_t>(slot)); }
  size_t slot_bytes() const { return buffers_.size(); }
  void Ref(int slot) { refs_[slot].fetch_add(1, std::memory_order_relaxed); }
  void Unref(int slot) { refs_[slot].fetch_sub(1, std::memory_order_acq_rel); }
  // References held by anyone (the requests' and gRPC's).
  uint64_t outstanding() const;

  // For grpc::Slice(ptr, len, destroy, user_data): `cookie` names pool and slot.
  void* Cookie(int slot) { return &cookies_[slot]; }
  static void ReleaseCookie(void* cookie);

 private:
  struct CookieT {
    WritePool* pool;
    int slot;
  };
  IoBuffers buffers_;
  std::unique_ptr<std::atomic<int32_t>[]> refs_;
  std::unique_ptr<CookieT[]> cookies_;
  std::vector<int> pending_;  // per tag: the slot ReservePending kept for it
  size_t n_ = 0;
  size_t cursor_ = 0;
};

}  // namespace unbd::frontend
