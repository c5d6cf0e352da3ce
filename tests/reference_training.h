// The reference every distributed mode is compared with: one process training an MLP at the
// global batch, over the same samples in the same order as the workers together see them.
#pragma once

#include <memory>
#include <vector>

#include "runtime/batcher.h"
#include "runtime/dataset.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"

namespace dtrain::testing {

// `steps` Adam steps at batch `global_batch`; parameters initialized and batches shuffled with
// `seed`, as the chief / rank 0 does.
inline std::unique_ptr<Model> train_one_process(const Dataset& d, const std::vector<size_t>& hidden,
                                                size_t global_batch, size_t steps, uint64_t seed) {
  auto m = build_mlp(d.features(), hidden, 10);
  m->init(seed);
  Optimizer opt(OptimizerOptions{}, m->param_count());
  Batcher one(d.train.size(), global_batch, 0, 1, seed);
  one.start_epoch(0);
  std::vector<float> x(global_batch * d.features());
  std::vector<uint8_t> y(global_batch);
  for (size_t s = 0; s < steps; ++s) {
    gather_batch(one.indices(s), d.train.images.data(), d.train.labels.data(), d.features(),
                 x.data(), y.data());
    m->train_step(x.data(), y.data(), global_batch, [](size_t, size_t) {});
    opt.step(m->params(), m->grads());
  }
  return m;
}

}  // namespace dtrain::testing
