// Checkpoints: round trip, atomic replacement, rejection of torn or foreign files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "runtime/checkpoint.h"
#include "runtime/error.h"
#include "runtime/files.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "tests/test_util.h"

namespace dtrain {
namespace {

using testing::TempDir;

TEST(Checkpoint, RoundTripRestoresEverything) {
  TempDir d;
  auto m = build_mlp(20, {8, 6}, 10);
  m->init(1);
  Optimizer opt(OptimizerOptions{}, m->param_count());
  for (size_t i = 0; i < m->param_count(); ++i) m->grads()[i] = float(i % 13) * 0.01f;
  opt.step(m->params(), m->grads());
  opt.step(m->params(), m->grads());
  CheckpointMeta meta;
  meta.epoch = 3;
  meta.global_step = 77;
  meta.seed = 42;
  save_checkpoint(d / "ck.bin", *m, opt, meta);

  auto m2 = build_mlp(20, {8, 6}, 10);
  m2->init(999);
  Optimizer opt2(OptimizerOptions{}, m2->param_count());
  CheckpointMeta got = load_checkpoint(d / "ck.bin", *m2, opt2);
  EXPECT_EQ(got.epoch, 3u);
  EXPECT_EQ(got.global_step, 77u);
  EXPECT_EQ(got.seed, 42u);
  EXPECT_EQ(opt2.steps(), 2u);
  EXPECT_EQ(0, std::memcmp(m->params(), m2->params(), m->param_count() * sizeof(float)));
  EXPECT_EQ(opt.state_vector(), opt2.state_vector());
}

TEST(Checkpoint, AtomicReplacementLeavesNoTempFiles) {
  TempDir d;
  write_file_atomic(d / "f", "first");
  write_file_atomic(d / "f", "second");
  EXPECT_EQ(read_file(d / "f"), "second");
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(d.path())) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 1u) << "temp file left behind";
}

TEST(Checkpoint, ATornWriteNeverReplacesTheOldFile) {
  // A writer that dies before rename leaves only a temp file: the checkpoint still loads.
  TempDir d;
  auto m = build_mlp(10, {4, 4}, 10);
  m->init(1);
  Optimizer opt(OptimizerOptions{}, m->param_count());
  save_checkpoint(d / "ck.bin", *m, opt, CheckpointMeta{});
  std::ofstream(d / "ck.bin.tmp.12345") << "half a checkpoi";
  EXPECT_NO_THROW(load_checkpoint(d / "ck.bin", *m, opt));
}

TEST(Checkpoint, RejectsCorruptTruncatedAndForeignFiles) {
  TempDir d;
  auto m = build_mlp(10, {4, 4}, 10);
  m->init(1);
  Optimizer opt(OptimizerOptions{}, m->param_count());
  save_checkpoint(d / "ck.bin", *m, opt, CheckpointMeta{});
  std::string bytes = read_file(d / "ck.bin");

  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x40;
  write_file_atomic(d / "flip.bin", flipped);
  EXPECT_THROW(load_checkpoint(d / "flip.bin", *m, opt), InputError);

  write_file_atomic(d / "cut.bin", bytes.substr(0, bytes.size() - 100));
  EXPECT_THROW(load_checkpoint(d / "cut.bin", *m, opt), InputError);

  write_file_atomic(d / "junk.bin", "hello, this is not a checkpoint at all");
  EXPECT_THROW(load_checkpoint(d / "junk.bin", *m, opt), InputError);

  auto other = build_mlp(10, {5, 4}, 10);
  Optimizer oopt(OptimizerOptions{}, other->param_count());
  try {
    load_checkpoint(d / "ck.bin", *other, oopt);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model"), std::string::npos) << e.what();
  }
  OptimizerOptions sgd;
  sgd.name = "sgd";
  Optimizer sopt(sgd, m->param_count());
  EXPECT_THROW(load_checkpoint(d / "ck.bin", *m, sopt), InputError);
}

// A checkpoint whose checksum is right but whose metadata is not this build's (another tool's,
// hand-edited) is an error naming the file and the field (a raw JSON type error before, with no
// file name; "epoch": -1 read as 2^64 - 1); a folder where the file should be says so.
TEST(Checkpoint, ForeignMetadataAndFoldersAreNamedErrors) {
  TempDir d;
  auto m = build_mlp(10, {4, 4}, 10);
  m->init(1);
  Optimizer opt(OptimizerOptions{}, m->param_count());
  save_checkpoint(d / "ck.bin", *m, opt, CheckpointMeta{});
  const std::string bytes = read_file(d / "ck.bin");
  uint64_t jlen;
  std::memcpy(&jlen, bytes.data() + 12, 8);
  const nlohmann::json meta = nlohmann::json::parse(bytes.substr(20, jlen));
  // Rewrites the metadata and the checksum, as a tool of someone else's would.
  auto with_meta = [&](const std::string& name, const nlohmann::json& j) {
    const std::string js = j.dump();
    std::string s = bytes.substr(0, 12);
    const uint64_t n = js.size();
    s.append(reinterpret_cast<const char*>(&n), 8);
    s += js;
    s += bytes.substr(20 + jlen, bytes.size() - 20 - jlen - 4);
    const uint32_t crc =
        static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(s.data()), s.size()));
    s.append(reinterpret_cast<const char*>(&crc), 4);
    write_file_atomic(d / name, s);
    return d / name;
  };
  nlohmann::json no_state = meta;
  no_state.erase("optimizer_state_floats");
  nlohmann::json negative = meta;
  negative["epoch"] = -1;
  nlohmann::json text_step = meta;
  text_step["extra"] = {{"step_in_epoch", "three"}};
  for (const auto& [name, j, field] :
       {std::tuple{"nostate.bin", no_state, "optimizer_state_floats"},
        std::tuple{"negative.bin", negative, "epoch"},
        std::tuple{"text.bin", text_step, "step_in_epoch"}}) {
    const std::string path = with_meta(name, j);
    for (int meta_only = 0; meta_only < 2; ++meta_only) {
      try {
        if (meta_only)
          read_checkpoint_meta(path);
        else
          load_checkpoint(path, *m, opt);
        FAIL() << name << " was accepted";
      } catch (const InputError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(path), std::string::npos) << what;
        EXPECT_NE(what.find(field), std::string::npos) << what;
      }
    }
  }
  std::filesystem::create_directory(d / "folder.bin");
  testing::expect_input_error([&] { load_checkpoint(d / "folder.bin", *m, opt); }, "is a folder");
}

// A periodic checkpoint that cannot be written (a full disk for a moment) is a warning when it
// happens; the next one is written, and flush() does not throw the old error later (it ended
// the job an epoch later, skipping the epoch-end checkpoint, even after space was freed).
TEST(Checkpoint, AFailedBackgroundWriteIsAWarningAndTheNextOneIsWritten) {
  TempDir d;
  auto m = build_mlp(10, {4, 4}, 10);
  m->init(1);
  Optimizer opt(OptimizerOptions{}, m->param_count());
  CheckpointWriter w;
  std::ofstream(d / "afile") << "x";  // a file where the folder should be: the write fails
  w.submit(d / "afile/ck.bin", snapshot_checkpoint(*m, opt, CheckpointMeta{}));
  bool ok = true;
  EXPECT_NO_THROW(ok = w.flush());
  EXPECT_FALSE(ok) << "the failed write is not reported";
  CheckpointMeta meta;
  meta.global_step = 7;
  w.submit(d / "ck.bin", snapshot_checkpoint(*m, opt, meta));
  EXPECT_NO_THROW(ok = w.flush());
  EXPECT_TRUE(ok);
  EXPECT_EQ(read_checkpoint_meta(d / "ck.bin").global_step, 7u);
}

}  // namespace
}  // namespace dtrain
