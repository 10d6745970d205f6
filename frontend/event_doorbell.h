// EventDoorbell: lets a queue thread wait on its handler's own event source (HandlerEvents, a
// gRPC completion queue) and still wake at once when its io_uring gets a completion. The ring's
// registered eventfd, signalled only while the thread waits on the handler, is read by a small
// thread that ends the wait (HandlerEvents::Wake). Used by frontend/queue.cc and the benchmarks
// that play a queue thread.
//
//   EventDoorbell bell;  bell.Start(&ring, events, "unbd-bell0");  // after io_uring_queue_init
//   ... handler has requests out: io_uring_submit(&ring); bell.Wait(completions);
//   bell.Stop();                                                   // before io_uring_queue_exit
#pragma once

#include <liburing.h>

#include <atomic>
#include <string>
#include <thread>

#include "frontend/completion_queue.h"
#include "frontend/target.h"

namespace unbd::frontend {

class EventDoorbell {
 public:
  EventDoorbell() = default;
  EventDoorbell(const EventDoorbell&) = delete;
  EventDoorbell& operator=(const EventDoorbell&) = delete;
  ~EventDoorbell() { Stop(); }

  // False when the eventfd cannot be registered: Wait then ends its waits by a short timeout.
  bool Start(io_uring* ring, HandlerEvents* events, const std::string& thread_name);
  void Stop();
  // Waits on the handler's events until one is handled or the ring has a completion (or a cross-
  // thread completion is already in `completions`, whose eventfd read is on the ring).
  void Wait(const CompletionQueue& completions);

 private:
  io_uring* ring_ = nullptr;
  HandlerEvents* events_ = nullptr;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace unbd::frontend
