#include "runtime/batcher.h"

#include <cstring>

#include "runtime/dataset.h"
#include "runtime/error.h"
#include "runtime/rng.h"

namespace dtrain {

Batcher::Batcher(size_t samples, size_t batch, size_t rank, size_t world, uint64_t seed)
    : samples_(samples), batch_(batch), rank_(rank), world_(world), seed_(seed) {
  if (batch == 0) throw InputError("batch size must be at least 1");
  if (world == 0 || rank >= world)
    throw InputError(detail::cat("rank ", rank, " is not in a world of ", world));
  if (samples == 0) throw InputError("the training set is empty");
  const size_t global = batch * world;
  steps_ = (samples + global - 1) / global;
  out_.resize(batch);
}

void Batcher::start_epoch(uint64_t epoch) {
  Rng rng(seed_, 1000 + epoch);
  perm_ = permutation(samples_, rng);
}

const std::vector<uint32_t>& Batcher::indices(size_t step) {
  DTRAIN_CHECK_LT(step, steps_);
  DTRAIN_CHECK_EQ(perm_.size(), samples_);
  const size_t base = (step * world_ + rank_) * batch_;
  for (size_t j = 0; j < batch_; ++j) out_[j] = perm_[(base + j) % samples_];
  return out_;
}

void gather_batch(const std::vector<uint32_t>& idx, const uint8_t* images, const uint8_t* labels,
                  size_t features, float* x_out, uint8_t* y_out) {
  for (size_t j = 0; j < idx.size(); ++j) {
    const uint8_t* row = images + size_t(idx[j]) * features;
    float* x = x_out + j * features;
    for (size_t k = 0; k < features; ++k) x[k] = pixel_value(row[k]);
    y_out[j] = labels[idx[j]];
  }
}

}  // namespace dtrain
