#include "paramserver/sharding.h"

#include "runtime/error.h"

namespace dtrain::ps {

std::vector<Range> shard_ranges(size_t count, size_t servers) {
  if (servers == 0) throw InputError("parameter-server mode needs at least one ps task");
  std::vector<Range> out(servers);
  size_t off = 0;
  for (size_t s = 0; s < servers; ++s) {
    const size_t n = count / servers + (s < count % servers ? 1 : 0);
    out[s] = {off, n};
    off += n;
  }
  return out;
}

}  // namespace dtrain::ps
