// A GPU test that cannot run on this machine skips, saying why; under DTRAIN_REQUIRE_GPU=1 (set by
// scripts/gpu-check.sh on a machine meant to have a GPU) it fails instead, with the same reason,
// so a broken driver never looks like a green run.
#pragma once

#include <gtest/gtest.h>

#include "runtime/env.h"

#define DTRAIN_SKIP_WITHOUT_GPU(why)                                                       \
  do {                                                                                     \
    if (::dtrain::read_env().require_gpu) GTEST_FAIL() << "DTRAIN_REQUIRE_GPU=1: " << why; \
    GTEST_SKIP() << why;                                                                   \
  } while (0)
