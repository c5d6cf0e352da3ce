// Helpers shared by the tests: temporary folders that clean up after themselves.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "runtime/error.h"

namespace dtrain::testing {

// Runs f, which must throw an InputError whose message contains `what`.
template <typename F>
void expect_input_error(F&& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one saying: " << what;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dtrain-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string mnist_dir() {
  return std::string(DTRAIN_SOURCE_DIR) + "/data/mnist";
}
inline bool have_mnist() {
  return std::filesystem::exists(mnist_dir() + "/train-images-idx3-ubyte") ||
         std::filesystem::exists(mnist_dir() + "/train-images-idx3-ubyte.gz");
}

}  // namespace dtrain::testing
