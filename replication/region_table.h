// RegionTable: the owner's per-region write tracking (docs/replication.md, section 4), touched by
// every write of every queue, so it takes no lock and allocates nothing per write.
//
// For each region: the sequence number of the last write started on it (0: no write since the
// region last left the unstable set), whether a FLUSH that completed on every healthy replica
// covered that write, and how many writes to it are running. Writes of different queues may share
// a region (the block layer only keeps them from overlapping), hence atomics. The entry also holds
// the region's lock word (RegionLocks, region_locks.h): every write locks the regions it tracks,
// so both live on one cache line, and the word fills the entry's padding.
//
// Why a radix tree of lazily allocated leaves rather than one array sized from the volume: a
// volume may be up to 2^60 bytes (thin) and may grow while open (Resize), while the entries
// needed are only those of the regions written (or copied by a resync, which locks them). Four
// levels of 2^13 cover every region index a 64-bit offset can produce at the smallest region
// (4 KiB); a leaf (8192 regions, 128 KiB) is allocated on the first write to its range and kept
// until the volume closes, so allocation happens once per 8 GiB written to at 1 MiB regions, never
// per write. Every node keeps a bitmap of its children and every leaf one of its tracked regions,
// so listing them (every FLUSH, with every queue waiting) costs in proportion to the regions
// tracked, not to the tree.
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>

namespace unbd::replication {

class RegionTable {
 public:
  struct Entry {
    // 0, or (seq << 1) | covered: seq of the last write started, covered = a completed FLUSH
    // covered it. A newer write stores a larger value, which also clears `covered`.
    std::atomic<uint64_t> last{0};
    std::atomic<uint32_t> running{0};  // writes started and not ended
    std::atomic<uint32_t> lock{0};     // RegionLocks' word; nothing else touches it
  };
  static_assert(sizeof(Entry) == 16, "the lock word is meant to fill the padding");
  static uint64_t Seq(uint64_t last) { return last >> 1; }
  static bool Covered(uint64_t last) { return last & 1; }

  // Changes to an entry (they keep its leaf's bitmap of tracked regions up to date).
  // A write numbered `seq` starts on the region: running, and its last write unless a write of
  // another queue stored a larger number already (which also clears `covered`).
  void StartWrite(uint64_t region, uint64_t seq) {
    Leaf& leaf = LeafOf(region);
    Entry& e = leaf.e[region & kMask];
    e.running.fetch_add(1, std::memory_order_relaxed);
    const uint64_t last = seq << 1;
    uint64_t cur = e.last.load(std::memory_order_relaxed);
    while (cur < last && !e.last.compare_exchange_weak(cur, last, std::memory_order_relaxed)) {
    }
    if (cur == 0) SetBit(leaf.tracked, region & kMask);  // the CAS from 0 won
  }
  void EndWrite(uint64_t region) { At(region).running.fetch_sub(1, std::memory_order_relaxed); }
  // A flush numbered `flush_seq` completed: covers the last write if it started before.
  void Cover(uint64_t region, uint64_t flush_seq) {
    Entry& e = At(region);
    uint64_t cur = e.last.load(std::memory_order_relaxed);
    while (cur != 0 && !Covered(cur) && Seq(cur) < flush_seq &&
           !e.last.compare_exchange_weak(cur, cur | 1, std::memory_order_relaxed)) {
    }
  }
  // The replicas cleared the region after a flush numbered `flush_seq`: untracked, unless a
  // write started since.
  void Untrack(uint64_t region, uint64_t flush_seq) {
    Leaf& leaf = LeafOf(region);
    Entry& e = leaf.e[region & kMask];
    uint64_t cur = e.last.load(std::memory_order_relaxed);
    while (cur != 0 && Seq(cur) < flush_seq) {
      if (e.last.compare_exchange_weak(cur, 0, std::memory_order_relaxed)) {
        // No StartWrite of this region runs meanwhile (the caller holds its region lock).
        leaf.tracked[(region & kMask) / 64].fetch_and(~(uint64_t{1} << (region % 64)),
                                                      std::memory_order_relaxed);
        return;
      }
    }
  }

  RegionTable() = default;
  RegionTable(const RegionTable&) = delete;
  RegionTable& operator=(const RegionTable&) = delete;
  ~RegionTable() { Free(&root_, kLevels - 1); }

  // The entry of `region`; allocates its leaf the first time the range is written. Change
  // `last` only through the calls above.
  Entry& At(uint64_t region) { return LeafOf(region).e[region & kMask]; }

  // Calls f(region, entry) for every region with a tracked write (last != 0), in region order.
  template <typename F>
  void ForEachTracked(F f) const {
    Walk(&root_, kLevels - 1, 0, f);
  }

 private:
  static constexpr int kBits = 13;
  static constexpr int kLevels = 4;  // 52 bits of region index
  static constexpr uint64_t kFanout = uint64_t{1} << kBits;
  static constexpr uint64_t kMask = kFanout - 1;
  using Bitmap = std::atomic<uint64_t>[kFanout / 64];
  struct Leaf {
    Entry e[kFanout];
    Bitmap tracked = {};  // entries with last != 0
  };
  struct Node {
    std::atomic<void*> child[kFanout] = {};
    Bitmap present = {};  // children allocated
  };

  static void SetBit(Bitmap& b, uint64_t i) {
    b[i / 64].fetch_or(uint64_t{1} << (i % 64), std::memory_order_release);
  }
  // Calls f(i) for every bit set in b, in order.
  template <typename F>
  static void ForEachBit(const Bitmap& b, F f) {
    for (uint64_t w = 0; w < kFanout / 64; ++w) {
      for (uint64_t bits = b[w].load(std::memory_order_acquire); bits != 0; bits &= bits - 1)
        f(w * 64 + static_cast<uint64_t>(std::countr_zero(bits)));
    }
  }

  Leaf& LeafOf(uint64_t region) {
    Node* n = &root_;
    for (int level = kLevels - 1; level > 1; --level)
      n = static_cast<Node*>(Child(n, region, level));
    return *static_cast<Leaf*>(Child(n, region, 1));
  }

  // The child of `n` on `level`'s path to `region`, allocated if absent. Two writers may race to
  // allocate it: one wins the CAS, the other frees its copy.
  static void* Child(Node* n, uint64_t region, int level) {
    const uint64_t i = (region >> (level * kBits)) & kMask;
    std::atomic<void*>& slot = n->child[i];
    void* c = slot.load(std::memory_order_acquire);
    if (c != nullptr) return c;
    void* fresh = level == 1 ? static_cast<void*>(new Leaf()) : static_cast<void*>(new Node());
    if (slot.compare_exchange_strong(c, fresh, std::memory_order_acq_rel)) {
      SetBit(n->present, i);  // after the pointer: a walker that sees the bit sees the child
      return fresh;
    }
    if (level == 1) {
      delete static_cast<Leaf*>(fresh);
    } else {
      delete static_cast<Node*>(fresh);
    }
    return c;
  }

  template <typename F>
  static void Walk(const Node* n, int level, uint64_t base, F& f) {
    ForEachBit(n->present, [&](uint64_t i) {
      void* c = n->child[i].load(std::memory_order_acquire);
      const uint64_t first = base | (i << (level * kBits));
      if (level > 1) return Walk(static_cast<const Node*>(c), level - 1, first, f);
      Leaf* leaf = static_cast<Leaf*>(c);
      ForEachBit(leaf->tracked, [&](uint64_t k) {
        // Untrack zeroes the entry before its bit: skip one caught in between.
        if (leaf->e[k].last.load(std::memory_order_relaxed) != 0) f(first | k, leaf->e[k]);
      });
    });
  }

  static void Free(Node* n, int level) {
    for (auto& slot : n->child) {
      void* c = slot.load(std::memory_order_relaxed);
      if (c == nullptr) continue;
      if (level > 1) {
        Free(static_cast<Node*>(c), level - 1);
        delete static_cast<Node*>(c);
      } else {
        delete static_cast<Leaf*>(c);
      }
    }
  }

  // Every lookup of every queue reads the root: it starts a cache line, so that no neighbour
  // written per write (the volume's sequence counter, just before it) takes that line away.
  alignas(64) Node root_;
};

}  // namespace unbd::replication
