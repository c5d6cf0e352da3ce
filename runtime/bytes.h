// Read-only bytes that live either in a file mapping (shared through the page cache by every
// process on the machine that maps the same file) or in memory of this process's own. Datasets
// hold their pixels and labels this way, as bytes: N ranks on a node map one copy of the training
// set instead of each holding four times its size in floats.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace dtrain {

class Bytes {
 public:
  Bytes() = default;
  Bytes(std::vector<uint8_t> owned)  // NOLINT: implicit, as the vector it replaces
      : owner_(std::make_shared<std::vector<uint8_t>>(std::move(owned))) {
    const auto& v = *static_cast<const std::vector<uint8_t>*>(owner_.get());
    p_ = v.data();
    n_ = v.size();
  }
  // n bytes at p, kept valid by `keep` (a mapping, or a buffer holding them).
  static Bytes view(std::shared_ptr<const void> keep, const uint8_t* p, size_t n) {
    Bytes b;
    b.owner_ = std::move(keep);
    b.p_ = p;
    b.n_ = n;
    return b;
  }
  // [offset, offset + n) of these bytes, sharing what keeps them alive.
  Bytes sub(size_t offset, size_t n) const { return view(owner_, p_ + offset, n); }
  const uint8_t* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  const uint8_t* begin() const { return p_; }
  const uint8_t* end() const { return p_ + n_; }
  uint8_t operator[](size_t i) const { return p_[i]; }
  // A copy of [first, last) of its own.
  template <typename It>
  void assign(It first, It last) {
    *this = Bytes(std::vector<uint8_t>(first, last));
  }
  friend bool operator==(const Bytes& a, const Bytes& b) {
    return a.n_ == b.n_ && std::equal(a.begin(), a.end(), b.begin());
  }
  friend bool operator==(const Bytes& a, const std::vector<uint8_t>& b) {
    return a.n_ == b.size() && std::equal(a.begin(), a.end(), b.begin());
  }

 private:
  std::shared_ptr<const void> owner_;
  const uint8_t* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace dtrain
