// Atomic file writes (design decision 4): temp file in the same folder, fsync, rename, fsync the
// folder. A crash leaves either the old file or the new one, never a torn one.
#pragma once

#include <string>
#include <string_view>

namespace dtrain {

void write_file_atomic(const std::string& path, std::string_view bytes);
std::string read_file(const std::string& path);

}  // namespace dtrain
