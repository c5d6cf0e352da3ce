// MNIST-format data as bytes: pixels 0-255 and labels, mapped from the IDX files (shared by the
// ranks of a machine through the page cache) or generated. Pixels become floats in [0, 1]
// (byte / 255) only as a batch is gathered.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/bytes.h"

namespace dtrain {

struct Split {
  Bytes images;  // [n x features] pixels, 0-255
  Bytes labels;
  size_t size() const { return labels.size(); }
};

// The float a pixel byte trains as: byte / 255, the same bits everywhere.
inline float pixel_value(uint8_t b) {
  return static_cast<float>(b) * (1.0f / 255.0f);
}

struct Dataset {
  size_t rows = 0, cols = 0, classes = 10;
  Split train, test;
  size_t features() const { return rows * cols; }
};

// Loads {train,t10k}-{images-idx3,labels-idx1}-ubyte (or the same with .gz) from `folder`.
// Checks that images are [n x rows x cols], labels [n], counts agree, labels < 10.
Dataset load_mnist(const std::string& folder);

// The path of an MNIST file in folder: the raw name if present, else name.gz; throws naming both.
std::string find_mnist_file(const std::string& folder, const std::string& base);

// A small learnable stand-in for MNIST (for tests on machines without the data): each class is
// a fixed random 28x28 pattern plus noise.
Dataset make_synthetic(size_t n_train, size_t n_test, uint64_t seed);

// Writes a Dataset as the four IDX files (raw, or gzip'd when gz is true).
void write_mnist(const Dataset& d, const std::string& folder, bool gz);

}  // namespace dtrain
