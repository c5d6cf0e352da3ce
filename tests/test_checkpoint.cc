// Checkpoints: round trip, atomic replacement, rejection of torn or foreign files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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

}  // namespace
}  // namespace dtrain
