// Atomic file writes (design decision 4): temp file in the same folder, fsync, rename, fsync the
// folder. A crash leaves either the old file or the new one, never a torn one.
#pragma once

#include <string>
#include <string_view>

namespace dtrain {

void write_file_atomic(const std::string& path, std::string_view bytes);
std::string read_file(const std::string& path);

// A job's hold on its output folder (an flock on OUTPUT_DIR/.dtrain.lock, released when the
// OutputLock goes or the process ends, however it ends).
class OutputLock {
 public:
  OutputLock() = default;
  explicit OutputLock(int fd) : fd_(fd) {}
  OutputLock(OutputLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  OutputLock& operator=(OutputLock&& o) noexcept;
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;
  ~OutputLock();

 private:
  int fd_ = -1;
};

// Creates dir/model and takes the folder for this job: a folder that cannot be created, or one
// another running job holds (named by its pid and host), is an InputError naming it.
OutputLock lock_output_dir(const std::string& dir);

}  // namespace dtrain
