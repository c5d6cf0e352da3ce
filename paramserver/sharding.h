// How the flat parameter vector is split over ps tasks: contiguous ranges balanced by bytes.
// Splitting the flat buffer, not whole tensors, is what keeps servers even: placing whole tensors
// (TF1's round-robin) or equal key ranges (ps-lite) leaves one server with the 235,200-float first
// layer and the others idle. Every process computes the same split from (count, servers).
#pragma once

#include <cstddef>
#include <vector>

namespace dtrain::ps {

struct Range {
  size_t offset = 0, count = 0;
};

// servers ranges covering [0, count) in order; sizes differ by at most one element.
std::vector<Range> shard_ranges(size_t count, size_t servers);

}  // namespace dtrain::ps
