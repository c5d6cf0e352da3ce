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

size_t element_bytes(ElementType type) {
  switch (type) {
    case ElementType::kUInt8:
    case ElementType::kInt8:
      return 1;
    case ElementType::kInt16:
      return 2;
    case ElementType::kInt32:
    case ElementType::kFloat32:
      return 4;
    case ElementType::kInt64:
    case ElementType::kFloat64:
      return 8;
  }
  return 0;
}

void Communicator::allreduce_any(void*, size_t, ElementType, Reduction, const OpName& what) {
  throw Error(detail::cat(what, ": the ", backend(),
                          " communicator reduces float32 only (no other types or reductions)"));
}

void Communicator::cross_allreduce(float*, size_t, const OpName& what) {
  throw Error(detail::cat(what, ": the ", backend(), " communicator has no cross-machine group"));
}

}  // namespace dtrain
