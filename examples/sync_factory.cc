#include "examples/sync_factory.h"

#include "runtime/error.h"
#include "runtime/log.h"

namespace dtrain {

std::unique_ptr<GradientSync> make_sync(const TrainFlags& flags, int& /*argc*/, char**& /*argv*/) {
  std::string mode = flags.mode;
  if (mode == "auto") mode = "local";
  if (mode == "local") {
    set_log_identity("worker", 0, 1);
    return std::make_unique<LocalSync>();
  }
  throw InputError("--mode " + mode + " is not available in this build");
}

}  // namespace dtrain
