#include "backend/stream_server.h"

#include <sched.h>

#include <chrono>
#include <functional>
#include <thread>

#include <grpc/support/time.h>
#include <grpcpp/alarm.h>
#include <spdlog/spdlog.h>

namespace unbd::backend {
namespace {

// FLUSH and FUA writes wait for a WAL sync.
bool NeedsWalSync(const v1::IoBatch& batch) {
  for (const auto& r : batch.requests()) {
    if (r.op() == v1::OP_FLUSH || r.fua()) return true;
  }
  return false;
}

bool HasRead(const v1::IoBatch& batch) {
  for (const auto& r : batch.requests()) {
    if (r.op() == v1::OP_READ) return true;
  }
  return false;
}

// One BlockIo.Stream call. It is its own completion-queue tag; `step_` says which operation
// completed. At most one operation is outstanding at a time, so no locking is needed.
class StreamCall {
 public:
  StreamCall(StreamServer* server, VolumeService* service, grpc::ServerCompletionQueue* cq,
             StreamServer::QueueLoad* load)
      : server_(server), service_(service), cq_(cq), load_(load), rw_(&ctx_), slot_{&ctx_} {
    service_->RequestStream(&ctx_, &rw_, cq_, cq_, this);
  }

  // Advances the call after its outstanding operation completed with `ok`.
  void Proceed(bool ok) {
    switch (step_) {
      case Step::kAccept:
        if (!ok) {  // server shutting down: no call was accepted
          delete this;
          return;
        }
        new StreamCall(server_, service_, cq_, load_);  // keep one accept outstanding per queue
        registered_ = service_->AddStream(&slot_);
        if (!registered_) return Finish(ShuttingDown());
        return ReadNext();
      case Step::kRead:
        if (!ok) return Finish(grpc::Status::OK);  // client half-closed or cancelled
        server_->NoteBatch(load_, in_.requests_size());
        return Apply();
      case Step::kApplied:  // the sync worker finished (an alarm set in the past always fires)
        return SendCompletions();
      case Step::kWrite:
        if (!service_->EndBatch(&slot_)) return Finish(ShuttingDown());
        if (!ok) return Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client gone"));
        return ReadNext();
      case Step::kFinish:
        if (registered_) service_->RemoveStream(&slot_);
        spdlog::debug("stream from {} ended", ctx_.peer());
        delete this;
        return;
    }
  }

 private:
  enum class Step { kAccept, kRead, kApplied, kWrite, kFinish };

  static grpc::Status ShuttingDown() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down");
  }

  void ReadNext() {
    step_ = Step::kRead;
    rw_.Read(&in_, this);
  }

  void Apply() {
    if (!service_->BeginBatch(&slot_)) {
      service_->EndBatch(&slot_);
      return Finish(ShuttingDown());
    }
    if (service_->holds_writes() && service_->HoldsBatch(in_)) {
      // Test hook (--test-hold-writes-file): the batch waits on a thread of its own, exactly like
      // a batch waiting for a WAL sync. Sleeping here would stall every stream of this completion
      // queue; a timer re-armed on the queue every 10 ms would work too but adds a state to this
      // call for a test-only path.
      return ApplyOffQueue([this] {
        service_->WaitWhileHeld([this] { return service_->HoldsBatch(in_); });
      });
    }
    if (service_->read_delay().count() > 0 && HasRead(in_)) {
      // Test hook (--test-read-delay-us): a slow replica; only this stream's batch waits.
      return ApplyOffQueue([this] { std::this_thread::sleep_for(service_->read_delay()); });
    }
    if (NeedsWalSync(in_)) {
      // A WAL sync takes milliseconds: meanwhile the other streams on this queue keep running
      // and their FLUSH/FUA batches join the same group commit.
      return ApplyOffQueue([] {});
    }
    applied_ = service_->ApplyBatch(in_, &out_, &ops_);
    SendCompletions();
  }

  // Applies the batch on a thread of its own after `wait`; the result comes back to this queue's
  // thread through the alarm (set in the past, it fires at once) as Step::kApplied.
  void ApplyOffQueue(std::function<void()> wait) {
    step_ = Step::kApplied;
    server_->RunOffQueue([this, wait = std::move(wait)] {
      wait();
      applied_ = service_->ApplyBatch(in_, &out_, &ops_);
      applied_alarm_.Set(cq_, gpr_inf_past(GPR_CLOCK_MONOTONIC), this);
    });
  }

  void SendCompletions() {
    if (!applied_.ok()) {
      service_->EndBatch(&slot_);
      return Finish(applied_);
    }
    step_ = Step::kWrite;
    rw_.Write(out_, this);
  }

  void Finish(const grpc::Status& s) {
    step_ = Step::kFinish;
    rw_.Finish(s, this);
  }

  StreamServer* server_;
  VolumeService* service_;
  grpc::ServerCompletionQueue* cq_;
  StreamServer::QueueLoad* load_;
  grpc::ServerContext ctx_;
  grpc::ServerAsyncReaderWriter<v1::CompletionBatch, v1::IoBatch> rw_;
  VolumeService::StreamSlot slot_;
  bool registered_ = false;
  Step step_ = Step::kAccept;
  // Reused across batches so steady-state batches allocate little.
  v1::IoBatch in_;
  v1::CompletionBatch out_;
  std::vector<IoOp> ops_;
  grpc::Status applied_;
  grpc::Alarm applied_alarm_;  // brings a sync worker's result back to this queue's thread
};

}  // namespace

StreamServer::StreamServer(VolumeService* service,
                           std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs,
                           uint32_t poll_us)
    : service_(service), cqs_(std::move(cqs)), loads_(cqs_.size()), poll_(poll_us) {}

StreamServer::~StreamServer() { Stop(); }

void StreamServer::Start() {
  for (size_t i = 0; i < cqs_.size(); ++i) {
    new StreamCall(this, service_, cqs_[i].get(), &loads_[i]);
    threads_.emplace_back([this, q = cqs_[i].get(), load = &loads_[i]] { Run(q, load); });
  }
}

void StreamServer::RunOffQueue(std::function<void()> work) {
  {
    std::lock_guard l(workers_mu_);
    ++workers_;
  }
  std::thread([this, work = std::move(work)] {
    work();
    std::lock_guard l(workers_mu_);
    if (--workers_ == 0) workers_cv_.notify_all();
  }).detach();
}

void StreamServer::Stop() {
  if (threads_.empty()) return;
  {
    // Workers post to the queues; they must be done before the queues shut down.
    std::unique_lock l(workers_mu_);
    workers_cv_.wait(l, [&] { return workers_ == 0; });
  }
  for (auto& cq : cqs_) cq->Shutdown();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

// With polling, a thread that just handled an event asks the queue again without sleeping
// (AsyncNext with a deadline in the past still polls the sockets once) until poll_ passes: a
// client's next batch at QD1 arrives within microseconds, and finding it this way saves the sleep
// and the wake-up, a large part of a round trip.
//
// It polls only while that saving matters and is likely (NoteBatch): the batch was small (a
// wake-up per batch of 16 is cheap, and at high depth the spinning CPU is better left to RocksDB,
// the kernel and whatever shares the machine: 3 co-located replicas lost 20 % of their QD32 IOPS
// to unconditional polling), and it came within poll_ of the event before it (a client slower
// than that would only make the thread spin in vain). While spinning it yields, so a runnable
// thread on this CPU goes first.
void StreamServer::NoteBatch(QueueLoad* load, int requests) const {
  load->poll = poll_.count() > 0 && requests <= kPollMaxBatch && load->idle <= poll_;
}

void StreamServer::Run(grpc::ServerCompletionQueue* cq, QueueLoad* load) {
  using Clock = std::chrono::steady_clock;
  void* tag;
  bool ok;
  const gpr_timespec past = gpr_inf_past(GPR_CLOCK_MONOTONIC);
  auto idle_since = Clock::now();  // when the last event was handled
  auto handle = [&] {
    load->idle = Clock::now() - idle_since;
    static_cast<StreamCall*>(tag)->Proceed(ok);
    idle_since = Clock::now();
  };
  for (;;) {
    if (!cq->Next(&tag, &ok)) return;
    handle();
    while (load->poll) {
      auto st = cq->AsyncNext(&tag, &ok, past);
      if (st == grpc::CompletionQueue::SHUTDOWN) return;
      if (st == grpc::CompletionQueue::GOT_EVENT) {
        handle();
      } else if (Clock::now() - idle_since >= poll_) {
        load->poll = false;  // the next batch is later than poll_: wait for it in Next
      } else {
        sched_yield();
      }
    }
  }
}

}  // namespace unbd::backend
