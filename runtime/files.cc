#include "runtime/files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "runtime/error.h"

namespace dtrain {

namespace fs = std::filesystem;

OutputLock& OutputLock::operator=(OutputLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

OutputLock::~OutputLock() {
  if (fd_ >= 0) ::close(fd_);
}

OutputLock lock_output_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "model", ec);
  if (ec)
    throw InputError(detail::cat("--output-dir ", dir, ": cannot create ",
                                 (fs::path(dir) / "model").string(), ": ", ec.message()));
  // Every file the job writes goes in these two folders: one that exists but cannot be
  // written (read-only, another user's) is found now, not after the first epoch's training.
  for (const fs::path& d : {fs::path(dir), fs::path(dir) / "model"}) {
    const std::string probe = (d / detail::cat(".dtrain.probe.", ::getpid())).string();
    const int pfd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (pfd < 0)
      throw InputError(detail::cat("--output-dir ", dir, ": cannot write files in ", d.string(),
                                   ": ", std::strerror(errno)));
    ::close(pfd);
    ::unlink(probe.c_str());
  }
  const std::string path = (fs::path(dir) / ".dtrain.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    throw InputError(
        detail::cat("--output-dir ", dir, ": cannot write ", path, ": ", std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char who[256] = "";
    const ssize_t n = ::pread(fd, who, sizeof(who) - 1, 0);
    ::close(fd);
    std::string holder(who, n > 0 ? size_t(n) : 0);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == '\0')) holder.pop_back();
    if (err == EWOULDBLOCK)
      throw InputError(detail::cat(
          "--output-dir ", dir, " is in use by another job (",
          holder.empty() ? std::string("see ") + path : holder,
          "): two jobs writing one folder overwrite each other's checkpoint and metrics; give "
          "this one another --output-dir, or wait for the other"));
    throw InputError(
        detail::cat("--output-dir ", dir, ": cannot lock ", path, ": ", std::strerror(err)));
  }
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  const std::string me = detail::cat("pid ", getpid(), " on ", host, "\n");
  // Temporary files of writes that never finished (a writer killed mid-write: each attempt's
  // have its own pid, so they piled up, each as large as a checkpoint). Nobody else writes here
  // while this process holds the folder.
  // Only the files dtrain writes there: anything else is the user's.
  const std::pair<fs::path, std::vector<std::string>> ours[] = {
      {fs::path(dir), {"metrics.jsonl"}},
      {fs::path(dir) / "model", {"checkpoint.bin", "model.json"}}};
  for (const auto& [d, names] : ours) {
    for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      const size_t at = name.rfind(".tmp.");
      if (at == std::string::npos || at + 5 == name.size() ||
          name.find_first_not_of("0123456789", at + 5) != std::string::npos ||
          std::find(names.begin(), names.end(), name.substr(0, at)) == names.end())
        continue;
      std::error_code rm;
      if (it->is_regular_file(rm)) fs::remove(it->path(), rm);
    }
    ec.clear();
  }
  // Who holds it, for another job's message only: a failure here changes nothing.
  const bool noted =
      ::ftruncate(fd, 0) == 0 && ::pwrite(fd, me.data(), me.size(), 0) == ssize_t(me.size());
  (void)noted;
  return OutputLock(fd);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(detail::cat("cannot create folder ", dir.string(), ": ", ec.message()));
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(detail::cat("cannot create ", tmp, ": ", std::strerror(errno)));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error(detail::cat("writing ", tmp, ": ", std::strerror(e)));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw Error(detail::cat("flushing ", tmp, ": ", std::strerror(e)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw Error(detail::cat("renaming ", tmp, " to ", path, ": ", std::strerror(e)));
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw InputError(path + ": is a folder, not a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path + ": cannot open");
  std::ostringstream os;
  os << f.rdbuf();
  if (f.bad()) throw InputError(path + ": cannot read it");
  return os.str();
}

}  // namespace dtrain
