// The async policy (see async_policy.h): one optimizer step per push, each push a whole shard.
#include "paramserver/async_policy.h"

namespace dtrain::ps {

bool AsyncPolicy::apply(const std::string& identity, const Header& h, const float* g) {
  if (!host_.need_whole_range(identity, h, 1)) return false;
  if (!shard_.initialized) {
    host_.reply_error(identity, h, "parameters are not initialized yet");
    return false;
  }
  shard_.opt.step(shard_.params.data(), g, 1.0f);
  ++shard_.version;
  return true;
}

void AsyncPolicy::push(const std::string& identity, const Header& h, const float* g,
                       bool /*in_shm*/) {
  if (apply(identity, h, g)) answer(identity, h);
}

}  // namespace dtrain::ps
