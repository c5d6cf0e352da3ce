// This process's memory as Linux counts it (/proc/self/status): what the memory benchmarks and
// the training summary report. Anonymous memory is what the process holds privately (heap,
// buffers); file-backed resident memory includes mapped data shared through the page cache.
#pragma once

#include <cstddef>

namespace dtrain {

struct MemoryUse {
  size_t peak_resident_bytes = 0;  // VmHWM
  size_t resident_bytes = 0;       // VmRSS
  size_t anonymous_bytes = 0;      // RssAnon
  size_t file_bytes = 0;           // RssFile (mapped files, libraries)
};

// Zeros where /proc is not there.
MemoryUse read_memory_use();

}  // namespace dtrain
