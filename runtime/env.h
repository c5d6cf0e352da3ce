// Every DTRAIN_* environment variable is read here and nowhere else, so the README's table of
// variables is this file. Bad values are InputErrors naming the variable.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace dtrain {

struct EnvConfig {
  std::optional<size_t> fusion_threshold_bytes;  // DTRAIN_FUSION_THRESHOLD (bytes)
  bool timeline_all_ranks = false;               // DTRAIN_TIMELINE_ALL_RANKS=1
};

// Reads the environment (each call reads it afresh, so tests can set variables).
EnvConfig read_env();

}  // namespace dtrain
