// ublk-tool: a minimal ublk server and UAPI prober for the driver VM tests (kmod and upstream).
//
// It talks the raw <linux/ublk_cmd.h> UAPI through liburing with 128-byte SQEs, so what it checks
// is the driver, not a server library. Subcommands:
//   serve   [--id N] [--queues Q] [--depth D] [--size-mb M] [--backing FILE|null] [--recovery]
//           [--reissue] [--need-get-data] [--hold-from SECTOR] [--bad-buf]
//           adds a device, serves it until the driver aborts the queues; prints "READY dev=N pid=P".
//           --hold-from: requests at or above SECTOR are taken but never committed;
//           --bad-buf: hands the driver an unmapped, unaligned buffer address.
//   recover --id N [--backing FILE|null]   START_USER_RECOVERY (retrying -EBUSY), serve, END.
//   kill-wait --id N --pid P --state QUIESCED|DEAD   SIGKILL P, time until the device state.
//   info|stop|del --id N
//   badinput [--strict]   the hostile-input matrix; --strict also checks our exact errnos.
#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/ublk_cmd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kDescStride = UBLK_MAX_QUEUE_DEPTH * sizeof(ublksrv_io_desc);
constexpr uint64_t kKindShift = 16;
enum Kind : uint64_t { kFetch = 1, kCommit = 2, kGetData = 3 };

[[noreturn]] void Die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "ublk-tool: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

double NowMs() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// One io_uring with 128-byte SQEs (or 64 when asked, to probe the driver's check).
class Ring {
 public:
  explicit Ring(unsigned entries, bool sqe128 = true) : sqe_bytes_(sqe128 ? 128 : 64) {
    int r = io_uring_queue_init(entries, &ring_, sqe128 ? IORING_SETUP_SQE128 : 0);
    if (r < 0) Die("io_uring_queue_init: %s", strerror(-r));
  }
  ~Ring() { io_uring_queue_exit(&ring_); }
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Queues one URING_CMD; the caller submits.
  void Prep(int fd, uint32_t op, const void* payload, size_t len, uint64_t user_data) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
      if (!sqe) Die("submission queue full");
    }
    memset(sqe, 0, sqe_bytes_);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd;
    sqe->cmd_op = op;
    sqe->user_data = user_data;
    memcpy(sqe->cmd, payload, len);
  }

  // Sends one command and waits for its CQE. Returns false on timeout (or a signal).
  bool Sync(int fd, uint32_t op, const void* payload, size_t len, int* res, int timeout_ms = -1) {
    Prep(fd, op, payload, len, 0xc0ffee);
    io_uring_submit(&ring_);
    return Wait(res, timeout_ms);
  }

  bool Wait(int* res, int timeout_ms) {
    io_uring_cqe* cqe = nullptr;
    int r;
    if (timeout_ms < 0) {
      r = io_uring_wait_cqe(&ring_, &cqe);
    } else {
      __kernel_timespec ts{timeout_ms / 1000, (timeout_ms % 1000) * 1000000LL};
      r = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
    }
    if (r < 0) return false;
    *res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    return true;
  }

  io_uring* get() { return &ring_; }

 private:
  io_uring ring_{};
  size_t sqe_bytes_;
};

class Ctrl {
 public:
  explicit Ctrl(bool sqe128 = true) : ring_(8, sqe128) {
    fd_ = open("/dev/ublk-control", O_RDWR | O_CLOEXEC);
    if (fd_ < 0) Die("open /dev/ublk-control: %s", strerror(errno));
  }
  ~Ctrl() { close(fd_); }

  int Cmd(uint32_t op, uint32_t dev_id, const void* buf = nullptr, uint32_t len = 0,
          uint64_t data0 = 0, uint16_t q_id = 0xffff, int timeout_ms = -1, bool* timed_out = nullptr) {
    ublksrv_ctrl_cmd c{};
    c.dev_id = dev_id;
    c.queue_id = q_id;
    c.len = static_cast<uint16_t>(len);
    c.addr = reinterpret_cast<uintptr_t>(buf);
    c.data[0] = data0;
    int res = 0;
    bool done = ring_.Sync(fd_, op, &c, sizeof(c), &res, timeout_ms);
    if (timed_out) *timed_out = !done;
    return done ? res : -ETIMEDOUT;
  }
  int Info(uint32_t id, ublksrv_ctrl_dev_info* info) {
    return Cmd(UBLK_CMD_GET_DEV_INFO, id, info, sizeof(*info));
  }
  Ring& ring() { return ring_; }

 private:
  Ring ring_;
  int fd_ = -1;
};

const char* StateName(int s) {
  switch (s) {
    case UBLK_S_DEV_DEAD: return "DEAD";
    case UBLK_S_DEV_LIVE: return "LIVE";
    case UBLK_S_DEV_QUIESCED: return "QUIESCED";
    default: return "?";
  }
}

struct Options {
  int id = -1;
  unsigned queues = 1;
  unsigned depth = 64;
  uint64_t size_mb = 64;
  uint64_t flags = 0;
  std::string backing = "null";
  uint64_t hold_from = UINT64_MAX;
  bool bad_buf = false;
  int pid = 0;
  std::string state;
  bool strict = false;
  unsigned max_io = 512 * 1024;
};

// ---- the server ----

class Server {
 public:
  Server(const Options& o, const ublksrv_ctrl_dev_info& info) : opt_(o), info_(info) {
    if (o.backing != "null") {
      backing_fd_ = open(o.backing.c_str(), O_RDWR | O_CREAT, 0600);
      if (backing_fd_ < 0) Die("open %s: %s", o.backing.c_str(), strerror(errno));
    }
  }

  void OpenCdev() {
    std::string path = "/dev/ublkc" + std::to_string(info_.dev_id);
    double t0 = NowMs();
    for (;;) {
      cdev_fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (cdev_fd_ >= 0) return;
      // The node appears asynchronously; the old server's file may still be closing.
      if ((errno != ENOENT && errno != EBUSY) || NowMs() - t0 > 10000)
        Die("open %s: %s", path.c_str(), strerror(errno));
      usleep(1000);
    }
  }

  void StartQueues() {
    for (unsigned q = 0; q < info_.nr_hw_queues; q++) threads_.emplace_back([this, q] { Queue(q); });
    // Every tag must be fetched before START_DEV / END_USER_RECOVERY can return.
  }

  void Join() {
    for (auto& t : threads_) t.join();
  }

 private:
  void Queue(unsigned q_id) {
    const unsigned depth = info_.queue_depth;
    const size_t buf_bytes = info_.max_io_buf_bytes;
    Ring ring(depth * 2);
    size_t map_len = (depth * sizeof(ublksrv_io_desc) + 4095) & ~size_t{4095};
    auto* descs = static_cast<const ublksrv_io_desc*>(
        mmap(nullptr, map_len, PROT_READ, MAP_SHARED | MAP_POPULATE, cdev_fd_,
             UBLKSRV_CMD_BUF_OFFSET + q_id * kDescStride));
    if (descs == MAP_FAILED) Die("mmap queue %u: %s", q_id, strerror(errno));
    char* bufs = nullptr;
    if (posix_memalign(reinterpret_cast<void**>(&bufs), 4096, buf_bytes * depth))
      Die("out of memory");
    auto addr = [&](unsigned tag) -> uint64_t {
      return opt_.bad_buf ? 1 : reinterpret_cast<uintptr_t>(bufs + tag * buf_bytes);
    };
    auto send = [&](Kind kind, unsigned tag, int result) {
      ublksrv_io_cmd c{};
      c.q_id = static_cast<uint16_t>(q_id);
      c.tag = static_cast<uint16_t>(tag);
      c.result = result;
      c.addr = addr(tag);
      uint32_t op = kind == kFetch    ? UBLK_IO_FETCH_REQ
                    : kind == kCommit ? UBLK_IO_COMMIT_AND_FETCH_REQ
                                      : UBLK_IO_NEED_GET_DATA;
      ring.Prep(cdev_fd_, op, &c, sizeof(c), (kind << kKindShift) | tag);
    };
    for (unsigned tag = 0; tag < depth; tag++) send(kFetch, tag, 0);

    unsigned live = depth;
    while (live) {
      int r = io_uring_submit_and_wait(ring.get(), 1);
      if (r < 0 && r != -EINTR) Die("queue %u: io_uring_submit_and_wait: %s", q_id, strerror(-r));
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(ring.get(), head, cqe) {
        seen++;
        unsigned tag = cqe->user_data & 0xffff;
        auto kind = static_cast<Kind>(cqe->user_data >> kKindShift);
        int res = cqe->res;
        if (kind == kGetData && res == UBLK_IO_RES_OK) {
          Handle(q_id, tag, descs[tag], bufs + tag * buf_bytes, send);
          continue;
        }
        if (res == UBLK_IO_RES_NEED_GET_DATA) {
          send(kGetData, tag, 0);
          continue;
        }
        if (res == UBLK_IO_RES_OK) {
          Handle(q_id, tag, descs[tag], bufs + tag * buf_bytes, send);
          continue;
        }
        if (res != UBLK_IO_RES_ABORT)
          fprintf(stderr, "queue %u tag %u: command kind %u failed: %s\n", q_id, tag,
                  static_cast<unsigned>(kind), strerror(-res));
        live--;
      }
      io_uring_cq_advance(ring.get(), seen);
    }
    munmap(const_cast<ublksrv_io_desc*>(descs), map_len);
    free(bufs);
  }

  template <typename Send>
  void Handle(unsigned q_id, unsigned tag, const ublksrv_io_desc& d, char* buf, Send& send) {
    const uint64_t off = d.start_sector << 9;
    const size_t len = static_cast<size_t>(d.nr_sectors) << 9;
    // Only data requests are held: a flush carries no sector (blk_rq_pos() is -1 there).
    const unsigned op = ublksrv_get_op(&d);
    if ((op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE) && d.start_sector >= opt_.hold_from) {
      // Taken and never committed: the request stays with this process until it dies.
      printf("HOLD queue=%u tag=%u sector=%llu\n", q_id, tag,
             static_cast<unsigned long long>(d.start_sector));
      fflush(stdout);
      return;
    }
    int result = static_cast<int>(len);
    switch (ublksrv_get_op(&d)) {
      case UBLK_IO_OP_READ:
        if (backing_fd_ >= 0 && !opt_.bad_buf && pread(backing_fd_, buf, len, off) != (ssize_t)len)
          result = -EIO;
        break;
      case UBLK_IO_OP_WRITE:
        if (backing_fd_ >= 0 && !opt_.bad_buf && pwrite(backing_fd_, buf, len, off) != (ssize_t)len)
          result = -EIO;
        break;
      case UBLK_IO_OP_FLUSH:
        result = 0;
        if (backing_fd_ >= 0 && fdatasync(backing_fd_)) result = -EIO;
        break;
      case UBLK_IO_OP_DISCARD:
      case UBLK_IO_OP_WRITE_ZEROES:
        if (backing_fd_ >= 0 &&
            fallocate(backing_fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len))
          result = -EIO;
        break;
      default:
        result = -EOPNOTSUPP;
    }
    send(kCommit, tag, result);
  }

  const Options& opt_;
  ublksrv_ctrl_dev_info info_;
  int backing_fd_ = -1;
  int cdev_fd_ = -1;
  std::vector<std::thread> threads_;
};

void SetParams(Ctrl& ctrl, const ublksrv_ctrl_dev_info& info, const Options& o) {
  ublk_params p{};
  p.len = sizeof(p);
  p.types = UBLK_PARAM_TYPE_BASIC;
  p.basic.attrs = UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA;
  p.basic.logical_bs_shift = 9;
  p.basic.physical_bs_shift = 12;
  p.basic.io_opt_shift = 12;
  p.basic.io_min_shift = 12;
  p.basic.max_sectors = info.max_io_buf_bytes >> 9;
  p.basic.dev_sectors = o.size_mb << 11;
  if (o.backing != "null") {
    p.types |= UBLK_PARAM_TYPE_DISCARD;
    p.discard.discard_granularity = 4096;
    p.discard.max_discard_sectors = 1 << 14;
    p.discard.max_write_zeroes_sectors = 1 << 14;
    p.discard.max_discard_segments = 1;
  }
  int r = ctrl.Cmd(UBLK_CMD_SET_PARAMS, info.dev_id, &p, sizeof(p));
  if (r) Die("SET_PARAMS dev %u: %s", info.dev_id, strerror(-r));
}

int CmdServe(const Options& o) {
  Ctrl ctrl;
  ublksrv_ctrl_dev_info info{};
  info.nr_hw_queues = static_cast<uint16_t>(o.queues);
  info.queue_depth = static_cast<uint16_t>(o.depth);
  info.max_io_buf_bytes = o.max_io;
  info.flags = o.flags;
  uint32_t want = o.id < 0 ? UINT32_MAX : static_cast<uint32_t>(o.id);
  info.dev_id = want;
  int r = ctrl.Cmd(UBLK_CMD_ADD_DEV, want, &info, sizeof(info));
  if (r) Die("ADD_DEV: %s", strerror(-r));
  if (o.backing != "null") {
    int fd = open(o.backing.c_str(), O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(o.size_mb << 20))) Die("backing file %s", o.backing.c_str());
    close(fd);
  }
  SetParams(ctrl, info, o);
  Server server(o, info);
  server.OpenCdev();
  server.StartQueues();
  r = ctrl.Cmd(UBLK_CMD_START_DEV, info.dev_id, nullptr, 0, static_cast<uint64_t>(getpid()));
  if (r) Die("START_DEV dev %u: %s", info.dev_id, strerror(-r));
  printf("READY dev=%u pid=%d flags=0x%llx\n", info.dev_id, getpid(),
         static_cast<unsigned long long>(info.flags));
  fflush(stdout);
  server.Join();
  return 0;
}

int CmdRecover(const Options& o) {
  if (o.id < 0) Die("recover needs --id");
  Ctrl ctrl;
  double t0 = NowMs();
  int r, busy = 0;
  while ((r = ctrl.Cmd(UBLK_CMD_START_USER_RECOVERY, o.id)) == -EBUSY) {
    if (NowMs() - t0 > 10000) Die("START_USER_RECOVERY dev %d: still busy after 10 s", o.id);
    busy++;
    usleep(1000);
  }
  if (r) Die("START_USER_RECOVERY dev %d: %s", o.id, strerror(-r));
  ublksrv_ctrl_dev_info info{};
  r = ctrl.Info(o.id, &info);
  if (r) Die("GET_DEV_INFO dev %d: %s", o.id, strerror(-r));
  Server server(o, info);
  server.OpenCdev();
  server.StartQueues();
  r = ctrl.Cmd(UBLK_CMD_END_USER_RECOVERY, o.id, nullptr, 0, static_cast<uint64_t>(getpid()));
  if (r) Die("END_USER_RECOVERY dev %d: %s", o.id, strerror(-r));
  printf("RECOVERED dev=%d pid=%d busy_retries=%d recover_ms=%.1f\n", o.id, getpid(), busy, NowMs() - t0);
  fflush(stdout);
  server.Join();
  return 0;
}

int CmdKillWait(const Options& o) {
  int want = o.state == "QUIESCED" ? UBLK_S_DEV_QUIESCED : o.state == "DEAD" ? UBLK_S_DEV_DEAD : -1;
  if (o.id < 0 || o.pid <= 0 || want < 0) Die("kill-wait needs --id, --pid and --state QUIESCED|DEAD");
  Ctrl ctrl;
  double t0 = NowMs();
  if (kill(o.pid, SIGKILL)) Die("kill %d: %s", o.pid, strerror(errno));
  ublksrv_ctrl_dev_info info{};
  for (;;) {
    int r = ctrl.Info(o.id, &info);
    if (r == 0 && info.state == want) break;
    if (NowMs() - t0 > 20000) {
      printf("TIMEOUT dev=%d state=%s after %.1f ms\n", o.id, r ? strerror(-r) : StateName(info.state), NowMs() - t0);
      return 1;
    }
    usleep(500);
  }
  printf("STATE dev=%d %s after_ms=%.1f\n", o.id, StateName(want), NowMs() - t0);
  return 0;
}

int CmdSimple(const std::string& cmd, const Options& o) {
  if (o.id < 0) Die("%s needs --id", cmd.c_str());
  Ctrl ctrl;
  if (cmd == "info") {
    ublksrv_ctrl_dev_info info{};
    int r = ctrl.Info(o.id, &info);
    if (r) Die("GET_DEV_INFO dev %d: %s", o.id, strerror(-r));
    printf("dev=%u state=%s pid=%d queues=%u depth=%u max_io=%u flags=0x%llx\n", info.dev_id,
           StateName(info.state), info.ublksrv_pid, info.nr_hw_queues, info.queue_depth,
           info.max_io_buf_bytes, static_cast<unsigned long long>(info.flags));
    return 0;
  }
  uint32_t op = cmd == "stop" ? UBLK_CMD_STOP_DEV : UBLK_CMD_DEL_DEV;
  int r = ctrl.Cmd(op, o.id);
  if (r) Die("%s dev %d: %s", cmd.c_str(), o.id, strerror(-r));
  return 0;
}

// ---- the hostile-input matrix ----

class Matrix {
 public:
  explicit Matrix(bool strict) : strict_(strict) {}

  // Expects failure; with --strict (our driver) exactly `want`, otherwise any negative errno.
  void Fails(const char* what, int got, int want) {
    bool ok = got < 0 && (!strict_ || got == want);
    Report(ok, what, got, want);
  }
  void Succeeds(const char* what, int got) { Report(got >= 0, what, got, 0); }
  int failures() const { return failures_; }

 private:
  void Report(bool ok, const char* what, int got, int want) {
    printf("%-4s %-62s got %-12s want %s\n", ok ? "ok" : "FAIL", what, Errno(got).c_str(),
           Errno(want).c_str());
    if (!ok) failures_++;
  }
  static std::string Errno(int e) {
    if (e >= 0) return std::to_string(e);
    const char* n = strerrorname_np(-e);
    return std::string("-") + (n ? n : std::to_string(-e).c_str());
  }
  bool strict_;
  int failures_ = 0;
};

void OnAlarm(int) {}

int CmdBadInput(const Options& o) {
  Matrix m(o.strict);
  Ctrl ctrl;
  ublksrv_ctrl_dev_info info{};

  // Control commands on nothing, or with nonsense.
  m.Fails("GET_DEV_INFO of a device that does not exist", ctrl.Info(9999, &info), -ENODEV);
  m.Fails("DEL_DEV of a device that does not exist", ctrl.Cmd(UBLK_CMD_DEL_DEV, 9999), -ENODEV);
  {
    Ctrl small(false);
    m.Fails("control command from a ring without 128-byte SQEs", small.Info(0, &info), -EINVAL);
  }
  auto add = [&](uint16_t queues, uint16_t depth, uint64_t flags, uint32_t id, uint32_t len = sizeof(info),
                 const void* buf = nullptr) {
    info = {};
    info.nr_hw_queues = queues;
    info.queue_depth = depth;
    info.max_io_buf_bytes = 64 * 1024;
    info.flags = flags;
    info.dev_id = id;
    return ctrl.Cmd(UBLK_CMD_ADD_DEV, id, buf ? buf : &info, len);
  };
  m.Fails("ADD_DEV with 0 queues", add(0, 4, 0, UINT32_MAX), -EINVAL);
  // Linux 6.1 clamps the queue count instead of refusing it.
  if (o.strict) m.Fails("ADD_DEV with 1000 queues", add(1000, 4, 0, UINT32_MAX), -EINVAL);
  // Linux 6.1's driver takes depth 0 and WARNs in the page allocator: ours only.
  if (o.strict) m.Fails("ADD_DEV with depth 0", add(1, 0, 0, UINT32_MAX), -EINVAL);
  m.Fails("ADD_DEV with depth 4097", add(1, 4097, 0, UINT32_MAX), -EINVAL);
  m.Fails("ADD_DEV with a short buffer", add(1, 4, 0, UINT32_MAX, 8), -EINVAL);
  m.Fails("ADD_DEV with an unmapped buffer", add(1, 4, 0, UINT32_MAX, sizeof(info), reinterpret_cast<void*>(8)),
          -EFAULT);
  int r = add(1, 4, 0, UINT32_MAX);
  m.Succeeds("ADD_DEV with automatic id", r);
  if (r) return 1;
  const uint32_t id = info.dev_id;
  m.Fails("ADD_DEV with an id in use", add(1, 4, 0, id), -EEXIST);
  m.Fails("unknown control command 0x3f", ctrl.Cmd(0x3f, id), -EOPNOTSUPP);

  ublk_params p{};
  p.len = sizeof(p);
  p.types = UBLK_PARAM_TYPE_BASIC;
  p.basic.logical_bs_shift = 3;
  p.basic.physical_bs_shift = 12;
  p.basic.dev_sectors = 1 << 11;
  p.basic.max_sectors = 128;
  m.Fails("SET_PARAMS with 8-byte logical blocks", ctrl.Cmd(UBLK_CMD_SET_PARAMS, id, &p, sizeof(p)), -EINVAL);
  m.Fails("SET_PARAMS with a 4-byte length", ctrl.Cmd(UBLK_CMD_SET_PARAMS, id, &p, 4), -EINVAL);
  char mask[128];
  // Linux 6.1 does not check the queue id here.
  if (o.strict)
    m.Fails("GET_QUEUE_AFFINITY of queue 7 of 1",
            ctrl.Cmd(UBLK_CMD_GET_QUEUE_AFFINITY, id, mask, sizeof(mask), 0, 7), -EINVAL);
  m.Succeeds("GET_QUEUE_AFFINITY of queue 0", ctrl.Cmd(UBLK_CMD_GET_QUEUE_AFFINITY, id, mask, sizeof(mask), 0, 0));
  m.Fails("START_USER_RECOVERY without the recovery feature", ctrl.Cmd(UBLK_CMD_START_USER_RECOVERY, id), -EINVAL);
  // Linux 6.1 blocks here until every tag is fetched, instead of refusing.
  if (o.strict)
    m.Fails("END_USER_RECOVERY without the recovery feature",
            ctrl.Cmd(UBLK_CMD_END_USER_RECOVERY, id, nullptr, 0, getpid()), -EINVAL);

  // The character device and the descriptor areas.
  std::string cpath = "/dev/ublkc" + std::to_string(id);
  int cfd = -1;
  for (int i = 0; i < 1000 && cfd < 0; i++, usleep(1000)) cfd = open(cpath.c_str(), O_RDWR);
  if (cfd < 0) Die("open %s: %s", cpath.c_str(), strerror(errno));
  int cfd2 = open(cpath.c_str(), O_RDWR);
  m.Fails("second open of /dev/ublkcN", cfd2 < 0 ? -errno : 0, -EBUSY);
  if (cfd2 >= 0) close(cfd2);
  auto map = [&](size_t len, int prot, off_t off) {
    void* a = mmap(nullptr, len, prot, MAP_SHARED, cfd, off);
    if (a == MAP_FAILED) return -errno;
    munmap(a, len);
    return 0;
  };
  m.Fails("writable mmap of the descriptor area", map(4096, PROT_READ | PROT_WRITE, 0), -EPERM);
  // Linux 6.1 rounds a misaligned offset down to a queue.
  if (o.strict) m.Fails("mmap at an offset between queues", map(4096, PROT_READ, 4096), -EINVAL);
  m.Fails("mmap of queue 1 of 1", map(4096, PROT_READ, kDescStride), -EINVAL);
  m.Fails("mmap larger than the queue's area", map(1 << 20, PROT_READ, 0), -EINVAL);
  m.Succeeds("read-only mmap of queue 0", map(4096, PROT_READ, 0));

  std::optional<Ring> qring(std::in_place, 16);
  alignas(4096) static char buf[4][64 * 1024];
  auto io = [&](Ring& ring, uint32_t op, uint16_t q, uint16_t tag, uint64_t addr, int timeout_ms = 200) {
    ublksrv_io_cmd c{};
    c.q_id = q;
    c.tag = tag;
    c.addr = addr;
    int res = 0;
    // A FETCH that is accepted stays queued in the driver: report it as 1.
    return ring.Sync(cfd, op, &c, sizeof(c), &res, timeout_ms) ? res : 1;
  };
  auto ubuf = [&](int tag) { return reinterpret_cast<uintptr_t>(buf[tag]); };
  m.Fails("FETCH_REQ on queue 5 of 1", io(*qring, UBLK_IO_FETCH_REQ, 5, 0, ubuf(0)), -EINVAL);
  m.Fails("FETCH_REQ of tag 100 of 4", io(*qring, UBLK_IO_FETCH_REQ, 0, 100, ubuf(0)), -EINVAL);
  m.Fails("FETCH_REQ without a buffer", io(*qring, UBLK_IO_FETCH_REQ, 0, 0, 0), -EINVAL);
  m.Succeeds("FETCH_REQ of tag 0 (stays queued)", io(*qring, UBLK_IO_FETCH_REQ, 0, 0, ubuf(0)) == 1 ? 0 : -1);
  m.Fails("FETCH_REQ of tag 0 again", io(*qring, UBLK_IO_FETCH_REQ, 0, 0, ubuf(0)), -EBUSY);
  m.Succeeds("FETCH_REQ of tag 1 (stays queued)", io(*qring, UBLK_IO_FETCH_REQ, 0, 1, ubuf(1)) == 1 ? 0 : -1);
  m.Succeeds("FETCH_REQ of tag 2 (stays queued)", io(*qring, UBLK_IO_FETCH_REQ, 0, 2, ubuf(2)) == 1 ? 0 : -1);
  m.Fails("COMMIT_AND_FETCH_REQ of a tag with no request", io(*qring, UBLK_IO_COMMIT_AND_FETCH_REQ, 0, 1, ubuf(1)),
          -EINVAL);
  m.Fails("NEED_GET_DATA without the feature", io(*qring, UBLK_IO_NEED_GET_DATA, 0, 1, ubuf(1)), -EINVAL);
  m.Fails("unknown I/O command 0x2f", io(*qring, 0x2f, 0, 1, ubuf(1)), -EOPNOTSUPP);
  if (o.strict) {
    // Linux 6.1 lets any task fetch a tag of a queue another task serves.
    int other = 0;
    std::thread t([&] {
      Ring ring(4);
      other = io(ring, UBLK_IO_FETCH_REQ, 0, 3, ubuf(3));
    });
    t.join();
    m.Fails("FETCH_REQ from a task that does not own the queue", other == 1 ? 0 : other, -EPERM);
  }
  m.Succeeds("FETCH_REQ of tag 3 by the owner (stays queued)",
             io(*qring, UBLK_IO_FETCH_REQ, 0, 3, ubuf(3)) == 1 ? 0 : -1);
  m.Fails("START_DEV without parameters (all tags fetched)",
          ctrl.Cmd(UBLK_CMD_START_DEV, id, nullptr, 0, getpid(), 0xffff, 3000), -EINVAL);
  m.Fails("START_DEV with pid 0", ctrl.Cmd(UBLK_CMD_START_DEV, id, nullptr, 0, 0, 0xffff, 3000), -EINVAL);

  // STOP_DEV of a device that never started hands every parked FETCH back with ABORT.
  m.Succeeds("STOP_DEV of a device that never started", ctrl.Cmd(UBLK_CMD_STOP_DEV, id, nullptr, 0, 0, 0xffff, 3000));
  int aborted = 0, res = 0;
  while (aborted < 4 && qring->Wait(&res, 2000) && res == UBLK_IO_RES_ABORT) aborted++;
  // Linux 6.1 keeps them until the server exits.
  if (o.strict)
    m.Succeeds("all 4 parked FETCH_REQs completed with UBLK_IO_RES_ABORT", aborted == 4 ? 0 : -EIO);
  close(cfd);
  // DEL_DEV returns when the device is released: our ring still pins the file, so close first.
  qring.reset();
  m.Succeeds("DEL_DEV after STOP_DEV", ctrl.Cmd(UBLK_CMD_DEL_DEV, id, nullptr, 0, 0, 0xffff, 5000));
  m.Fails("GET_DEV_INFO after DEL_DEV", ctrl.Info(id, &info), -ENODEV);

  // The recovery sequence, with hostile steps in between.
  Options so;
  so.queues = 1;
  so.depth = 8;
  so.size_mb = 16;
  so.flags = UBLK_F_USER_RECOVERY;
  so.id = static_cast<int>(id);
  pid_t child = fork();
  if (child == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    _exit(CmdServe(so));
  }
  for (int i = 0; i < 5000; i++, usleep(2000))
    if (ctrl.Info(id, &info) == 0 && info.state == UBLK_S_DEV_LIVE) break;
  m.Succeeds("a recovery device served by a child goes LIVE", info.state == UBLK_S_DEV_LIVE ? 0 : -EIO);
  p.basic.logical_bs_shift = 9;
  m.Fails("SET_PARAMS while LIVE", ctrl.Cmd(UBLK_CMD_SET_PARAMS, id, &p, sizeof(p)), -EACCES);
  m.Fails("START_DEV while LIVE", ctrl.Cmd(UBLK_CMD_START_DEV, id, nullptr, 0, getpid(), 0xffff, 3000), -EALREADY);
  m.Fails("START_USER_RECOVERY while LIVE", ctrl.Cmd(UBLK_CMD_START_USER_RECOVERY, id), -EBUSY);
  m.Fails("END_USER_RECOVERY while LIVE", ctrl.Cmd(UBLK_CMD_END_USER_RECOVERY, id, nullptr, 0, getpid()), -EBUSY);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  for (int i = 0; i < 5000; i++, usleep(2000))
    if (ctrl.Info(id, &info) == 0 && info.state == UBLK_S_DEV_QUIESCED) break;
  m.Succeeds("QUIESCED after the server is killed", info.state == UBLK_S_DEV_QUIESCED ? 0 : -EIO);
  int start = -EBUSY;
  for (int i = 0; i < 5000 && start == -EBUSY; i++, usleep(2000)) start = ctrl.Cmd(UBLK_CMD_START_USER_RECOVERY, id);
  m.Succeeds("START_USER_RECOVERY", start);
  m.Fails("a second START_USER_RECOVERY", ctrl.Cmd(UBLK_CMD_START_USER_RECOVERY, id), -EBUSY);
  {
    // No server fetches, so END_USER_RECOVERY waits; a signal must end the wait, not the device.
    struct sigaction sa {};
    sa.sa_handler = OnAlarm;
    sigaction(SIGALRM, &sa, nullptr);
    alarm(1);
    bool timed_out = false;
    Ctrl end;
    int er = end.Cmd(UBLK_CMD_END_USER_RECOVERY, id, nullptr, 0, getpid(), 0xffff, 3000, &timed_out);
    if (timed_out) {
      // Upstream runs control commands from io-wq, where the signal does not reach the wait.
      int res2 = 0;
      er = end.ring().Wait(&res2, 2000) ? res2 : -EINTR;
    }
    m.Fails("END_USER_RECOVERY interrupted by a signal", er, -EINTR);
  }
  m.Succeeds("GET_DEV_INFO after the interrupted END_USER_RECOVERY", ctrl.Info(id, &info));
  m.Succeeds("STOP_DEV between START_ and END_USER_RECOVERY", ctrl.Cmd(UBLK_CMD_STOP_DEV, id, nullptr, 0, 0, 0xffff, 5000));
  m.Succeeds("DEL_DEV after that", ctrl.Cmd(UBLK_CMD_DEL_DEV, id, nullptr, 0, 0, 0xffff, 5000));
  printf("%s: %d failure(s)\n", m.failures() ? "FAILED" : "PASSED", m.failures());
  return m.failures() ? 1 : 0;
}

Options Parse(int argc, char** argv, int first) {
  Options o;
  for (int i = first; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) Die("%s needs a value", a.c_str());
      return argv[++i];
    };
    if (a == "--id") o.id = std::stoi(val());
    else if (a == "--queues") o.queues = std::stoul(val());
    else if (a == "--depth") o.depth = std::stoul(val());
    else if (a == "--size-mb") o.size_mb = std::stoull(val());
    else if (a == "--backing") o.backing = val();
    else if (a == "--recovery") o.flags |= UBLK_F_USER_RECOVERY;
    else if (a == "--reissue") o.flags |= UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
    else if (a == "--need-get-data") o.flags |= UBLK_F_NEED_GET_DATA;
    else if (a == "--hold-from") o.hold_from = std::stoull(val());
    else if (a == "--bad-buf") o.bad_buf = true;
    else if (a == "--pid") o.pid = std::stoi(val());
    else if (a == "--state") o.state = val();
    else if (a == "--strict") o.strict = true;
    else if (a == "--max-io-kb") o.max_io = std::stoul(val()) * 1024;
    else Die("unknown option %s", a.c_str());
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Die("usage: ublk-tool serve|recover|kill-wait|info|stop|del|badinput [options]");
  std::string cmd = argv[1];
  Options o = Parse(argc, argv, 2);
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (cmd == "serve") return CmdServe(o);
  if (cmd == "recover") return CmdRecover(o);
  if (cmd == "kill-wait") return CmdKillWait(o);
  if (cmd == "info" || cmd == "stop" || cmd == "del") return CmdSimple(cmd, o);
  if (cmd == "badinput") return CmdBadInput(o);
  Die("unknown command %s", cmd.c_str());
}
