// Minibatches for data-parallel training. Every epoch, all ranks draw the same permutation of
// the training set from (seed, epoch); global step s covers positions [s*B*n, (s+1)*B*n) of it and
// rank r takes the r-th block of B. So n ranks at batch B see exactly the samples, in the order,
// that one rank at batch n*B sees, and all ranks run the same number of steps. When the set does
// not divide into global batches, the last one wraps around to the start of the permutation
// (as PyTorch's DistributedSampler pads), so no rank is ever left waiting at an epoch's end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dtrain {

class Batcher {
 public:
  Batcher(size_t samples, size_t batch, size_t rank, size_t world, uint64_t seed);

  size_t steps_per_epoch() const { return steps_; }
  size_t batch() const { return batch_; }
  void start_epoch(uint64_t epoch);
  // The sample indices of this rank's batch at `step` of the current epoch.
  const std::vector<uint32_t>& indices(size_t step);

 private:
  size_t samples_, batch_, rank_, world_;
  uint64_t seed_;
  size_t steps_;
  std::vector<uint32_t> perm_, out_;
};

// Copies the batch's rows of a [n x features] matrix of pixel bytes, as floats (pixel_value),
// and its labels into contiguous buffers.
void gather_batch(const std::vector<uint32_t>& idx, const uint8_t* images, const uint8_t* labels,
                  size_t features, float* x_out, uint8_t* y_out);

}  // namespace dtrain
