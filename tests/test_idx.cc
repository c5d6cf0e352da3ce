// IDX parsing: good files raw and gzip'd, and each kind of bad file named in the error.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "runtime/dataset.h"
#include "runtime/error.h"
#include "runtime/idx.h"
#include "tests/test_util.h"

namespace dtrain {
namespace {

using testing::TempDir;

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// Expects read_idx(path) to throw an InputError whose message has both the path and `what`.
void expect_idx_error(const std::string& path, const std::string& what) {
  try {
    read_idx(path);
    FAIL() << "no error for " << path;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(Idx, RoundTripRawAndGzip) {
  TempDir d;
  std::vector<uint8_t> data(2 * 3 * 4);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 7);
  write_idx(d / "a", {2, 3, 4}, data, false);
  write_idx(d / "a.gz", {2, 3, 4}, data, true);
  for (const char* name : {"a", "a.gz"}) {
    IdxArray a = read_idx(d / name);
    EXPECT_EQ(a.dims, (std::vector<uint32_t>{2, 3, 4})) << name;
    EXPECT_EQ(a.data, data) << name;
  }
  // The .gz file really is compressed (starts with gzip's magic).
  std::ifstream f(d / "a.gz", std::ios::binary);
  unsigned char m[2];
  f.read(reinterpret_cast<char*>(m), 2);
  EXPECT_EQ(m[0], 0x1f);
  EXPECT_EQ(m[1], 0x8b);
}

// Raw files are mapped; a .gz is decompressed once into the cache, which is checked against the
// gzip trailer before each use: a damaged cache file is rebuilt, never trusted.
TEST(Idx, RawIsMappedAndGzipIsCachedAndVerified) {
  TempDir d;
  setenv("DTRAIN_CACHE_DIR", (d / "cache").c_str(), 1);
  std::vector<uint8_t> data(5 * 7);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 13);
  write_idx(d / "raw", {5, 7}, data, false);
  write_idx(d / "z.gz", {5, 7}, data, true);
  EXPECT_TRUE(read_idx(d / "raw").mapped);
  IdxArray first = read_idx(d / "z.gz");
  EXPECT_TRUE(first.mapped);
  EXPECT_EQ(first.data, data);
  std::vector<std::filesystem::path> cached;
  for (const auto& e : std::filesystem::directory_iterator(d / "cache")) cached.push_back(e.path());
  ASSERT_EQ(cached.size(), 1u) << "one cache file, no temporary left";
  EXPECT_EQ(std::filesystem::file_size(cached[0]), 4 + 2 * 4 + data.size());
  {  // damage it: same size, one byte changed
    std::fstream f(cached[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(12);
    f.put(char(0x55));
  }
  IdxArray again = read_idx(d / "z.gz");
  EXPECT_EQ(again.data, data);
  EXPECT_EQ(read_idx(cached[0]).data, data) << "the damaged cache file was rebuilt";
  unsetenv("DTRAIN_CACHE_DIR");
}

TEST(Idx, MissingFile) {
  expect_idx_error("/nonexistent/train-images-idx3-ubyte", "cannot open");
}

TEST(Idx, WrongMagic) {
  TempDir d;
  write_bytes(d / "f", {0x12, 0x34, 0x08, 0x01, 0, 0, 0, 1, 5});
  expect_idx_error(d / "f", "wrong magic");
}

TEST(Idx, WrongElementType) {
  TempDir d;
  write_bytes(d / "f", {0, 0, 0x0D, 0x01, 0, 0, 0, 1, 5, 5, 5, 5});
  expect_idx_error(d / "f", "element type");
}

TEST(Idx, TruncatedHeaderAndData) {
  TempDir d;
  write_bytes(d / "h", {0, 0, 0x08, 0x03, 0, 0});
  expect_idx_error(d / "h", "truncated");
  write_bytes(d / "b", {0, 0, 0x08, 0x01, 0, 0, 0, 10, 1, 2, 3});
  expect_idx_error(d / "b", "truncated");
  write_bytes(d / "e", {0, 0});
  expect_idx_error(d / "e", "truncated");
}

TEST(Idx, TruncatedGzipStream) {
  TempDir d;
  std::vector<uint8_t> data(5000, 3);
  write_idx(d / "g.gz", {5000}, data, true);
  std::ifstream in(d / "g.gz", std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
  bytes.resize(bytes.size() / 2);
  write_bytes(d / "cut.gz", bytes);
  EXPECT_THROW(read_idx(d / "cut.gz"), InputError);
}

TEST(Idx, TrailingBytes) {
  TempDir d;
  write_bytes(d / "f", {0, 0, 0x08, 0x01, 0, 0, 0, 1, 5, 6});
  expect_idx_error(d / "f", "unexpected bytes");
}

TEST(Mnist, LoadsWhatItWroteRawAndGz) {
  for (bool gz : {false, true}) {
    TempDir d;
    Dataset a = make_synthetic(30, 12, 1);
    write_mnist(a, d.path(), gz);
    Dataset b = load_mnist(d.path());
    EXPECT_EQ(b.train.size(), 30u);
    EXPECT_EQ(b.test.size(), 12u);
    EXPECT_EQ(b.train.labels, a.train.labels);
    EXPECT_EQ(b.train.images, a.train.images);
  }
}

TEST(Mnist, CountMismatchNamesBothFiles) {
  TempDir d;
  Dataset a = make_synthetic(30, 12, 1);
  write_mnist(a, d.path(), false);
  write_idx(d / "train-labels-idx1-ubyte", {29}, std::vector<uint8_t>(29, 1));
  try {
    load_mnist(d.path());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("30 images"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("29 labels"), std::string::npos) << e.what();
  }
}

TEST(Mnist, UnexpectedDimensions) {
  TempDir d;
  write_mnist(make_synthetic(4, 4, 1), d.path(), false);
  write_idx(d / "train-images-idx3-ubyte", {4, 27, 29}, std::vector<uint8_t>(4 * 27 * 29));
  EXPECT_THROW(load_mnist(d.path()), InputError);
  write_idx(d / "train-images-idx3-ubyte", {4, 784}, std::vector<uint8_t>(4 * 784));
  EXPECT_THROW(load_mnist(d.path()), InputError);
}

TEST(Mnist, LabelOutOfRange) {
  TempDir d;
  write_mnist(make_synthetic(4, 4, 1), d.path(), false);
  write_idx(d / "t10k-labels-idx1-ubyte", {4}, {1, 2, 10, 3});
  EXPECT_THROW(load_mnist(d.path()), InputError);
}

TEST(Mnist, MissingFolderAndFile) {
  EXPECT_THROW(load_mnist("/nonexistent-folder"), InputError);
  TempDir d;
  write_mnist(make_synthetic(4, 4, 1), d.path(), false);
  std::filesystem::remove(d / "t10k-images-idx3-ubyte");
  try {
    load_mnist(d.path());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("t10k-images-idx3-ubyte.gz"), std::string::npos);
  }
}

TEST(Mnist, RealDataWhenPresent) {
  if (!testing::have_mnist()) GTEST_SKIP() << "data/mnist absent (run scripts/get-mnist.sh)";
  Dataset d = load_mnist(testing::mnist_dir());
  EXPECT_EQ(d.train.size(), 60000u);
  EXPECT_EQ(d.test.size(), 10000u);
  EXPECT_EQ(d.features(), 784u);
}

// A .gz of several members (gzip a; gzip b; cat) has no trailer of the whole at its end: its
// cache is judged by the size and CRC-32 recorded when it was made, so it is made once and used
// (it was rebuilt and then refused at every start, each rank keeping a private copy).
TEST(Idx, MultiMemberGzipIsCachedOnce) {
  TempDir d;
  setenv("DTRAIN_CACHE_DIR", (d / "cache").c_str(), 1);
  std::vector<uint8_t> data(6 * 5);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 11 + 1);
  std::vector<uint8_t> whole = {0, 0, 0x08, 0x02, 0, 0, 0, 6, 0, 0, 0, 5};
  whole.insert(whole.end(), data.begin(), data.end());
  {
    gzFile f = gzopen((d / "m.gz").c_str(), "wb");
    gzwrite(f, whole.data(), 20);
    gzclose(f);
    f = gzopen((d / "m.gz").c_str(), "ab");
    gzwrite(f, whole.data() + 20, unsigned(whole.size() - 20));
    gzclose(f);
  }
  IdxArray first = read_idx(d / "m.gz");
  EXPECT_EQ(first.data, data);
  EXPECT_TRUE(first.mapped) << "the cache was refused";
  std::vector<std::filesystem::path> cached;
  for (const auto& e : std::filesystem::directory_iterator(d / "cache")) cached.push_back(e.path());
  ASSERT_EQ(cached.size(), 1u);
  const auto made = std::filesystem::last_write_time(cached[0]);
  IdxArray second = read_idx(d / "m.gz");
  EXPECT_TRUE(second.mapped);
  EXPECT_EQ(second.data, data);
  EXPECT_EQ(std::filesystem::last_write_time(cached[0]), made) << "the cache was made again";
  // A cache file others may write is not trusted: it is made again, this user's alone.
  std::filesystem::permissions(cached[0], std::filesystem::perms::others_write,
                               std::filesystem::perm_options::add);
  EXPECT_EQ(read_idx(d / "m.gz").data, data);
  EXPECT_EQ(std::filesystem::status(cached[0]).permissions() & std::filesystem::perms::others_write,
            std::filesystem::perms::none);
  unsetenv("DTRAIN_CACHE_DIR");
}

// Dimensions whose product passes 2^64 (each under the 2^28 cap) are refused, not wrapped.
TEST(Idx, DimensionsThatOverflowAreRefused) {
  TempDir d;
  write_bytes(d / "f", {0,    0, 0x08, 0x04, 0x10, 0, 0, 0, 0x10, 0, 0, 0,
                        0x10, 0, 0,    0,    0x10, 0, 0, 0, 1,    2, 3});
  expect_idx_error(d / "f", "multiply past 2^64");
}

// A mapped data file truncated while in use: the process ends with a message naming the file
// (exit 2), not a bare "Bus error".
TEST(IdxDeathTest, AFileTruncatedWhileMappedIsNamed) {
  TempDir d;
  std::vector<uint8_t> data(4 * 4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i);
  write_idx(d / "raw", {4, 4096}, data, false);
  const std::string path = d / "raw";
  EXPECT_EXIT(
      {
        IdxArray a = read_idx(path);
        if (!a.mapped) _exit(3);
        if (truncate(path.c_str(), 16) != 0) _exit(4);
        volatile uint8_t sink = a.data.data()[a.data.size() - 1];
        (void)sink;
        _exit(5);
      },
      ::testing::ExitedWithCode(2),
      "raw changed or was truncated while this process had it mapped");
}

}  // namespace
}  // namespace dtrain
