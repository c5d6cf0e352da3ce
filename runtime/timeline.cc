#include "runtime/timeline.h"

#include "runtime/files.h"

namespace dtrain {

void Timeline::span(const std::string& name, int tid, int64_t start_us, int64_t end_us,
                    nlohmann::json args) {
  if (!enabled_) return;
  nlohmann::json e = {{"name", name}, {"ph", "X"},      {"pid", pid_},
                      {"tid", tid},   {"ts", start_us}, {"dur", end_us - start_us}};
  if (!args.is_null()) e["args"] = std::move(args);
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(e));
}

size_t Timeline::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_.size();
}

void Timeline::write(const std::string& path) const {
  nlohmann::json doc;
  {
    std::lock_guard<std::mutex> lock(mu_);
    doc["traceEvents"] = events_;
  }
  doc["displayTimeUnit"] = "ms";
  write_file_atomic(path, doc.dump());
}

}  // namespace dtrain
