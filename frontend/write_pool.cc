#include "frontend/write_pool.h"

namespace unbd::frontend {

Status WritePool::Init(size_t slots, size_t slot_bytes) {
  Status s = buffers_.Allocate(slots, slot_bytes);
  if (!s.ok()) return s;
  n_ = slots;
  refs_ = std::make_unique<std::atomic<int32_t>[]>(slots);
  cookies_ = std::make_unique<CookieT[]>(slots);
  pending_.assign(slots, -1);
  for (size_t i = 0; i < slots; ++i) {
    refs_[i].store(0, std::memory_order_relaxed);
    cookies_[i] = {this, static_cast<int>(i)};
  }
  return Status::Ok();
}

uint8_t* WritePool::ReservePending(uint16_t tag, uint32_t length) {
  if (length > slot_bytes()) return nullptr;
  const int slot = Acquire();
  pending_[tag] = slot;
  return slot < 0 ? nullptr : data(slot);
}

int WritePool::Acquire() {
  for (size_t i = 0; i < n_; ++i) {
    size_t slot = cursor_;
    cursor_ = cursor_ + 1 == n_ ? 0 : cursor_ + 1;
    // Only this thread turns 0 into 1, so a plain load then store cannot race another Acquire;
    // the acquire load pairs with the release in Unref by gRPC threads.
    if (refs_[slot].load(std::memory_order_acquire) == 0) {
      refs_[slot].store(1, std::memory_order_relaxed);
      return static_cast<int>(slot);
    }
  }
  return -1;
}

uint64_t WritePool::outstanding() const {
  uint64_t n = 0;
  for (size_t i = 0; i < n_; ++i) n += static_cast<uint64_t>(refs_[i].load(std::memory_order_acquire));
  return n;
}

void WritePool::ReleaseCookie(void* cookie) {
  auto* c = static_cast<CookieT*>(cookie);
  c->pool->Unref(c->slot);
}

}  // namespace unbd::frontend
