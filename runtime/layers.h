// Layers own no memory for their parameters: the model binds each one to a view (offset, length)
// of its flat parameter and gradient buffers, in the memory of the model's Backend (host or
// GPU). A layer's parameters are laid out [W (in x out), b (out)] in that view, row-major, so
// y = x W + b. Layers do their math through the Backend, so one layer runs on every executor.
//
// Writing a layer of your own (docs/custom-model.md, "A layer of your own"):
// - its view is param_view() / grad_view(): param_count() floats at offset() of the model's
//   buffers (params_ and grads_ are the buffers' starts, shared by every layer);
// - backward writes every gradient of its view (overwrites: the buffer still holds the last
//   step's values; a layer that adds into it returns true from accumulates_grads(), and the model
//   zeroes its view before each backward);
// - `ready` takes ranges of the model's buffer (report_ready(ready, first, count) takes them in
//   the view): each finished piece once, last first, or the whole view at the end. A range
//   outside the layer's view is an error naming the layer.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/backend.h"
#include "runtime/rng.h"

namespace dtrain {

// Called with a range of the flat gradient buffer that backward will not touch again this step.
using GradReady = std::function<void(size_t offset, size_t count)>;

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string kind() const = 0;
  virtual nlohmann::json spec() const = 0;
  virtual size_t in_size() const = 0;
  virtual size_t out_size() const = 0;
  virtual size_t param_count() const { return 0; }
  // Writes this layer's initial parameters into host memory.
  virtual void init_params(float* /*params*/, Rng& /*rng*/) const {}

  // Binds the layer to its view of the model's buffers, in `be`'s memory.
  virtual void bind(Backend& be, float* params, float* grads, size_t offset) {
    be_ = &be;
    params_ = params;
    grads_ = grads;
    offset_ = offset;
  }
  size_t offset() const { return offset_; }
  // True when backward adds into its gradients instead of writing them: the model then zeroes
  // this layer's view before each backward.
  virtual bool accumulates_grads() const { return false; }

  // x: [batch x in], y: [batch x out], all in the backend's memory.
  virtual void forward(const float* x, float* y, size_t batch) = 0;
  // dy: gradient w.r.t. y (a layer may overwrite it); dx: null when the input needs no gradient.
  // Writes this layer's parameter gradients and reports them through `ready` as they become final.
  virtual void backward(const float* x, const float* y, float* dy, float* dx, size_t batch,
                        const GradReady& ready) = 0;

  // Largest gradient piece a layer reports at once (0: whole layer). Smaller pieces let an
  // allreduce start before the layer's backward has finished.
  void set_grad_chunk(size_t floats) { grad_chunk_ = floats; }

 protected:
  // This layer's parameters and gradients: param_count() floats each, in the backend's memory.
  float* param_view() const { return params_ + offset_; }
  float* grad_view() const { return grads_ + offset_; }
  // Reports [first, first + count) of this layer's view as final.
  void report_ready(const GradReady& ready, size_t first, size_t count) const {
    ready(offset_ + first, count);
  }

  Backend* be_ = nullptr;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  size_t offset_ = 0;
  size_t grad_chunk_ = 0;
};

class Dense : public Layer {
 public:
  Dense(size_t in, size_t out) : in_(in), out_(out) {}
  std::string kind() const override { return "dense"; }
  nlohmann::json spec() const override;
  size_t in_size() const override { return in_; }
  size_t out_size() const override { return out_; }
  size_t param_count() const override { return in_ * out_ + out_; }
  void init_params(float* params, Rng& rng) const override;
  void forward(const float* x, float* y, size_t batch) override;
  void backward(const float* x, const float* y, float* dy, float* dx, size_t batch,
                const GradReady& ready) override;

 private:
  size_t in_, out_;
};

class Relu : public Layer {
 public:
  explicit Relu(size_t size) : size_(size) {}
  std::string kind() const override { return "relu"; }
  nlohmann::json spec() const override;
  size_t in_size() const override { return size_; }
  size_t out_size() const override { return size_; }
  void forward(const float* x, float* y, size_t batch) override;
  void backward(const float* x, const float* y, float* dy, float* dx, size_t batch,
                const GradReady& ready) override;

 private:
  size_t size_;
};

}  // namespace dtrain
