// The IDX format of MNIST (http://yann.lecun.com/exdb/mnist/): a big-endian header
// {0, 0, type=0x08 (ubyte), ndims} then ndims 32-bit sizes, then the data. Files may be raw or
// gzip'd; zlib reads both through one call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dtrain {

struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

// Reads and validates one IDX file of unsigned bytes. Errors (InputError) name the file and
// what is wrong: missing, wrong magic, truncated, trailing bytes, sizes out of range.
IdxArray read_idx(const std::string& path);

// Writes an IDX ubyte file, raw or gzip'd; used by tests and data tools.
void write_idx(const std::string& path, const std::vector<uint32_t>& dims,
               const std::vector<uint8_t>& data, bool gz = false);

}  // namespace dtrain
