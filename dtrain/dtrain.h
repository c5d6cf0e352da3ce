// dtrain's public API, in one header: describe a job (JobOptions, or flags that fill it), bring a
// model (the built-ins or your own layers over the flat buffers), and run it alone, as an
// allreduce rank or in a parameter-server job with dtrain::Job / dtrain::run_job.
#pragma once

#include "dtrain/device.h"      // IWYU pragma: export
#include "dtrain/flags.h"       // IWYU pragma: export
#include "dtrain/job.h"         // IWYU pragma: export
#include "runtime/conv2d.h"     // IWYU pragma: export
#include "runtime/dataset.h"    // IWYU pragma: export
#include "runtime/error.h"      // IWYU pragma: export
#include "runtime/layers.h"     // IWYU pragma: export
#include "runtime/model.h"      // IWYU pragma: export
#include "runtime/optimizer.h"  // IWYU pragma: export
#include "runtime/trainer.h"    // IWYU pragma: export
