#include "allreduce/communicator.h"

namespace dtrain {

std::string OpName::str() const {
  std::string s = what_ ? what_ : owned_;
  if (index_ != SIZE_MAX) {
    s += ' ';
    s += std::to_string(index_);
  }
  if (step_ != UINT64_MAX) {
    s += " of step ";
    s += std::to_string(step_);
  }
  return s;
}

}  // namespace dtrain
