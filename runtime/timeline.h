// Spans in Chrome's trace-event format ("ph":"X"), loadable in Perfetto or chrome://tracing.
// Recording is a mutex and a buffer append; disabled timelines cost one branch.
//
// open() streams the events to a file as they come (flushed at least once a second), so a job
// that stops on SIGTERM, an error or a stall keeps its timeline up to that moment, and a long
// job does not hold its events in memory. close() (or the destructor, on the way out of an
// error) ends the document; a process killed outright leaves it without its last "]}", which
// Perfetto reads as it is.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace dtrain {

class Timeline {
 public:
  Timeline() : t0_(std::chrono::steady_clock::now()) {}
  ~Timeline() { close(); }
  Timeline(const Timeline&) = delete;
  Timeline& operator=(const Timeline&) = delete;
  // Records in memory (write() saves it).
  void enable(int pid) {
    enabled_ = true;
    pid_ = pid;
  }
  // Records and streams to `path`, created now: a path that cannot be written is an InputError
  // here, before any training. A later write failure (a full disk) is a warning and the
  // recording stops; training goes on.
  void open(const std::string& path, int pid);
  // Writes what is buffered and ends the document. Safe to call more than once.
  void close();
  bool enabled() const { return enabled_; }
  int64_t now_us() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                 t0_)
        .count();
  }
  void span(const std::string& name, int tid, int64_t start_us, int64_t end_us,
            nlohmann::json args = nullptr);
  // Writes {"traceEvents": [...]} atomically (the in-memory recording of enable()).
  void write(const std::string& path) const;
  // Events recorded so far.
  size_t size() const;

 private:
  void flush_locked();  // mu_ held

  std::atomic<bool> enabled_{false};
  int pid_ = 0;
  std::chrono::steady_clock::time_point t0_;
  mutable std::mutex mu_;
  std::vector<nlohmann::json> events_;  // enable(): in memory
  size_t count_ = 0;
  std::FILE* file_ = nullptr;  // open(): streamed
  std::string path_, pending_;
  // open(): writes what is pending once a second even when no span comes (a stalled job,
  // which the watchdog then ends with _Exit, kept nothing of its last second otherwise).
  std::thread flusher_;
  std::condition_variable wake_;
  bool stop_flusher_ = false;
};

}  // namespace dtrain
