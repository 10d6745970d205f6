// VolumeLocks: at most one operation per volume at a time. CSI wants a second call on a volume
// that is busy to fail fast with ABORTED (the CO retries), not to queue behind the first.
#pragma once

#include <mutex>
#include <set>
#include <string>

namespace unbd::csi {

class VolumeLocks {
 public:
  class Guard {
   public:
    Guard() = default;
    Guard(VolumeLocks* locks, std::string id) : locks_(locks), id_(std::move(id)) {}
    Guard(Guard&& o) noexcept : locks_(o.locks_), id_(std::move(o.id_)) { o.locks_ = nullptr; }
    Guard& operator=(Guard&&) = delete;
    ~Guard() {
      if (locks_) locks_->Release(id_);
    }
    bool held() const { return locks_ != nullptr; }

   private:
    VolumeLocks* locks_ = nullptr;
    std::string id_;
  };

  // An unheld Guard when another operation holds `id`.
  Guard TryLock(const std::string& id) {
    std::lock_guard<std::mutex> l(mu_);
    if (!held_.insert(id).second) return Guard();
    return Guard(this, id);
  }

 private:
  void Release(const std::string& id) {
    std::lock_guard<std::mutex> l(mu_);
    held_.erase(id);
  }
  std::mutex mu_;
  std::set<std::string> held_;
};

}  // namespace unbd::csi
