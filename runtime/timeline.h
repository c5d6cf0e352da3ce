// Spans in Chrome's trace-event format ("ph":"X"), loadable in Perfetto or chrome://tracing.
// Recording is a mutex and a vector push; disabled timelines cost one branch.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dtrain {

class Timeline {
 public:
  Timeline() : t0_(std::chrono::steady_clock::now()) {}
  void enable(int pid) {
    enabled_ = true;
    pid_ = pid;
  }
  bool enabled() const { return enabled_; }
  int64_t now_us() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                 t0_)
        .count();
  }
  void span(const std::string& name, int tid, int64_t start_us, int64_t end_us,
            nlohmann::json args = nullptr);
  // Writes {"traceEvents": [...]} atomically.
  void write(const std::string& path) const;
  size_t size() const;

 private:
  bool enabled_ = false;
  int pid_ = 0;
  std::chrono::steady_clock::time_point t0_;
  mutable std::mutex mu_;
  std::vector<nlohmann::json> events_;
};

}  // namespace dtrain
