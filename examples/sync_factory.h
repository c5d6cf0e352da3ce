// Chooses the GradientSync for mnist_train's --mode (auto: from the environment mpirun sets).
#pragma once

#include <memory>

#include "examples/train_flags.h"
#include "runtime/gradient_sync.h"

namespace dtrain {

std::unique_ptr<GradientSync> make_sync(const TrainFlags& flags, int& argc, char**& argv);

}  // namespace dtrain
