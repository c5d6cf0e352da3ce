// The batcher: shards cover every sample exactly once per epoch, and n ranks at batch b see what
// one rank at batch n*b sees.
#include <gtest/gtest.h>

#include <map>

#include "runtime/batcher.h"
#include "runtime/error.h"

namespace dtrain {
namespace {

class BatcherCover : public ::testing::TestWithParam<std::tuple<size_t, size_t, size_t>> {};

TEST_P(BatcherCover, EverySampleOncePerEpoch) {
  const auto [samples, batch, world] = GetParam();
  std::map<uint32_t, int> count;
  size_t steps = 0;
  for (size_t r = 0; r < world; ++r) {
    Batcher b(samples, batch, r, world, 5);
    if (r == 0) steps = b.steps_per_epoch();
    EXPECT_EQ(b.steps_per_epoch(), steps) << "every rank runs the same number of steps";
    b.start_epoch(2);
    for (size_t s = 0; s < b.steps_per_epoch(); ++s)
      for (uint32_t i : b.indices(s)) count[i]++;
  }
  const size_t drawn = steps * batch * world;
  const size_t padding = drawn - samples;
  EXPECT_LT(padding, batch * world);
  ASSERT_EQ(count.size(), samples) << "every sample is drawn";
  size_t extra = 0;
  for (auto& [i, c] : count) {
    EXPECT_LT(i, samples);
    EXPECT_GE(c, 1);
    EXPECT_LE(c, 2);
    extra += size_t(c - 1);
  }
  EXPECT_EQ(extra, padding) << "only the wrap-around padding repeats";
}

INSTANTIATE_TEST_SUITE_P(Sizes, BatcherCover,
                         ::testing::Values(std::make_tuple(60, 5, 1), std::make_tuple(60, 5, 2),
                                           std::make_tuple(60, 5, 3), std::make_tuple(61, 5, 2),
                                           std::make_tuple(1, 1, 1), std::make_tuple(7, 3, 3),
                                           std::make_tuple(1000, 50, 3)));

TEST(Batcher, TwoRanksMatchOneRankOfDoubleBatch) {
  Batcher one(100, 10, 0, 1, 9), r0(100, 5, 0, 2, 9), r1(100, 5, 1, 2, 9);
  one.start_epoch(0);
  r0.start_epoch(0);
  r1.start_epoch(0);
  ASSERT_EQ(one.steps_per_epoch(), r0.steps_per_epoch());
  for (size_t s = 0; s < one.steps_per_epoch(); ++s) {
    std::vector<uint32_t> both = r0.indices(s);
    const auto& b = r1.indices(s);
    both.insert(both.end(), b.begin(), b.end());
    EXPECT_EQ(both, one.indices(s)) << "step " << s;
  }
}

TEST(Batcher, EpochsShuffleDifferentlyButReproducibly) {
  Batcher a(50, 50, 0, 1, 1), b(50, 50, 0, 1, 1);
  a.start_epoch(0);
  std::vector<uint32_t> e0 = a.indices(0);
  a.start_epoch(1);
  EXPECT_NE(e0, a.indices(0));
  b.start_epoch(0);
  EXPECT_EQ(e0, b.indices(0));
}

TEST(Batcher, RejectsBadShapes) {
  EXPECT_THROW(Batcher(10, 0, 0, 1, 1), InputError);
  EXPECT_THROW(Batcher(10, 2, 2, 2, 1), InputError);
  EXPECT_THROW(Batcher(0, 2, 0, 1, 1), InputError);
}

}  // namespace
}  // namespace dtrain
