#include "runtime/idx.h"

#include <zlib.h>

#include "runtime/error.h"

namespace dtrain {

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
}  // namespace

IdxArray read_idx(const std::string& path) {
  std::vector<uint8_t> bytes = read_all(path);
  if (bytes.size() < 4)
    throw InputError(
        detail::cat(path, ": truncated: ", bytes.size(), " bytes, too short for an IDX header"));
  if (bytes[0] != 0 || bytes[1] != 0)
    throw InputError(detail::cat(path, ": wrong magic number 0x", std::hex, be32(bytes.data()),
                                 " (an IDX file starts with 0x0000)"));
  if (bytes[2] != 0x08)
    throw InputError(detail::cat(path, ": element type 0x", std::hex, int(bytes[2]),
                                 " is not supported (expected 0x08, unsigned byte)"));
  const size_t ndims = bytes[3];
  if (ndims < 1 || ndims > 4)
    throw InputError(detail::cat(path, ": ", ndims, " dimensions (expected 1 to 4)"));
  const size_t header = 4 + 4 * ndims;
  if (bytes.size() < header)
    throw InputError(
        detail::cat(path, ": truncated: header needs ", header, " bytes, file has ", bytes.size()));
  IdxArray a;
  size_t total = 1;
  for (size_t i = 0; i < ndims; ++i) {
    const uint32_t d = be32(bytes.data() + 4 + 4 * i);
    if (d > (1u << 28))
      throw InputError(detail::cat(path, ": dimension ", i, " is ", d, ", implausibly large"));
    a.dims.push_back(d);
    total *= d;
  }
  if (bytes.size() - header < total)
    throw InputError(detail::cat(path, ": truncated: header promises ", total,
                                 " data bytes, file has ", bytes.size() - header));
  if (bytes.size() - header > total)
    throw InputError(
        detail::cat(path, ": ", bytes.size() - header - total, " unexpected bytes after the data"));
  a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
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
