#include "runtime/dnnl_conv.h"

#include <oneapi/dnnl/dnnl.hpp>

#include "runtime/error.h"

namespace dtrain::cpu {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

// One argument of a primitive: the caller's plain buffer, and the layout the primitive chose.
// Where they differ, an input is reordered in before the primitive runs and an output out after.
class Port {
 public:
  Port() = default;
  Port(const memory::desc& plain, const memory::desc& wanted, bool input)
      : user_(plain, engine(), DNNL_MEMORY_NONE), differs_(plain != wanted) {
    inner_ = differs_ ? memory(wanted, engine()) : user_;
    if (differs_) re_ = input ? dnnl::reorder(user_, inner_) : dnnl::reorder(inner_, user_);
  }
  // An input: the caller's data, in the primitive's layout.
  const memory& in(const float* p) {
    user_.set_data_handle(const_cast<float*>(p));
    if (differs_) re_.execute(stream(), user_, inner_);
    return inner_;
  }
  // An output: where the primitive writes; done() moves it to p.
  const memory& out(float* p) {
    user_.set_data_handle(p);
    return inner_;
  }
  void done() {
    if (differs_) re_.execute(stream(), inner_, user_);
  }

 private:
  memory user_, inner_;
  dnnl::reorder re_;
  bool differs_ = false;
};

}  // namespace

struct DnnlConv::Prims {
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
  Port f_src, f_w, f_dst;            // forward
  Port d_diff_dst, d_w, d_diff_src;  // backward data
  Port w_src, w_diff_dst, w_diff_w;  // backward weights
  memory bias, diff_bias;            // plain vectors, used as they are
};

DnnlConv::DnnlConv(size_t in_c, size_t h, size_t w, size_t out_c, size_t k)
    : in_c_(in_c), h_(h), w_(w), out_c_(out_c), k_(k) {}

DnnlConv::~DnnlConv() = default;

DnnlConv::Prims& DnnlConv::prims(size_t batch) {
  auto& slot = by_batch_[batch];
  if (slot) return *slot;
  using dims = memory::dims;
  const auto n = memory::dim(batch), ic = memory::dim(in_c_), oc = memory::dim(out_c_),
             h = memory::dim(h_), w = memory::dim(w_), k = memory::dim(k_),
             pad = memory::dim(k_ / 2);
  const memory::desc src_plain({n, ic, h, w}, dt::f32, tag::nchw),
      dst_plain({n, oc, h, w}, dt::f32, tag::nchw), w_plain({oc, ic, k, k}, dt::f32, tag::oihw),
      b_plain({oc}, dt::f32, tag::x);
  const memory::desc src_any({n, ic, h, w}, dt::f32, tag::any),
      dst_any({n, oc, h, w}, dt::f32, tag::any), w_any({oc, ic, k, k}, dt::f32, tag::any);
  const dims strides{1, 1}, padding{pad, pad};
  auto p = std::make_unique<Prims>();
  try {
    const dnnl::convolution_forward::primitive_desc fwd_pd(
        {dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src_any, w_any,
         b_plain, dst_any, strides, padding, padding},
        engine());
    const dnnl::convolution_backward_data::primitive_desc data_pd(
        {dnnl::algorithm::convolution_direct, src_any, w_any, dst_any, strides, padding, padding},
        engine(), fwd_pd);
    const dnnl::convolution_backward_weights::primitive_desc weights_pd(
        {dnnl::algorithm::convolution_direct, src_any, w_any, b_plain, dst_any, strides, padding,
         padding},
        engine(), fwd_pd);
    p->fwd = dnnl::convolution_forward(fwd_pd);
    p->bwd_data = dnnl::convolution_backward_data(data_pd);
    p->bwd_weights = dnnl::convolution_backward_weights(weights_pd);
    p->f_src = Port(src_plain, fwd_pd.src_desc(), true);
    p->f_w = Port(w_plain, fwd_pd.weights_desc(), true);
    p->f_dst = Port(dst_plain, fwd_pd.dst_desc(), false);
    p->d_diff_dst = Port(dst_plain, data_pd.diff_dst_desc(), true);
    p->d_w = Port(w_plain, data_pd.weights_desc(), true);
    p->d_diff_src = Port(src_plain, data_pd.diff_src_desc(), false);
    p->w_src = Port(src_plain, weights_pd.src_desc(), true);
    p->w_diff_dst = Port(dst_plain, weights_pd.diff_dst_desc(), true);
    p->w_diff_w = Port(w_plain, weights_pd.diff_weights_desc(), false);
    p->bias = memory(b_plain, engine(), DNNL_MEMORY_NONE);
    p->diff_bias = memory(b_plain, engine(), DNNL_MEMORY_NONE);
  } catch (const dnnl::error& e) {
    throw Error(detail::cat("oneDNN convolution ", in_c_, "x", h_, "x", w_, " -> ", out_c_, " (",
                            k_, "x", k_, ", batch ", batch, "): ", e.what()));
  }
  slot = std::move(p);
  return *slot;
}

void DnnlConv::forward(const float* x, const float* w, const float* b, float* y, size_t batch) {
  if (batch == 0) return;
  Prims& p = prims(batch);
  p.bias.set_data_handle(const_cast<float*>(b));
  p.fwd.execute(stream(), {{DNNL_ARG_SRC, p.f_src.in(x)},
                           {DNNL_ARG_WEIGHTS, p.f_w.in(w)},
                           {DNNL_ARG_BIAS, p.bias},
                           {DNNL_ARG_DST, p.f_dst.out(y)}});
  p.f_dst.done();
  stream().wait();
}

void DnnlConv::backward_params(const float* x, const float* dy, float* dw, float* db,
                               size_t batch) {
  if (batch == 0) return;
  Prims& p = prims(batch);
  p.diff_bias.set_data_handle(db);
  p.bwd_weights.execute(stream(), {{DNNL_ARG_SRC, p.w_src.in(x)},
                                   {DNNL_ARG_DIFF_DST, p.w_diff_dst.in(dy)},
                                   {DNNL_ARG_DIFF_WEIGHTS, p.w_diff_w.out(dw)},
                                   {DNNL_ARG_DIFF_BIAS, p.diff_bias}});
  p.w_diff_w.done();
  stream().wait();
}

void DnnlConv::backward_data(const float* dy, const float* w, float* dx, size_t batch) {
  if (batch == 0) return;
  Prims& p = prims(batch);
  p.bwd_data.execute(stream(), {{DNNL_ARG_DIFF_DST, p.d_diff_dst.in(dy)},
                                {DNNL_ARG_WEIGHTS, p.d_w.in(w)},
                                {DNNL_ARG_DIFF_SRC, p.d_diff_src.out(dx)}});
  p.d_diff_src.done();
  stream().wait();
}

}  // namespace dtrain::cpu
