#include "runtime/idx.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>

#include "runtime/env.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace dtrain {

namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> read_all(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw InputError(path + ": cannot open (missing file or no permission)");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  for (;;) {
    const int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int errnum = 0;
      std::string msg = gzerror(f, &errnum);
      gzclose(f);
      throw InputError(path + ": read failed: " + msg);
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  // A truncated .gz stream reads as a short file without an error from gzread on some zlib
  // versions; gzclose_r reports it.
  const int rc = gzclose(f);
  if (rc != Z_OK && rc != Z_BUF_ERROR)
    throw InputError(path + ": corrupt gzip stream (zlib error " + std::to_string(rc) + ")");
  if (rc == Z_BUF_ERROR) throw InputError(path + ": truncated gzip stream");
  return out;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// Checks the header against the bytes; returns the dimensions and where the data starts.
std::vector<uint32_t> parse_header(const std::string& path, const uint8_t* bytes, size_t n,
                                   size_t* header_out) {
  if (n < 4)
    throw InputError(detail::cat(path, ": truncated: ", n, " bytes, too short for an IDX header"));
  if (bytes[0] != 0 || bytes[1] != 0)
    throw InputError(detail::cat(path, ": wrong magic number 0x", std::hex, be32(bytes),
                                 " (an IDX file starts with 0x0000)"));
  if (bytes[2] != 0x08)
    throw InputError(detail::cat(path, ": element type 0x", std::hex, int(bytes[2]),
                                 " is not supported (expected 0x08, unsigned byte)"));
  const size_t ndims = bytes[3];
  if (ndims < 1 || ndims > 4)
    throw InputError(detail::cat(path, ": ", ndims, " dimensions (expected 1 to 4)"));
  const size_t header = 4 + 4 * ndims;
  if (n < header)
    throw InputError(
        detail::cat(path, ": truncated: header needs ", header, " bytes, file has ", n));
  std::vector<uint32_t> dims;
  size_t total = 1;
  for (size_t i = 0; i < ndims; ++i) {
    const uint32_t d = be32(bytes + 4 + 4 * i);
    if (d > (1u << 28))
      throw InputError(detail::cat(path, ": dimension ", i, " is ", d, ", implausibly large"));
    dims.push_back(d);
    if (__builtin_mul_overflow(total, size_t(d), &total))
      throw InputError(detail::cat(path, ": the header's dimensions multiply past 2^64 bytes"));
  }
  if (n - header < total)
    throw InputError(detail::cat(path, ": truncated: header promises ", total,
                                 " data bytes, file has ", n - header));
  if (n - header > total)
    throw InputError(
        detail::cat(path, ": ", n - header - total, " unexpected bytes after the data"));
  *header_out = header;
  return dims;
}

// A mapped file truncated or rewritten in place while a job reads it (cp over it, an editor)
// raises SIGBUS at the next read of a page past its new end: without a word, exit 135. The
// mappings are registered here, and a SIGBUS inside one ends the process with a message naming
// the file (exit 2); any other SIGBUS goes to the handler that was there before (Open MPI's, or
// the default).
struct MappedRange {
  std::atomic<const char*> begin{nullptr};
  size_t size = 0;
  char message[512] = "";
};
MappedRange g_ranges[64];
struct sigaction g_previous_sigbus {};

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const char* addr = static_cast<const char*>(info->si_addr);
  for (auto& r : g_ranges) {
    const char* b = r.begin.load(std::memory_order_acquire);
    if (b && addr >= b && addr < b + r.size) {
      const ssize_t n = ::write(STDERR_FILENO, r.message, std::strlen(r.message));
      (void)n;
      _exit(2);
    }
  }
  if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
    g_previous_sigbus.sa_sigaction(sig, info, context);
  } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN) {
    g_previous_sigbus.sa_handler(sig);
  } else {
    signal(SIGBUS, SIG_DFL);  // the faulting read runs again and ends the process as before
  }
}

void register_mapping(const void* p, size_t n, const std::string& path) {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& r : g_ranges) {
    if (r.begin.load(std::memory_order_relaxed)) continue;
    std::snprintf(r.message, sizeof(r.message),
                  "dtrain: error: %s changed or was truncated while this process had it mapped "
                  "(bus error reading it): data files must stay as they are while a job runs\n",
                  path.c_str());
    r.size = n;
    r.begin.store(static_cast<const char*>(p), std::memory_order_release);
    return;
  }  // more than 64 mappings at once: the rest keep the default behaviour
}

void unregister_mapping(const void* p) {
  for (auto& r : g_ranges)
    if (r.begin.load(std::memory_order_relaxed) == p) r.begin.store(nullptr);
}

// A read-only mapping of a whole file; unmapped when the last Bytes viewing it goes.
struct Mapping {
  void* p = MAP_FAILED;
  size_t n = 0;
  ~Mapping() {
    if (p == MAP_FAILED) return;
    unregister_mapping(p);
    munmap(p, n);
  }
};

// Maps path; null when it cannot be opened or mapped (the caller falls back or reports).
// owner_only: only a file of this user's that nobody else may write (a cache file).
std::shared_ptr<Mapping> map_file(const std::string& path, bool owner_only = false) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat st {};
  auto m = std::make_shared<Mapping>();
  if (fstat(fd, &st) == 0 && st.st_size > 0 &&
      (!owner_only || (st.st_uid == geteuid() && (st.st_mode & 022) == 0))) {
    m->n = size_t(st.st_size);
    m->p = mmap(nullptr, m->n, PROT_READ, MAP_SHARED, fd, 0);
    if (m->p != MAP_FAILED) register_mapping(m->p, m->n, path);
  }
  ::close(fd);
  return m->p == MAP_FAILED ? nullptr : m;
}

bool is_gzip(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  unsigned char m[2] = {0, 0};
  const bool gz = std::fread(m, 1, 2, f) == 2 && m[0] == 0x1f && m[1] == 0x8b;
  std::fclose(f);
  return gz;
}

uint32_t crc_of(const uint8_t* p, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  for (size_t off = 0; off < n;) {  // crc32 takes an unsigned int length
    const size_t chunk = std::min<size_t>(n - off, 1u << 30);
    c = crc32(c, p + off, uInt(chunk));
    off += chunk;
  }
  return uint32_t(c);
}

// A cache file holds the decompressed IDX bytes as they are; its name ends in their size and
// CRC-32 ("-<size>-<crc>"), computed while decompressing, which every use checks. (The .gz file's
// own trailer is no such record: a .gz of several members, or with padding after its stream, has
// none at its end, and its cache was rebuilt at every start.)
std::string cache_suffix(size_t size, uint32_t crc) {
  char s[48];
  std::snprintf(s, sizeof(s), "-%zu-%08x", size, crc);
  return s;
}
// The cache file for a .gz: named after its absolute path, size and modification time, so a
// changed or different file gets its own.
std::string cache_path_for(const std::string& gz) {
  std::error_code ec;
  const fs::path abs = fs::absolute(gz, ec);
  struct stat st {};
  ::stat(gz.c_str(), &st);
  const std::string key =
      detail::cat(abs.string(), '|', st.st_size, '|', st.st_mtim.tv_sec, '.', st.st_mtim.tv_nsec);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016zx", std::hash<std::string>{}(key));
  std::string base = fs::path(gz).filename().string();
  if (base.size() > 3 && base.compare(base.size() - 3, 3, ".gz") == 0) base.resize(base.size() - 3);
  return (fs::path(idx_cache_dir()) / (base + "-" + hex)).string();
}

// The decompressed bytes of a .gz file, through the cache when one can be written.
Bytes gz_bytes(const std::string& path, bool* mapped) {
  const std::string prefix = cache_path_for(path);  // + "-<size>-<crc>"
  const fs::path dir = fs::path(prefix).parent_path();
  const std::string stem = fs::path(prefix).filename().string() + "-";
  // A cache file of this user's (nobody else may write it) whose bytes match its name.
  auto usable = [](const std::string& file, size_t size, uint32_t crc) -> std::shared_ptr<Mapping> {
    auto m = map_file(file, /*owner_only=*/true);
    if (m && m->n == size && crc_of(static_cast<const uint8_t*>(m->p), m->n) == crc) return m;
    return nullptr;
  };
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    unsigned long long size = 0;
    unsigned crc = 0;
    char tail = 0;
    if (name.compare(0, stem.size(), stem) != 0 ||
        std::sscanf(name.c_str() + stem.size(), "%llu-%8x%c", &size, &crc, &tail) != 2 ||
        name != fs::path(prefix).filename().string() + cache_suffix(size, crc))
      continue;
    if (auto m = usable(it->path().string(), size, crc)) {
      *mapped = true;
      return Bytes::view(m, static_cast<const uint8_t*>(m->p), m->n);
    }
  }
  std::vector<uint8_t> bytes = read_all(path);
  size_t header = 0;
  parse_header(path, bytes.data(), bytes.size(), &header);  // bad data fails as before
  const uint32_t crc = crc_of(bytes.data(), bytes.size());
  const std::string cached = prefix + cache_suffix(bytes.size(), crc);
  // Written under a name of its own, then renamed: a rank that races us maps either the old
  // state (nothing) or a whole file, never a torn one.
  ec.clear();
  if (fs::create_directories(dir, ec) && !ec)  // a new folder is this user's alone
    fs::permissions(dir, fs::perms::owner_all, ec);
  const std::string tmp = detail::cat(cached, ".tmp.", getpid());
  const int fd = ec ? -1 : ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (std::FILE* f = fd < 0 ? nullptr : fdopen(fd, "wb")) {
    const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() &&
                    std::fflush(f) == 0 && fsync(fileno(f)) == 0;
    std::fclose(f);
    if (ok && std::rename(tmp.c_str(), cached.c_str()) == 0) {
      if (auto m = usable(cached, bytes.size(), crc)) {
        *mapped = true;
        return Bytes::view(m, static_cast<const uint8_t*>(m->p), m->n);
      }
    }
    std::remove(tmp.c_str());
  } else if (fd >= 0) {
    ::close(fd);
  }
  log_debug(path, ": no usable cache at ", cached, "; keeping the decompressed data in memory");
  *mapped = false;
  return Bytes(std::move(bytes));
}

}  // namespace

std::string idx_cache_dir() {
  const EnvConfig env = read_env();
  if (env.cache_dir) return *env.cache_dir;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return (fs::path(x) / "dtrain").string();
  if (const char* h = std::getenv("HOME"); h && *h)
    return (fs::path(h) / ".cache" / "dtrain").string();
  return (fs::temp_directory_path() / "dtrain-cache").string();
}

IdxArray read_idx(const std::string& path) {
  IdxArray a;
  Bytes file;
  if (is_gzip(path)) {
    file = gz_bytes(path, &a.mapped);
  } else if (auto m = map_file(path)) {
    file = Bytes::view(m, static_cast<const uint8_t*>(m->p), m->n);
    a.mapped = true;
  } else {
    file = Bytes(read_all(path));  // empty files and the unmappable (and the missing: it throws)
  }
  size_t header = 0;
  a.dims = parse_header(path, file.data(), file.size(), &header);
  a.data = file.sub(header, file.size() - header);
  return a;
}

void write_idx(const std::string& path, const std::vector<uint32_t>& dims,
               const std::vector<uint8_t>& data, bool gz) {
  std::vector<uint8_t> bytes = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<uint8_t>(d >> s));
  bytes.insert(bytes.end(), data.begin(), data.end());
  gzFile f = gzopen(path.c_str(), gz ? "wb6" : "wbT");  // T: plain, uncompressed output
  if (!f) throw InputError(path + ": cannot create");
  const int n = gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  if (gzclose(f) != Z_OK || n != static_cast<int>(bytes.size()))
    throw InputError(path + ": write failed");
}

}  // namespace dtrain
