#include "runtime/model.h"

#include <algorithm>

#include "runtime/conv2d.h"
#include "runtime/cpu_ops.h"
#include "runtime/error.h"
#include "runtime/functors.h"

namespace dtrain {

Model::Model(size_t input_size, size_t classes, std::vector<std::unique_ptr<Layer>> layers)
    : input_size_(input_size), classes_(classes), layers_(std::move(layers)) {
  if (layers_.empty()) throw InputError("a model needs at least one layer");
  size_t total = 0, prev = input_size_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i]->in_size() != prev)
      throw InputError(detail::cat("layer ", i, " (", layers_[i]->kind(), ") takes ",
                                   layers_[i]->in_size(), " inputs but gets ", prev));
    prev = layers_[i]->out_size();
    total += layers_[i]->param_count();
  }
  if (prev != classes_)
    throw InputError(detail::cat("the last layer gives ", prev, " outputs, not ", classes_));
  params_.assign(total, 0.0f);
  grads_.assign(total, 0.0f);
  size_t off = 0;
  for (auto& l : layers_) {
    l->bind(params_.data(), grads_.data(), off);
    off += l->param_count();
  }
}

void Model::init(uint64_t seed) {
  Rng rng(seed, /*stream=*/1);
  for (auto& l : layers_) l->init_params(params_.data() + l->offset(), rng);
}

void Model::set_grad_chunk(size_t floats) {
  for (auto& l : layers_) l->set_grad_chunk(floats);
}

void Model::ensure_batch(size_t batch) {
  if (batch <= batch_capacity_) return;
  acts_.resize(layers_.size());
  size_t widest = input_size_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    acts_[i].assign(batch * layers_[i]->out_size(), 0.0f);
    widest = std::max(widest, layers_[i]->out_size());
  }
  dbuf_[0].assign(batch * widest, 0.0f);
  dbuf_[1].assign(batch * widest, 0.0f);
  row_loss_.assign(batch, 0.0f);
  row_hit_.assign(batch, 0);
  batch_capacity_ = batch;
}

BatchStats Model::forward(const float* x, const uint8_t* y, size_t batch, bool want_grad) {
  ensure_batch(batch);
  const float* in = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->forward(in, acts_[i].data(), batch);
    in = acts_[i].data();
  }
  for (size_t r = 0; r < batch; ++r)
    if (y[r] >= classes_) throw InputError(detail::cat("label ", int(y[r]), " >= ", classes_));
  fn::SoftmaxXentRow xent{in,
                          y,
                          want_grad ? dbuf_[0].data() : nullptr,
                          row_loss_.data(),
                          row_hit_.data(),
                          classes_,
                          1.0f / static_cast<float>(batch)};
  cpu::for_each(batch, xent);
  BatchStats s;
  s.count = batch;
  for (size_t r = 0; r < batch; ++r) {
    s.loss_sum += row_loss_[r];
    s.correct += row_hit_[r];
  }
  return s;
}

BatchStats Model::train_step(const float* x, const uint8_t* y, size_t batch,
                             const GradReady& ready) {
  BatchStats s = forward_train(x, y, batch);
  backward(x, batch, ready);
  return s;
}

BatchStats Model::forward_train(const float* x, const uint8_t* y, size_t batch) {
  return forward(x, y, batch, true);
}

void Model::backward(const float* x, size_t batch, const GradReady& ready) {
  DTRAIN_CHECK_LE(batch, batch_capacity_);
  int cur = 0;
  for (size_t i = layers_.size(); i-- > 0;) {
    const float* in = i == 0 ? x : acts_[i - 1].data();
    // The first layer's input gradient is never needed: skipping it saves a third of its GEMMs.
    float* dx = i == 0 ? nullptr : dbuf_[1 - cur].data();
    layers_[i]->backward(in, acts_[i].data(), dbuf_[cur].data(), dx, batch, ready);
    cur = 1 - cur;
  }
}

BatchStats Model::evaluate(const float* x, const uint8_t* y, size_t n, size_t eval_batch) {
  BatchStats total;
  for (size_t i = 0; i < n; i += eval_batch) {
    const size_t b = std::min(eval_batch, n - i);
    BatchStats s = forward(x + i * input_size_, y + i, b, false);
    total.loss_sum += s.loss_sum;
    total.correct += s.correct;
    total.count += s.count;
  }
  return total;
}

nlohmann::json Model::spec() const {
  nlohmann::json layers = nlohmann::json::array();
  for (auto& l : layers_) layers.push_back(l->spec());
  return {{"input_size", input_size_},
          {"classes", classes_},
          {"param_count", params_.size()},
          {"layers", layers}};
}

std::vector<TensorRange> Model::tensors() const {
  std::vector<TensorRange> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& l = layers_[i];
    if (l->param_count() == 0) continue;
    if (l->kind() == "dense") {
      const size_t w = l->in_size() * l->out_size();
      out.push_back({detail::cat("layer", i, ".weight"), l->offset(), w});
      out.push_back({detail::cat("layer", i, ".bias"), l->offset() + w, l->out_size()});
    } else {
      out.push_back({detail::cat("layer", i, ".params"), l->offset(), l->param_count()});
    }
  }
  return out;
}

std::unique_ptr<Model> build_mlp(size_t input_size, const std::vector<size_t>& hidden,
                                 size_t classes) {
  std::vector<std::unique_ptr<Layer>> layers;
  size_t prev = input_size;
  for (size_t h : hidden) {
    if (h == 0) throw InputError("a hidden layer needs at least one neuron");
    layers.push_back(std::make_unique<Dense>(prev, h));
    layers.push_back(std::make_unique<Relu>(h));
    prev = h;
  }
  layers.push_back(std::make_unique<Dense>(prev, classes));
  return std::make_unique<Model>(input_size, classes, std::move(layers));
}

std::unique_ptr<Model> build_cnn(size_t rows, size_t cols, size_t classes) {
  if (rows % 4 || cols % 4) throw InputError("the cnn needs image sides divisible by 4");
  std::vector<std::unique_ptr<Layer>> l;
  l.push_back(std::make_unique<Conv2D>(1, rows, cols, 32, 5));
  l.push_back(std::make_unique<Relu>(32 * rows * cols));
  l.push_back(std::make_unique<MaxPool2>(32, rows, cols));
  l.push_back(std::make_unique<Conv2D>(32, rows / 2, cols / 2, 64, 5));
  l.push_back(std::make_unique<Relu>(64 * rows * cols / 4));
  l.push_back(std::make_unique<MaxPool2>(64, rows / 2, cols / 2));
  l.push_back(std::make_unique<Dense>(64 * rows * cols / 16, 1024));
  l.push_back(std::make_unique<Relu>(1024));
  l.push_back(std::make_unique<Dense>(1024, classes));
  return std::make_unique<Model>(rows * cols, classes, std::move(l));
}

std::unique_ptr<Model> build_model(const std::string& name, size_t rows, size_t cols, size_t first,
                                   size_t second, size_t classes) {
  if (name == "mlp") return build_mlp(rows * cols, {first, second}, classes);
  if (name == "cnn") return build_cnn(rows, cols, classes);
  throw InputError("unknown model '" + name + "' (expected mlp or cnn)");
}

}  // namespace dtrain
