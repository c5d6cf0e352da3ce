#include "allreduce/communicator.h"

#include "runtime/error.h"

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

void Communicator::cross_allreduce(float*, size_t, const OpName& what) {
  throw Error(detail::cat(what, ": the ", backend(), " communicator has no cross-machine group"));
}

}  // namespace dtrain
