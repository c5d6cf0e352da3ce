#include "runtime/memory_use.h"

#include <fstream>
#include <string>

namespace dtrain {

MemoryUse read_memory_use() {
  MemoryUse m;
  std::ifstream in("/proc/self/status");
  std::string key;
  size_t kb = 0;
  while (in >> key) {
    if (key == "VmHWM:" || key == "VmRSS:" || key == "RssAnon:" || key == "RssFile:") {
      in >> kb;
      const size_t bytes = kb * 1024;
      if (key == "VmHWM:") m.peak_resident_bytes = bytes;
      if (key == "VmRSS:") m.resident_bytes = bytes;
      if (key == "RssAnon:") m.anonymous_bytes = bytes;
      if (key == "RssFile:") m.file_bytes = bytes;
    }
    in.ignore(1 << 10, '\n');
  }
  return m;
}

}  // namespace dtrain
