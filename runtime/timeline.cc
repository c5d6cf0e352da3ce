#include "runtime/timeline.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"
#include "runtime/files.h"
#include "runtime/log.h"

namespace dtrain {

namespace {
constexpr const char* kHeader = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
constexpr const char* kTrailer = "\n]}\n";
constexpr size_t kFlushBytes = 256 << 10;
}  // namespace

void Timeline::open(const std::string& path, int pid) {
  close();
  std::error_code ec;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);  // as before: made
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f)
    throw InputError(
        detail::cat("--timeline ", path, ": cannot write it (", std::strerror(errno), ")"));
  std::lock_guard<std::mutex> lock(mu_);
  file_ = f;
  path_ = path;
  pending_ = kHeader;
  flush_locked();
  enabled_ = file_ != nullptr;
  pid_ = pid;
  stop_flusher_ = false;
  if (file_)
    flusher_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!stop_flusher_) {
        wake_.wait_for(lock, std::chrono::seconds(1));
        if (!stop_flusher_ && file_ && !pending_.empty()) flush_locked();
      }
    });
}

void Timeline::flush_locked() {
  if (!file_) return;
  const bool ok = std::fwrite(pending_.data(), 1, pending_.size(), file_) == pending_.size() &&
                  std::fflush(file_) == 0;
  pending_.clear();
  if (!ok) {
    log_info("warning: --timeline ", path_, ": writing failed (", std::strerror(errno),
             "); the timeline stops here, training goes on");
    std::fclose(file_);
    file_ = nullptr;
    enabled_ = false;
  }
}

void Timeline::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_flusher_ = true;
  }
  wake_.notify_all();
  if (flusher_.joinable()) flusher_.join();
  std::lock_guard<std::mutex> lock(mu_);
  if (!file_) return;
  pending_ += kTrailer;
  flush_locked();
  if (file_) std::fclose(file_);
  file_ = nullptr;
  enabled_ = false;
}

void Timeline::span(const std::string& name, int tid, int64_t start_us, int64_t end_us,
                    nlohmann::json args) {
  if (!enabled_) return;
  nlohmann::json e = {{"name", name}, {"ph", "X"},      {"pid", pid_},
                      {"tid", tid},   {"ts", start_us}, {"dur", end_us - start_us}};
  if (!args.is_null()) e["args"] = std::move(args);
  std::lock_guard<std::mutex> lock(mu_);
  if (!enabled_) return;
  ++count_;
  if (!file_) {
    events_.push_back(std::move(e));
    return;
  }
  if (count_ > 1) pending_ += ",\n";
  pending_ += e.dump();
  if (pending_.size() >= kFlushBytes) flush_locked();  // else the flusher, within a second
}

size_t Timeline::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
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
