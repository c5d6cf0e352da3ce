// A model is a stack of layers over one flat parameter buffer and one flat gradient buffer
// (design decision 1): fusion buckets are contiguous ranges, a checkpoint is one write, a
// parameter-server shard is a range, a broadcast is one call. The loss is softmax cross-entropy.
// Buffers, activations and the running loss/accuracy sums live in the memory of the model's
// Backend (runtime/backend.h): on a GPU nothing goes back to the host between steps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/layers.h"

namespace dtrain {

struct BatchStats {
  double loss_sum = 0;  // summed over samples
  size_t correct = 0;
  size_t count = 0;
};

// One named tensor of the flat buffer, for sharding and for people reading a checkpoint.
struct TensorRange {
  std::string name;
  size_t offset;
  size_t count;
};

class Model {
 public:
  Model(size_t input_size, size_t classes, std::vector<std::unique_ptr<Layer>> layers,
        Backend& backend = cpu_backend());

  Backend& backend() const { return *be_; }
  // True when params() and grads() are host pointers (the CPU backend).
  bool on_host() const { return be_->host_memory(); }
  size_t param_count() const { return params_.size(); }
  // In the backend's memory.
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads() { return grad_buffer_; }
  const float* grads() const { return grad_buffer_; }
  // Copies between the flat buffers and host memory (whole buffers), for checkpoints,
  // broadcasts and parameter servers, on any backend.
  void read_params(float* host) const { params_.to_host(host, 0, params_.size()); }
  void write_params(const float* host) {
    params_.from_host(host, 0, params_.size());
    params_set_ = true;
  }
  void read_grads(float* host) const { be_->download(host, grad_buffer_, param_count() * 4); }
  // Backward writes the gradients into `external` (param_count() floats of host memory) instead
  // of the model's own buffer, until called with null: CPU ranks that reduce through shared
  // memory have backward write straight into their shared slot. Host backends only.
  void set_grad_buffer(float* external);
  size_t input_size() const { return input_size_; }
  size_t classes() const { return classes_; }

  // Deterministic initialization from a seed (the same values on every backend).
  void init(uint64_t seed);
  // True once init() or write_params() ran, or when any parameter is not zero (a model factory
  // that wrote weights through params()): the Trainer then starts from them instead of
  // initializing from --seed.
  bool holds_params() const;
  void set_grad_chunk(size_t floats);

  // Forward and backward over one batch (host memory): leaves the mean-loss gradient in grads()
  // and reports finished gradient ranges (last layer first) through `ready` (may be empty). The
  // batch's loss and hits are added to the running training sums (take_train_stats). A batch has
  // at least one sample.
  void train_step(const float* x, const uint8_t* y, size_t batch, const GradReady& ready);
  // The two halves of train_step, for callers that time them separately. backward() needs a
  // forward_train() since the last backward() or evaluate() (which reuses the activations).
  void forward_train(const float* x, const uint8_t* y, size_t batch);
  void backward(const GradReady& ready);
  // The training sums since the last call, then starts new ones. Waits for queued work.
  BatchStats take_train_stats();
  // The same without resetting them.
  BatchStats peek_train_stats() const;
  // Loss and accuracy over n samples (host memory), in batches, without touching gradients or
  // the training sums.
  BatchStats evaluate(const float* x, const uint8_t* y, size_t n, size_t eval_batch = 500);
  // The same over pixel bytes, turned into floats (pixel_value) one evaluation batch at a time.
  BatchStats evaluate_pixels(const uint8_t* x, const uint8_t* y, size_t n, size_t eval_batch = 500);

  nlohmann::json spec() const;
  std::vector<TensorRange> tensors() const;

 private:
  void ensure_batch(size_t batch);
  // acc: two doubles in backend memory the batch's loss sum and hits are added to.
  void forward(const float* x, const uint8_t* y, size_t batch, bool want_grad, double* acc);
  // The loss sum and hits at sums_[at], sums_[at + 1] (a wait on a device), over `count` samples.
  BatchStats read_sums(size_t at, size_t count) const;
  void zero_sums(size_t at);

  Backend* be_;
  size_t input_size_, classes_;
  std::vector<std::unique_ptr<Layer>> layers_;
  BackendArray<float> params_, grads_;
  float* grad_buffer_ = nullptr;  // grads_ or the external buffer
  size_t batch_capacity_ = 0;
  std::vector<BackendArray<float>> acts_;  // acts_[i] = output of layer i
  BackendArray<float> dbuf_[2];
  BackendArray<float> row_loss_;
  BackendArray<unsigned char> row_hit_;
  BackendArray<double> sums_;  // [train loss, train hits, eval loss, eval hits]
  size_t train_count_ = 0;
  StagedBatch staged_{nullptr, nullptr};  // the batch forward_train ran on
  size_t staged_rows_ = 0;
  bool backward_pending_ = false;  // forward_train ran; backward may use its activations
  bool params_set_ = false;        // init() or write_params() ran
};

// 784 -> hidden[0] -> ReLU -> hidden[1] -> ReLU ... -> classes.
std::unique_ptr<Model> build_mlp(size_t input_size, const std::vector<size_t>& hidden,
                                 size_t classes, Backend& backend = cpu_backend());

// The classic MNIST convnet: conv 5x5x32, ReLU, max-pool 2, conv 5x5x64, ReLU, max-pool 2,
// dense 1024, ReLU, dense 10 ("same" padding, so 28 -> 14 -> 7).
std::unique_ptr<Model> build_cnn(size_t rows, size_t cols, size_t classes,
                                 Backend& backend = cpu_backend());

// "mlp" (784 -> first -> second -> classes) or "cnn".
std::unique_ptr<Model> build_model(const std::string& name, size_t rows, size_t cols, size_t first,
                                   size_t second, size_t classes, Backend& backend = cpu_backend());

}  // namespace dtrain
