// StreamServer: serves BlockIo.Stream on gRPC completion queues, one thread per queue. A stream
// lives on one queue and every step — reading a batch, applying it (reads answered inline from
// RocksDB), writing the completions — runs on that queue's thread: no hand-off between a gRPC
// poller and a handler thread per message, which is what dominated the sync server's latency.
// The exception is a batch with FLUSH or FUA: it waits for a WAL sync on a thread of its own, so
// the queue keeps serving and concurrent syncs from several streams share one group commit.
//
//   StreamServer streams(&service, builder.AddCompletionQueue() x N);  // before BuildAndStart
//   streams.Start();                 // after BuildAndStart
//   ... service.BeginDrain(); server->Shutdown(); streams.Stop();   // Stop joins the threads
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "backend/volume_service.h"

namespace unbd::backend {

class StreamServer {
 public:
  // Batches of at most this many requests count as latency-bound for polling.
  static constexpr int kPollMaxBatch = 2;

  // `poll_us` > 0: while a queue sees small batches arriving less than `poll_us` apart, its
  // thread polls for the next event for up to that long before it sleeps (see Run).
  StreamServer(VolumeService* service, std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs,
               uint32_t poll_us);
  ~StreamServer();

  void Start();
  // Call after grpc::Server::Shutdown: waits for off-queue work, shuts the queues down and joins
  // their threads.
  void Stop();
  // Runs `work` on a thread of its own (a batch waiting for a WAL sync); `work` posts its result
  // back to a queue.
  void RunOffQueue(std::function<void()> work);

  // A queue's polling state; touched only by the queue's thread.
  struct QueueLoad {
    std::chrono::nanoseconds idle{0};  // how long the thread waited for the current event
    bool poll = false;                 // spin for the next event instead of sleeping
  };
  // Called by a call on its queue's thread when a batch of `requests` arrives: decides whether
  // the thread polls for the next one.
  void NoteBatch(QueueLoad* load, int requests) const;

 private:
  void Run(grpc::ServerCompletionQueue* cq, QueueLoad* load);

  VolumeService* service_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs_;
  std::vector<QueueLoad> loads_;  // one per queue
  const std::chrono::microseconds poll_;
  std::vector<std::thread> threads_;
  std::mutex workers_mu_;
  std::condition_variable workers_cv_;
  int workers_ = 0;
};

}  // namespace unbd::backend
