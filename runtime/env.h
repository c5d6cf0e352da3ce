// Every DTRAIN_* environment variable is read here and nowhere else, so the README's table of
// variables is this file. Bad values are InputErrors naming the variable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace dtrain {

struct EnvConfig {
  std::optional<size_t> fusion_threshold_bytes;  // DTRAIN_FUSION_THRESHOLD (bytes)
  std::optional<std::string> tf_config;          // TF_CONFIG (TensorFlow's name, kept)
  std::optional<uint64_t> job_id;                // DTRAIN_JOB_ID (the launcher sets one per job)
};

// Reads the environment (each call reads it afresh, so tests can set variables).
EnvConfig read_env();

}  // namespace dtrain
