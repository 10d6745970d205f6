#include "frontend/queue.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <immintrin.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

namespace unbd::frontend {

namespace {
// user_data layout: bits 0-15 tag, 16-23 kind, 24-31 target sub-op (see TargetUserData).
constexpr uint64_t kKindIoCmd = 1;
constexpr uint64_t kKindTarget = 2;
constexpr uint64_t kKindEventfd = 3;

uint64_t UserData(uint64_t kind, uint16_t tag) { return static_cast<uint64_t>(tag) | (kind << 16); }
}  // namespace

Queue::Queue(int queue_id, const ublksrv_ctrl_dev_info& info, Target* target, const cpu_set_t* affinity,
             uint32_t poll_us)
    : q_(queue_id),
      info_(info),
      target_(target),
      depth_(info.queue_depth),
      have_affinity_(affinity != nullptr),
      completions_(2u * info.queue_depth + 64),
      state_(depth_, TagState::kIdle),
      data_buf_(depth_, nullptr),
      poll_us_(poll_us) {
  if (affinity) affinity_ = *affinity;
  need_get_data_ = (info.flags & UBLK_F_NEED_GET_DATA) != 0;
}

// Polling is bounded by iterations, not by reading the clock: in a VM whose clocksource is the
// HPET a clock read is an emulated MMIO access, dearer than the wakeup the spin saves.
void Queue::CalibratePolling() {
  if (poll_us_ == 0) return;
  constexpr uint64_t kProbe = 20000;
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < kProbe; ++i) {
    if (io_uring_cq_ready(&ring_) || completions_.HasPending()) break;
    _mm_pause();
  }
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  const double per_spin = ns > 0 ? ns / kProbe : 1;
  poll_max_spins_ = static_cast<uint64_t>(poll_us_ * 1000.0 / per_spin) + 16;
  poll_window_ = poll_max_spins_;
  spdlog::debug("queue {}: polling up to {} us = {} spins", q_, poll_us_, poll_max_spins_);
}

// After a busy round: the next event (a FETCH result, a target CQE, a completion from another
// thread) usually follows within microseconds, and finding it by spinning saves the sleep and the
// wakeup, which are most of a QD1 request's latency through ublk. True if something arrived.
// The window follows the gaps seen: a poll that found its event after i spins widens it to 2i,
// each miss halves it (down to poll_us / 16), and every eighth poll may use all of poll_us so a
// workload whose gap grew is found again. A sparse workload so spins about poll_us / 8 per
// request, a steady one as long as its gap needs.
bool Queue::PollForEvent() {
  io_uring_submit(&ring_);  // what the round queued must reach the kernel before we wait on it
  const uint64_t floor = poll_max_spins_ / 16 + 1;
  const uint64_t limit = (++poll_rounds_ & 7) == 0 ? poll_max_spins_ : poll_window_;
  for (uint64_t i = 0; i < limit; ++i) {
    const bool cqe = io_uring_cq_ready(&ring_) != 0;
    if (cqe || completions_.HasPending()) {
      if (!cqe) DrainCompletions();
      poll_window_ = std::clamp(std::max(poll_window_, 2 * i + floor), floor, poll_max_spins_);
      return true;
    }
    _mm_pause();
  }
  poll_window_ = std::max(floor, poll_window_ / 2);
  return false;
}

Queue::~Queue() {
  Join();
  doorbell_.Stop();
  handler_.reset();
  if (ring_ok_) io_uring_queue_exit(&ring_);
}

std::future<Status> Queue::Prepare() {
  std::promise<Status> prepared;
  auto fut = prepared.get_future();
  thread_ = std::thread([this, p = std::move(prepared)]() mutable { Run(std::move(p)); });
  return fut;
}

std::future<Status> Queue::Fetch(Device* device) {
  auto fut = fetched_.get_future();
  device_given_ = true;
  device_promise_.set_value(device);
  return fut;
}

void Queue::Join() {
  if (!device_given_) {
    device_given_ = true;
    device_promise_.set_value(nullptr);  // a thread still waiting for Fetch ends
  }
  if (thread_.joinable()) thread_.join();
}

Status Queue::Setup() {
  std::string name = "unbd-q" + std::to_string(q_);
  pthread_setname_np(pthread_self(), name.c_str());
  if (have_affinity_ && CPU_COUNT(&affinity_) > 0)
    pthread_setaffinity_np(pthread_self(), sizeof(affinity_), &affinity_);

  // One slot per tag for ublk commands, one per tag for target I/O, plus the eventfd read.
  unsigned entries = 4;
  while (entries < 2u * depth_ + 2) entries <<= 1;
  io_uring_params params{};
  params.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
  params.cq_entries = entries * 2;
  int r = io_uring_queue_init_params(entries, &ring_, &params);
  if (r < 0) return Status::FromErrno(-r, "queue " + std::to_string(q_) + ": io_uring_queue_init");
  ring_ok_ = true;

  Status s = buffers_.Allocate(depth_, info_.max_io_buf_bytes);
  if (!s.ok()) return s;
  // Filled in by PrefaultSome. Without it (an old kernel, no memlock allowance) I/O goes on with
  // plain buffers.
  r = io_uring_register_buffers_sparse(&ring_, depth_);
  fixed_table_ = r == 0;
  if (r < 0) spdlog::debug("queue {}: no registered buffers: {}", q_, std::strerror(-r));
  s = target_->CreateQueueHandler(this, &handler_);
  if (!s.ok()) return s;
  events_ = handler_->events();
  if (events_) doorbell_.Start(&ring_, events_, "unbd-bell" + std::to_string(q_));
  ArmEventfd();
  CalibratePolling();
  return Status::Ok();
}

bool Queue::PrefaultSome(size_t bytes) {
  const bool more = buffers_.PrefaultSome(bytes);
  if (!fixed_table_) return more;
  const uint32_t from = fixed_tags_.load(std::memory_order_relaxed);
  const uint32_t to = static_cast<uint32_t>(std::min<size_t>(buffers_.resident(), depth_));
  if (to > from) {
    std::vector<iovec> iovs;
    for (uint32_t t = from; t < to; ++t) iovs.push_back({buffers_.at(t), buffers_.size()});
    const int r =
        io_uring_register_buffers_update_tag(&ring_, from, iovs.data(), nullptr, to - from);
    if (r == static_cast<int>(to - from)) {
      fixed_tags_.store(to, std::memory_order_release);
    } else {
      // Pinning refused (e.g. RLIMIT_MEMLOCK): stop trying; plain buffers work the same.
      spdlog::info("queue {}: registering buffers {}..{} failed ({}); I/O uses plain buffers", q_,
                   from, to - 1, r < 0 ? std::strerror(-r) : "partial");
      fixed_table_ = false;
    }
  }
  return more;
}

int Queue::FixedBufferIndex(const uint8_t* buf, uint32_t len) {
  const uint32_t n = fixed_tags_.load(std::memory_order_acquire);
  const uint8_t* base = buffers_.at(0);
  if (buf < base || buf >= base + n * buffers_.size()) return -1;
  const size_t tag = static_cast<size_t>(buf - base) / buffers_.size();
  if (buf + len > buffers_.at(tag) + buffers_.size()) return -1;
  stats_.fixed_buffer_ios.fetch_add(1, std::memory_order_relaxed);
  return static_cast<int>(tag);
}

Status Queue::PostFetches() {
  // The device as the ring's registered file: no file reference taken and dropped per command.
  const int fd = device_->fd();
  fixed_device_file_ = io_uring_register_files(&ring_, &fd, 1) == 0;
  for (uint16_t tag = 0; tag < depth_; ++tag) {
    PostIoCmd(UBLK_IO_FETCH_REQ, tag, 0, buffers_.at(tag));
  }
  int r = io_uring_submit(&ring_);
  if (r < 0) return Status::FromErrno(-r, "queue " + std::to_string(q_) + ": submit FETCH_REQ");
  fetched_at_ = std::chrono::steady_clock::now();
  return Status::Ok();
}

void Queue::Run(std::promise<Status> prepared) {
  Status s = Setup();
  prepared.set_value(s);
  if (s.ok()) {
    device_ = device_promise_.get_future().get();
    s = device_ ? PostFetches() : Status::Aborted("queue " + std::to_string(q_) + ": abandoned before FETCH");
  }
  const bool serve = s.ok();
  fetched_.set_value(std::move(s));
  if (serve) {
    Loop();
  } else if (handler_) {
    doorbell_.Stop();
    handler_->Stop();  // e.g. connected streams of a recovery that gave up
  }
  finished_.store(true, std::memory_order_release);
}

io_uring_sqe* Queue::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (!sqe) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void Queue::PostIoCmd(uint32_t op, uint16_t tag, int32_t result, uint8_t* addr) {
  io_uring_sqe* sqe = GetSqe();
  std::memset(sqe, 0, 2 * sizeof(*sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  if (fixed_device_file_) {
    sqe->fd = 0;
    sqe->flags = IOSQE_FIXED_FILE;
  } else {
    sqe->fd = device_->fd();
  }
  sqe->cmd_op = op;
  auto* cmd = reinterpret_cast<ublksrv_io_cmd*>(sqe->cmd);
  cmd->q_id = static_cast<uint16_t>(q_);
  cmd->tag = tag;
  cmd->result = result;
  cmd->addr = reinterpret_cast<uint64_t>(addr);
  sqe->user_data = UserData(kKindIoCmd, tag);
  state_[tag] = op == UBLK_IO_NEED_GET_DATA ? TagState::kGetData : TagState::kInKernel;
}

void Queue::DrainCompletions() {
  completions_.Drain([this](const Completion& c) { handler_->OnAsync(c.tag, c.result, this); });
}

void Queue::ArmEventfd() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, completions_.eventfd_fd(), &efd_value_, sizeof(efd_value_), 0);
  sqe->user_data = UserData(kKindEventfd, 0);
}

void Queue::Loop() {
  bool busy = false;  // the last round handled something: worth spinning for the next
  while (dead_ < depth_) {
    handler_->Flush();
    const bool await = events_ && handler_->AwaitsEvents();
    const bool polled = !await && busy && poll_max_spins_ > 0 && PollForEvent();
    if (await) {
      io_uring_submit(&ring_);
      // Its answers are read and handled on this thread; new work on the ring ends the wait.
      doorbell_.Wait(completions_);
    } else if (polled) {
      handler_->Flush();  // completions drained while polling may have queued sends
      io_uring_submit(&ring_);
    } else {
      int r = io_uring_submit_and_wait(&ring_, 1);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
        spdlog::error("queue {}: io_uring_submit_and_wait: {}", q_, std::strerror(-r));
        break;
      }
    }
    io_uring_cqe* cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      HandleCqe(cqe);
      ++n;
    }
    io_uring_cq_advance(&ring_, n);
    busy = n > 0 || polled;
  }
  doorbell_.Stop();
  handler_->Stop();
  spdlog::info("queue {}: all {} tags aborted, thread exits; {} requests, {} NEED_GET_DATA, {} of {} buffers "
               "registered, {} target I/Os on registered buffers",
               q_, depth_, stats_.requests.load(), stats_.need_get_data.load(),
               fixed_tags_.load(std::memory_order_acquire), depth_, stats_.fixed_buffer_ios.load());
}


void Queue::HandleCqe(const io_uring_cqe* cqe) {
  const uint64_t ud = cqe->user_data;
  const uint16_t tag = static_cast<uint16_t>(ud & 0xffff);
  switch ((ud >> 16) & 0xff) {
    case kKindIoCmd:
      OnIoCmd(tag, cqe->res);
      break;
    case kKindTarget:
      handler_->OnCqe(tag, static_cast<uint8_t>((ud >> 24) & 0xff), cqe->res);
      break;
    case kKindEventfd:
      DrainCompletions();
      if (cqe->res != -ECANCELED) ArmEventfd();
      break;
  }
}

void Queue::OnIoCmd(uint16_t tag, int res) {
  if (tag >= depth_) return;
  if (res == UBLK_IO_RES_NEED_GET_DATA) {
    // A write whose data the kernel has not copied yet: choose where it should land.
    const ublksrv_io_desc& iod = device_->descriptors(q_)[tag];
    uint8_t* buf = handler_->WriteBuffer(tag, iod.nr_sectors << 9);
    data_buf_[tag] = buf ? buf : buffers_.at(tag);
    stats_.need_get_data.fetch_add(1, std::memory_order_relaxed);
    PostIoCmd(UBLK_IO_NEED_GET_DATA, tag, 0, data_buf_[tag]);
    return;
  }
  if (res == UBLK_IO_RES_OK) {
    uint8_t* buf = state_[tag] == TagState::kGetData ? data_buf_[tag] : buffers_.at(tag);
    Dispatch(tag, buf);
    return;
  }
  // UBLK_IO_RES_ABORT (device stopping) or a refused command: this tag is finished for good.
  if (res != UBLK_IO_RES_ABORT)
    spdlog::error("queue {} tag {}: ublk command failed: {}", q_, tag, std::strerror(-res));
  if (state_[tag] != TagState::kDead) {
    state_[tag] = TagState::kDead;
    ++dead_;
  }
}

void Queue::Dispatch(uint16_t tag, uint8_t* buf) {
  const ublksrv_io_desc& iod = device_->descriptors(q_)[tag];
  state_[tag] = TagState::kOwned;
  data_buf_[tag] = buf;
  stats_.requests.fetch_add(1, std::memory_order_relaxed);
  IoRequest req{tag,
                ublksrv_get_op(&iod),
                ublksrv_get_flags(&iod),
                iod.start_sector << 9,
                iod.nr_sectors << 9,
                buf};
  handler_->Submit(req);
}

void Queue::Complete(uint16_t tag, int result) {
  if (tag >= depth_ || state_[tag] != TagState::kOwned) {
    // Committing twice (or a request we never handed out) would corrupt another request's state.
    stats_.double_commits.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("queue {} tag {}: completion for a request not owned by the target, ignored", q_, tag);
    return;
  }
  if (result < 0) stats_.errors.fetch_add(1, std::memory_order_relaxed);
  if (!first_completion_logged_) {
    // How long a (re)started daemon takes to serve its first request: the end of a recovery.
    first_completion_logged_ = true;
    // Wall clock too, so a test can line it up with when it killed the previous daemon.
    const auto wall = std::chrono::system_clock::now().time_since_epoch();
    spdlog::info("queue {} (pid {}): first request (tag {}) served {:.1f} ms after FETCH, at {} us", q_, getpid(), tag,
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - fetched_at_).count(),
                 std::chrono::duration_cast<std::chrono::microseconds>(wall).count());
  }
  // The kernel copies READ data from the address passed with the commit; it is the buffer the
  // request was served from. Later writes (without NEED_GET_DATA) land in the tag's own buffer.
  // Without NEED_GET_DATA that is always the tag's own buffer, where the next write lands.
  PostIoCmd(UBLK_IO_COMMIT_AND_FETCH_REQ, tag, result, data_buf_[tag]);
}

void Queue::CompleteAsync(uint16_t tag, int result) {
  if (!completions_.Push({tag, result}))
    spdlog::critical("queue {} tag {}: completion queue overflow", q_, tag);
}

}  // namespace unbd::frontend
