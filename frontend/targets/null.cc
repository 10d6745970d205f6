#include "frontend/targets/null.h"

namespace unbd::frontend {

namespace {

class NullHandler final : public QueueHandler {
 public:
  explicit NullHandler(QueueContext* ctx) : ctx_(ctx) {}
  void Submit(const IoRequest& req) override {
    bool data = req.op == UBLK_IO_OP_READ || req.op == UBLK_IO_OP_WRITE;
    ctx_->Complete(req.tag, data ? static_cast<int>(req.length) : 0);
  }

 private:
  QueueContext* ctx_;
};

class NullTarget final : public Target {
 public:
  explicit NullTarget(uint64_t size) : size_(size) {}
  uint64_t size_bytes() const override { return size_; }
  void AdjustParams(ublk_params*) const override {}
  Status CreateQueueHandler(QueueContext* ctx, std::unique_ptr<QueueHandler>* out) override {
    *out = std::make_unique<NullHandler>(ctx);
    return Status::Ok();
  }
  std::string Describe() const override { return "null size=" + std::to_string(size_); }

 private:
  uint64_t size_;
};

}  // namespace

Status CreateNullTarget(const DeviceConfig& config, std::unique_ptr<Target>* out) {
  *out = std::make_unique<NullTarget>(config.null_size_bytes);
  return Status::Ok();
}

}  // namespace unbd::frontend
