// The IDX format of MNIST (http://yann.lecun.com/exdb/mnist/): a big-endian header
// {0, 0, type=0x08 (ubyte), ndims} then ndims 32-bit sizes, then the data.
//
// A raw file is memory-mapped read-only: every process on the machine that reads it shares one
// copy in the page cache. A gzip'd file is decompressed once into a cache file (DTRAIN_CACHE_DIR,
// else $XDG_CACHE_HOME/dtrain, else ~/.cache/dtrain; named after the .gz file's path, size and
// time) and that is mapped. The cache file is written to a temporary name and renamed into place,
// so ranks racing to create it are safe; its name ends in the size and CRC-32 of the bytes it
// holds, checked before each use (a wrong or torn one is rebuilt), and only a file of this
// user's that nobody else may write is used. Where no cache can be written the decompressed bytes
// stay in this process's memory. A mapped file that changes under a running job (SIGBUS) ends it
// with a message naming the file, exit 2.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/bytes.h"

namespace dtrain {

struct IdxArray {
  std::vector<uint32_t> dims;
  Bytes data;  // mapped (or, without a cache, owned)
  bool mapped = false;
};

// Reads and validates one IDX file of unsigned bytes. Errors (InputError) name the file and
// what is wrong: missing, wrong magic, truncated, trailing bytes, sizes out of range.
IdxArray read_idx(const std::string& path);

// Where decompressed .gz files are cached (see above).
std::string idx_cache_dir();

// Writes an IDX ubyte file, raw or gzip'd; used by tests and data tools.
void write_idx(const std::string& path, const std::vector<uint32_t>& dims,
               const std::vector<uint8_t>& data, bool gz = false);

}  // namespace dtrain
