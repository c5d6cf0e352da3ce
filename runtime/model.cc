#include "runtime/model.h"

#include <algorithm>

#include "runtime/conv2d.h"
#include "runtime/dataset.h"
#include "runtime/error.h"

namespace dtrain {

Model::Model(size_t input_size, size_t classes, std::vector<std::unique_ptr<Layer>> layers,
             Backend& backend)
    : be_(&backend),
      input_size_(input_size),
      classes_(classes),
      layers_(std::move(layers)),
      params_(backend),
      grads_(backend),
      dbuf_{BackendArray<float>(backend), BackendArray<float>(backend)},
      row_loss_(backend),
      row_hit_(backend),
      sums_(backend, 4) {
  if (layers_.empty()) throw InputError("a model needs at least one layer");
  if (input_size_ == 0 || classes_ == 0)
    throw InputError(detail::cat("a model needs inputs and classes (got input size ", input_size_,
                                 " and ", classes_, " classes)"));
  size_t total = 0, prev = input_size_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!layers_[i]) throw InputError(detail::cat("layer ", i, " is null"));
    if (layers_[i]->in_size() == 0 || layers_[i]->out_size() == 0)
      throw InputError(detail::cat("layer ", i, " (", layers_[i]->kind(), ") has size ",
                                   layers_[i]->in_size(), " -> ", layers_[i]->out_size(),
                                   ": a layer needs at least one input and one output"));
    if (layers_[i]->in_size() != prev)
      throw InputError(detail::cat("layer ", i, " (", layers_[i]->kind(), ") takes ",
                                   layers_[i]->in_size(), " inputs but gets ", prev));
    prev = layers_[i]->out_size();
    total += layers_[i]->param_count();
  }
  if (prev != classes_)
    throw InputError(detail::cat("the last layer gives ", prev, " outputs, not ", classes_));
  params_.assign_zero(total);
  grads_.assign_zero(total);
  set_grad_buffer(nullptr);
}

void Model::set_grad_buffer(float* external) {
  if (external && !on_host())
    throw InputError("an external gradient buffer needs a model in host memory");
  grad_buffer_ = external ? external : grads_.data();
  size_t off = 0;
  for (auto& l : layers_) {
    l->bind(*be_, params_.data(), grad_buffer_, off);
    off += l->param_count();
  }
}

void Model::init(uint64_t seed) {
  // Generated on the host, so every backend starts from the same values.
  Rng rng(seed, /*stream=*/1);
  std::vector<float> host(params_.size(), 0.0f);
  for (auto& l : layers_) l->init_params(host.data() + l->offset(), rng);
  write_params(host.data());
}

bool Model::holds_params() const {
  if (params_set_) return true;
  std::vector<float> host(params_.size());
  read_params(host.data());
  return std::any_of(host.begin(), host.end(), [](float v) { return v != 0.0f; });
}

void Model::set_grad_chunk(size_t floats) {
  for (auto& l : layers_) l->set_grad_chunk(floats);
}

void Model::ensure_batch(size_t batch) {
  if (batch <= batch_capacity_) return;
  acts_.clear();
  size_t widest = input_size_;
  for (size_t i = 0; i < layers_.size(); ++i) {
    acts_.emplace_back(*be_, batch * layers_[i]->out_size());
    widest = std::max(widest, layers_[i]->out_size());
  }
  dbuf_[0].assign_zero(batch * widest);
  dbuf_[1].assign_zero(batch * widest);
  row_loss_.assign_zero(batch);
  row_hit_.assign_zero(batch);
  batch_capacity_ = batch;
}

void Model::forward(const float* x, const uint8_t* y, size_t batch, bool want_grad, double* acc) {
  if (batch == 0) throw InputError("a batch needs at least one sample (got 0)");
  // Whatever forward_train left for backward is overwritten from here on (activations, the
  // staged batch; a larger batch reallocates them).
  backward_pending_ = false;
  ensure_batch(batch);
  // Labels are checked on the host, before they can index anything on any backend.
  for (size_t r = 0; r < batch; ++r)
    if (y[r] >= classes_) throw InputError(detail::cat("label ", int(y[r]), " >= ", classes_));
  staged_ = be_->stage_batch(x, y, batch, input_size_);
  staged_rows_ = batch;
  const float* in = staged_.x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->forward(in, acts_[i].data(), batch);
    in = acts_[i].data();
  }
  be_->softmax_xent(in, staged_.y, want_grad ? dbuf_[0].data() : nullptr, row_loss_.data(),
                    row_hit_.data(), batch, classes_, acc);
}

void Model::train_step(const float* x, const uint8_t* y, size_t batch, const GradReady& ready) {
  forward_train(x, y, batch);
  backward(ready);
}

void Model::forward_train(const float* x, const uint8_t* y, size_t batch) {
  forward(x, y, batch, true, sums_.data());
  train_count_ += batch;
  backward_pending_ = true;
}

void Model::backward(const GradReady& ready) {
  if (!backward_pending_)
    throw Error(
        "Model::backward: no forward_train() since the last backward() or evaluate() (evaluate "
        "reuses the activations backward needs: call forward_train() again)");
  backward_pending_ = false;
  const size_t batch = staged_rows_;
  // Each layer reports ranges of its own view only: one outside it (a layer of your own that
  // forgot its offset) would hand other layers' unfinished gradients to the allreduce.
  struct Reporting {
    const GradReady* to;
    const Layer* layer;
    size_t index, lo, hi;
  } rep{&ready, nullptr, 0, 0, 0};
  const GradReady checked = [r = &rep](size_t offset, size_t count) {
    if (offset < r->lo || count > r->hi - r->lo || offset - r->lo > r->hi - r->lo - count)
      throw InputError(detail::cat(
          "layer ", r->index, " (", r->layer->kind(), ") reported gradients [", offset, ", ",
          offset + count, ") ready, outside its own [", r->lo, ", ", r->hi,
          "): ready() takes offsets in the model's buffer (offset() + i; or use report_ready)"));
    if (*r->to) (*r->to)(offset, count);
  };
  int cur = 0;
  for (size_t i = layers_.size(); i-- > 0;) {
    const float* in = i == 0 ? staged_.x : acts_[i - 1].data();
    // The first layer's input gradient is never needed: skipping it saves a third of its GEMMs.
    float* dx = i == 0 ? nullptr : dbuf_[1 - cur].data();
    Layer& l = *layers_[i];
    rep.layer = &l;
    rep.index = i;
    rep.lo = l.offset();
    rep.hi = l.offset() + l.param_count();
    if (l.accumulates_grads() && l.param_count())
      be_->zero(grad_buffer_ + l.offset(), l.param_count() * sizeof(float));
    l.backward(in, acts_[i].data(), dbuf_[cur].data(), dx, batch, checked);
    cur = 1 - cur;
  }
}

BatchStats Model::read_sums(size_t at, size_t count) const {
  double s[2];
  sums_.to_host(s, at, 2);
  BatchStats b;
  b.loss_sum = s[0];
  b.correct = static_cast<size_t>(s[1]);
  b.count = count;
  return b;
}

void Model::zero_sums(size_t at) {
  const double zero[2] = {0, 0};
  sums_.from_host(zero, at, 2);
}

BatchStats Model::peek_train_stats() const {
  return read_sums(0, train_count_);
}

BatchStats Model::take_train_stats() {
  BatchStats b = peek_train_stats();
  zero_sums(0);
  train_count_ = 0;
  return b;
}

BatchStats Model::evaluate(const float* x, const uint8_t* y, size_t n, size_t eval_batch) {
  if (eval_batch == 0) throw InputError("an evaluation batch needs at least one sample (got 0)");
  zero_sums(2);
  for (size_t i = 0; i < n; i += eval_batch) {
    const size_t b = std::min(eval_batch, n - i);
    forward(x + i * input_size_, y + i, b, false, sums_.data() + 2);
  }
  return read_sums(2, n);
}

BatchStats Model::evaluate_pixels(const uint8_t* x, const uint8_t* y, size_t n, size_t eval_batch) {
  if (eval_batch == 0) throw InputError("an evaluation batch needs at least one sample (got 0)");
  zero_sums(2);
  std::vector<float> batch(std::min(eval_batch, n) * input_size_);
  for (size_t i = 0; i < n; i += eval_batch) {
    const size_t b = std::min(eval_batch, n - i);
    const uint8_t* src = x + i * input_size_;
    for (size_t k = 0; k < b * input_size_; ++k) batch[k] = pixel_value(src[k]);
    forward(batch.data(), y + i, b, false, sums_.data() + 2);
  }
  return read_sums(2, n);
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
                                 size_t classes, Backend& backend) {
  std::vector<std::unique_ptr<Layer>> layers;
  size_t prev = input_size;
  for (size_t h : hidden) {
    if (h == 0) throw InputError("a hidden layer needs at least one neuron");
    layers.push_back(std::make_unique<Dense>(prev, h));
    layers.push_back(std::make_unique<Relu>(h));
    prev = h;
  }
  layers.push_back(std::make_unique<Dense>(prev, classes));
  return std::make_unique<Model>(input_size, classes, std::move(layers), backend);
}

std::unique_ptr<Model> build_cnn(size_t rows, size_t cols, size_t classes, Backend& backend) {
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
  return std::make_unique<Model>(rows * cols, classes, std::move(l), backend);
}

std::unique_ptr<Model> build_model(const std::string& name, size_t rows, size_t cols, size_t first,
                                   size_t second, size_t classes, Backend& backend) {
  if (name == "mlp") return build_mlp(rows * cols, {first, second}, classes, backend);
  if (name == "cnn") return build_cnn(rows, cols, classes, backend);
  throw InputError("unknown model '" + name + "' (expected mlp or cnn)");
}

}  // namespace dtrain
