#include "runtime/log.h"

#include <unistd.h>

#include <cstdio>
#include <mutex>

namespace dtrain {

namespace {
std::string g_prefix = "[dtrain]";
bool g_verbose = false;
std::mutex g_mu;
}  // namespace

std::string host_name() {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  return host;
}

void set_log_identity(const std::string& role, size_t index, size_t count) {
  g_prefix = detail::cat("[", role, " ", index, "/", count, " ", host_name(), ":", getpid(), "]");
}
const std::string& log_prefix() {
  return g_prefix;
}
void set_verbose(bool v) {
  g_verbose = v;
}
bool verbose() {
  return g_verbose;
}

void log_line(const std::string& line) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::fprintf(stderr, "%s %s\n", g_prefix.c_str(), line.c_str());
  std::fflush(stderr);
}

}  // namespace dtrain
