// A model is a stack of layers over one flat parameter buffer and one flat gradient buffer
// (design decision 1): fusion buckets are contiguous ranges, a checkpoint is one write, a
// parameter-server shard is a range, a broadcast is one call. The loss is softmax cross-entropy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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
  Model(size_t input_size, size_t classes, std::vector<std::unique_ptr<Layer>> layers);

  size_t param_count() const { return params_.size(); }
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads() { return grads_.data(); }
  const float* grads() const { return grads_.data(); }
  size_t input_size() const { return input_size_; }
  size_t classes() const { return classes_; }

  // Deterministic initialization from a seed.
  void init(uint64_t seed);
  void set_grad_chunk(size_t floats);

  // Forward and backward over one batch: leaves the mean-loss gradient in grads() and reports
  // finished gradient ranges (last layer first) through `ready`.
  BatchStats train_step(const float* x, const uint8_t* y, size_t batch, const GradReady& ready);
  // The two halves of train_step, for callers that time them separately.
  BatchStats forward_train(const float* x, const uint8_t* y, size_t batch);
  void backward(const float* x, size_t batch, const GradReady& ready);
  // Loss and accuracy over n samples, in batches, without touching gradients.
  BatchStats evaluate(const float* x, const uint8_t* y, size_t n, size_t eval_batch = 500);

  nlohmann::json spec() const;
  std::vector<TensorRange> tensors() const;

 private:
  void ensure_batch(size_t batch);
  BatchStats forward(const float* x, const uint8_t* y, size_t batch, bool want_grad);

  size_t input_size_, classes_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<float> params_, grads_;
  size_t batch_capacity_ = 0;
  std::vector<std::vector<float>> acts_;  // acts_[i] = output of layer i
  std::vector<float> dbuf_[2];
  std::vector<float> row_loss_;
  std::vector<unsigned char> row_hit_;
};

// 784 -> hidden[0] -> ReLU -> hidden[1] -> ReLU ... -> classes.
std::unique_ptr<Model> build_mlp(size_t input_size, const std::vector<size_t>& hidden,
                                 size_t classes);

// The classic MNIST convnet: conv 5x5x32, ReLU, max-pool 2, conv 5x5x64, ReLU, max-pool 2,
// dense 1024, ReLU, dense 10 ("same" padding, so 28 -> 14 -> 7).
std::unique_ptr<Model> build_cnn(size_t rows, size_t cols, size_t classes);

// "mlp" (784 -> first -> second -> classes) or "cnn".
std::unique_ptr<Model> build_model(const std::string& name, size_t rows, size_t cols, size_t first,
                                   size_t second, size_t classes);

}  // namespace dtrain
