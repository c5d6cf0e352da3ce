// Chooses the GradientSync for mnist_train's --mode (auto: from the environment mpirun or the
// launcher sets), and runs a ps task's server.
#pragma once

#include <memory>
#include <optional>

#include "examples/device_factory.h"
#include "examples/train_flags.h"
#include "runtime/gradient_sync.h"

namespace dtrain {

// Also chooses the backend for --device into `device` (the GPU follows the rank's local rank,
// which only the communicator knows). `device` must outlive the returned sync.
std::unique_ptr<GradientSync> make_sync(const TrainFlags& flags, int& argc, char**& argv,
                                        DeviceChoice& device);

// When this process is a ps task (--mode ps or auto, TF_CONFIG task type "ps"), serves until the
// job ends and returns the exit code; otherwise returns nothing.
std::optional<int> run_if_ps_task(const TrainFlags& flags);

}  // namespace dtrain
