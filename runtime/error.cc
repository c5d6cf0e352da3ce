#include "runtime/error.h"

namespace dtrain::detail {

void check_failed(const char* file, int line, const std::string& expr) {
  throw Error(cat("internal check failed at ", file, ":", line, ": ", expr));
}

}  // namespace dtrain::detail
