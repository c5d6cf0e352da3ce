// Logging: lines on stderr with a prefix that names the process ("[rank 1/4 host:pid]").
#pragma once

#include <string>

#include "runtime/error.h"

namespace dtrain {

// This machine's name (gethostname).
std::string host_name();
void set_log_identity(const std::string& role, size_t index, size_t count);
const std::string& log_prefix();
void set_verbose(bool v);
bool verbose();
void log_line(const std::string& line);

template <typename... Args>
void log_info(const Args&... args) {
  log_line(detail::cat(args...));
}
template <typename... Args>
void log_debug(const Args&... args) {
  if (verbose()) log_line(detail::cat(args...));
}

}  // namespace dtrain
