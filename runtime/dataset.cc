#include "runtime/dataset.h"

#include <filesystem>

#include "runtime/error.h"
#include "runtime/idx.h"
#include "runtime/rng.h"

namespace dtrain {

namespace fs = std::filesystem;

std::string find_mnist_file(const std::string& folder, const std::string& base) {
  const fs::path raw = fs::path(folder) / base;
  if (fs::exists(raw)) return raw.string();
  const fs::path gz = fs::path(folder) / (base + ".gz");
  if (fs::exists(gz)) return gz.string();
  throw InputError(detail::cat("MNIST file missing: neither ", raw.string(), " nor ", gz.string(),
                               " exists (run scripts/get-mnist.sh, or pass --data-folder)"));
}

namespace {
Split load_split(const std::string& folder, const std::string& prefix, size_t& rows, size_t& cols) {
  const std::string ip = find_mnist_file(folder, prefix + "-images-idx3-ubyte");
  const std::string lp = find_mnist_file(folder, prefix + "-labels-idx1-ubyte");
  IdxArray im = read_idx(ip);
  IdxArray lb = read_idx(lp);
  if (im.dims.size() != 3)
    throw InputError(
        detail::cat(ip, ": images must have 3 dimensions (n, rows, cols), got ", im.dims.size()));
  if (lb.dims.size() != 1)
    throw InputError(detail::cat(lp, ": labels must have 1 dimension (n), got ", lb.dims.size()));
  if (im.dims[1] != 28 || im.dims[2] != 28)
    throw InputError(
        detail::cat(ip, ": images are ", im.dims[1], "x", im.dims[2], ", expected 28x28"));
  if (im.dims[0] != lb.dims[0])
    throw InputError(
        detail::cat(ip, " has ", im.dims[0], " images but ", lp, " has ", lb.dims[0], " labels"));
  if (im.dims[0] == 0) throw InputError(ip + ": holds no images");
  rows = im.dims[1];
  cols = im.dims[2];
  Split s;
  for (size_t i = 0; i < lb.data.size(); ++i)
    if (lb.data[i] > 9)
      throw InputError(
          detail::cat(lp, ": label ", int(lb.data[i]), " at index ", i, " is not a digit 0-9"));
  s.images = std::move(im.data);
  s.labels = std::move(lb.data);
  return s;
}
}  // namespace

Dataset load_mnist(const std::string& folder) {
  if (!fs::is_directory(folder))
    throw InputError("data folder " + folder +
                     " does not exist or is not a folder (run scripts/get-mnist.sh, or pass "
                     "--data-folder; a relative path is from the current folder)");
  Dataset d;
  size_t r2 = 0, c2 = 0;
  d.train = load_split(folder, "train", d.rows, d.cols);
  d.test = load_split(folder, "t10k", r2, c2);
  return d;
}

Dataset make_synthetic(size_t n_train, size_t n_test, uint64_t seed) {
  Dataset d;
  d.rows = d.cols = 28;
  const size_t f = d.features();
  Rng rng(seed, 7);
  std::vector<float> proto(10 * f);
  for (auto& v : proto) v = rng.uniform() < 0.2f ? 1.0f : 0.0f;
  auto fill = [&](Split& s, size_t n) {
    std::vector<uint8_t> images(n * f), labels(n);
    for (size_t i = 0; i < n; ++i) {
      const uint8_t c = static_cast<uint8_t>(rng.below(10));
      labels[i] = c;
      for (size_t j = 0; j < f; ++j) {
        const float v = 0.6f * proto[c * f + j] + 0.4f * rng.uniform();
        images[i * f + j] = static_cast<uint8_t>(v * 255.0f);
      }
    }
    s.images = std::move(images);
    s.labels = std::move(labels);
  };
  fill(d.train, n_train);
  fill(d.test, n_test);
  return d;
}

void write_mnist(const Dataset& d, const std::string& folder, bool gz) {
  fs::create_directories(folder);
  auto put = [&](const std::string& base, const std::vector<uint32_t>& dims, const Bytes& bytes) {
    write_idx((fs::path(folder) / base).string() + (gz ? ".gz" : ""), dims,
              std::vector<uint8_t>(bytes.begin(), bytes.end()), gz);
  };
  const uint32_t r = uint32_t(d.rows), c = uint32_t(d.cols);
  put("train-images-idx3-ubyte", {uint32_t(d.train.size()), r, c}, d.train.images);
  put("train-labels-idx1-ubyte", {uint32_t(d.train.size())}, d.train.labels);
  put("t10k-images-idx3-ubyte", {uint32_t(d.test.size()), r, c}, d.test.images);
  put("t10k-labels-idx1-ubyte", {uint32_t(d.test.size())}, d.test.labels);
}

}  // namespace dtrain
