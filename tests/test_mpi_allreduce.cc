// Collectives and the allreduce strategies (BucketedAllreduce, SharedMemoryAllreduce,
// HierarchicalAllreduce) across real ranks (run under mpirun with 2 and 3 ranks).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "allreduce/bucketed_allreduce.h"
#include "allreduce/hierarchical_allreduce.h"
#include "allreduce/shared_memory_allreduce.h"
#include "runtime/batcher.h"
#include "runtime/dataset.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"
#include "tests/mpi_world.h"
#include "tests/reference_training.h"

namespace dtrain {
namespace {

using testing::world;

class AllreduceSizes : public ::testing::TestWithParam<size_t> {};

TEST_P(AllreduceSizes, SumAndAverageBlockingAndNonBlocking) {
  auto& c = world();
  const size_t n = GetParam(), w = c.size();
  auto fill = [&](std::vector<float>& v) {
    for (size_t i = 0; i < n; ++i) v[i] = float(c.rank() + 1) * float(i % 11 + 1);
  };
  // Sum over ranks of (r+1)*k = k * w(w+1)/2: exact in float at these magnitudes.
  auto expect = [&](const std::vector<float>& v, float div) {
    for (size_t i = 0; i < n; ++i) {
      const float want = float(i % 11 + 1) * float(w * (w + 1) / 2) / div;
      ASSERT_FLOAT_EQ(v[i], want) << "element " << i << " of " << n;
    }
  };
  std::vector<float> v(n + 1, -7.0f);  // one guard element past the end
  fill(v);
  c.allreduce(v.data(), n, ReduceOp::kSum, "test sum");
  expect(v, 1.0f);
  EXPECT_EQ(v[n], -7.0f) << "wrote past the end";
  fill(v);
  c.allreduce(v.data(), n, ReduceOp::kAverage, "test avg");
  expect(v, float(w));
  fill(v);
  auto h = c.iallreduce(v.data(), n, ReduceOp::kSum, "test isum");
  h->wait();
  expect(v, 1.0f);
  fill(v);
  auto h2 = c.iallreduce(v.data(), n, ReduceOp::kAverage, "test iavg");
  while (!h2->test()) {
  }
  expect(v, float(w));
}

INSTANTIATE_TEST_SUITE_P(Sizes, AllreduceSizes, ::testing::Values(0, 1, 7, 1001, (3u << 20) + 3));

TEST(Collectives, BroadcastAllgatherBarrierTopology) {
  auto& c = world();
  uint64_t v[3] = {c.rank() * 10, 5, 6};
  c.broadcast(v, sizeof(v), 0, "test bcast");
  EXPECT_EQ(v[0], 0u);
  uint64_t mine[2] = {c.rank(), c.rank() * 2};
  std::vector<uint64_t> all(2 * c.size());
  c.allgather(mine, 2, all.data(), "test allgather");
  for (size_t r = 0; r < c.size(); ++r) {
    EXPECT_EQ(all[2 * r], r);
    EXPECT_EQ(all[2 * r + 1], 2 * r);
  }
  auto strs = c.allgather(std::string(c.rank() + 1, 'x'), "test allgather strings");
  ASSERT_EQ(strs.size(), c.size());
  for (size_t r = 0; r < c.size(); ++r) EXPECT_EQ(strs[r], std::string(r + 1, 'x'));
  c.barrier("test barrier");
  // One machine: every rank is local, and there is one cross rank per local rank.
  EXPECT_EQ(c.local_size(), c.size());
  EXPECT_EQ(c.local_rank(), c.rank());
  EXPECT_EQ(c.cross_size(), 1u);
  EXPECT_EQ(c.cross_rank(), 0u);
}

uint64_t fnv1a(const float* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  for (size_t i = 0; i < n * sizeof(float); ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

// The strategy the job's chooser picks on one machine: shared memory when asked for, else buckets.
// hierarchical: HierarchicalAllreduce, here with every rank on one machine (one cross group).
std::unique_ptr<GradientSync> make_allreduce(Communicator& c, const AllreduceOptions& o,
                                             bool hierarchical = false) {
  if (hierarchical) return std::make_unique<HierarchicalAllreduce>(c, o);
  if (o.shared_memory) return std::make_unique<SharedMemoryAllreduce>(c, o);
  return std::make_unique<BucketedAllreduce>(c, o);
}

// Trains `steps` steps with an allreduce strategy; returns the model.
// state: when given, the optimizer state after gather_state (what a checkpoint holds).
std::unique_ptr<Model> train_ranks(const Dataset& d, size_t batch, size_t steps, size_t bucket,
                                   uint64_t seed, bool shared = true, bool hierarchical = false,
                                   std::vector<float>* state = nullptr) {
  auto& c = world();
  auto m = build_mlp(d.features(), {24, 12}, 10);
  m->init(seed + c.rank());  // different on purpose: start() must broadcast rank 0's
  Optimizer opt(OptimizerOptions{}, m->param_count());
  AllreduceOptions o;
  o.fusion_threshold_bytes = bucket;
  o.shared_memory = shared;
  auto syncp = make_allreduce(c, o, hierarchical);
  GradientSync& sync = *syncp;
  Timeline tl;
  sync.start(*m, opt, {{"batch_size", batch}}, {}, tl);
  // mpirun starts these tests on one machine: shared memory is there when asked for.
  EXPECT_EQ(dynamic_cast<SharedMemoryAllreduce*>(syncp.get()) != nullptr, shared && !hierarchical);
  Batcher b(d.train.size(), batch, c.rank(), c.size(), seed);
  b.start_epoch(0);
  std::vector<float> x(batch * d.features());
  std::vector<uint8_t> y(batch);
  for (size_t s = 0; s < steps; ++s) {
    gather_batch(b.indices(s), d.train.images.data(), d.train.labels.data(), d.features(), x.data(),
                 y.data());
    m->train_step(x.data(), y.data(), batch, [&](size_t o2, size_t n) { sync.ready(o2, n); });
    sync.finish_step(*m, opt);
    if (!shared && bucket < m->param_count() * sizeof(float)) {
      EXPECT_GT(static_cast<BucketedAllreduce&>(sync).last_step_buckets(), 1u);
    }
  }
  if (state) {
    sync.gather_state(*m, opt);
    *state = opt.state_vector();
  }
  const float* during = m->grads();
  sync.finish(true);
  // Shared memory: backward wrote into the shared slot until finish() gave the model its own
  // buffer back (the slot goes away with the sync).
  if (shared || hierarchical)
    EXPECT_NE(m->grads(), during);
  else
    EXPECT_EQ(m->grads(), during);
  return m;
}

class AllreduceSyncPaths : public ::testing::TestWithParam<bool> {};

TEST_P(AllreduceSyncPaths, RanksHoldBitwiseIdenticalParameters) {
  const Dataset d = make_synthetic(400, 10, 3);
  for (size_t bucket : {size_t(512), size_t(64) << 20}) {
    auto m = train_ranks(d, 8, 12, bucket, 5, GetParam());
    const uint64_t h = fnv1a(m->params(), m->param_count());
    std::vector<uint64_t> all(world().size());
    world().allgather(&h, 1, all.data(), "hashes");
    for (size_t r = 1; r < all.size(); ++r)
      EXPECT_EQ(all[r], all[0]) << "rank " << r << " diverged (bucket " << bucket << ")";
  }
}

TEST_P(AllreduceSyncPaths, MatchesOneRankAtTheGlobalBatch) {
  auto& c = world();
  const Dataset d = make_synthetic(300, 10, 4);
  const size_t b = 6, steps = 10;
  auto dist = train_ranks(d, b, steps, 1024, 9, GetParam());
  // The reference, computed in this process: one rank, batch w*b, same samples in the same order.
  auto ref = testing::train_one_process(d, {24, 12}, b * c.size(), steps, 9);
  double max_diff = 0;
  for (size_t i = 0; i < ref->param_count(); ++i)
    max_diff = std::max(max_diff, double(std::fabs(ref->params()[i] - dist->params()[i])));
  EXPECT_LT(max_diff, 1e-4) << "float tolerance";
}

INSTANTIATE_TEST_SUITE_P(MpiAndSharedMemory, AllreduceSyncPaths, ::testing::Bool());

// Two strategies' parameters: bit for bit with 2 ranks (a + b is the only order of the sum), to
// float rounding with more (MPI may add in another order).
void expect_paths_agree(const Model& a, const Model& b) {
  double worst = 0;
  for (size_t i = 0; i < a.param_count(); ++i)
    worst = std::max(worst, double(std::fabs(a.params()[i] - b.params()[i])));
  if (world().size() == 2)
    EXPECT_EQ(worst, 0.0);
  else
    EXPECT_LT(worst, 1e-5);
}

TEST(AllreduceSync, SharedMemoryAndMpiAllreduceAgree) {
  // With 2 ranks a + b is the only order of the sum, so the two paths agree bit for bit; with
  // more, MPI may add in another order, and they agree to float rounding.
  const Dataset d = make_synthetic(400, 10, 3);
  auto a = train_ranks(d, 8, 12, 1024, 5, true);
  auto b = train_ranks(d, 8, 12, 1024, 5, false);
  expect_paths_agree(*a, *b);
}

TEST(AllreduceSync, SharedMemoryGathersTheShardedOptimizerState) {
  // Each rank updates the optimizer state of its own piece only; after gather_state every rank
  // holds the whole state, the same on every rank, and for 2 ranks bitwise the MPI path's.
  const Dataset d = make_synthetic(400, 10, 3);
  std::vector<float> shared_state, mpi_state;
  train_ranks(d, 8, 12, 1024, 5, true, false, &shared_state);
  train_ranks(d, 8, 12, 1024, 5, false, false, &mpi_state);
  ASSERT_EQ(shared_state.size(), mpi_state.size());
  const uint64_t mine = fnv1a(shared_state.data(), shared_state.size());
  std::vector<uint64_t> all(world().size());
  world().allgather(&mine, 1, all.data(), "state hashes");
  for (size_t r = 1; r < all.size(); ++r) EXPECT_EQ(all[r], all[0]) << "rank " << r << " diverged";
  double worst = 0;
  for (size_t i = 0; i < mpi_state.size(); ++i)
    worst = std::max(worst, double(std::fabs(shared_state[i] - mpi_state[i])));
  if (world().size() == 2)
    EXPECT_EQ(shared_state, mpi_state);
  else
    EXPECT_LT(worst, 1e-6);
}

TEST(AllreduceSync, HierarchicalAgreesWithMpiAllreduce) {
  // Forced on one machine: the local reduce sums in rank order, the cross step has one member.
  // Ranks agree bit for bit; with the MPI path bitwise for 2 ranks, to rounding for more. (Across
  // two machines, tests/cluster checks it against the flat path end to end.)
  const Dataset d = make_synthetic(400, 10, 3);
  auto h = train_ranks(d, 8, 12, 1024, 5, true, /*hierarchical=*/true);
  auto f = train_ranks(d, 8, 12, 1024, 5, false);
  const uint64_t mine = fnv1a(h->params(), h->param_count());
  std::vector<uint64_t> all(world().size());
  world().allgather(&mine, 1, all.data(), "hashes");
  for (size_t r = 1; r < all.size(); ++r) EXPECT_EQ(all[r], all[0]) << "rank " << r << " diverged";
  expect_paths_agree(*h, *f);
}

// A custom model may report gradient ranges out of order after some buckets have already left:
// those buckets must not be reduced a second time.
class OutOfOrder : public ::testing::TestWithParam<bool> {};

TEST_P(OutOfOrder, ReadyAfterABucketLeftReducesEachRangeOnce) {
  auto& c = world();
  auto m = build_mlp(3, {}, 2);  // one dense layer: 6 weights + 2 biases
  OptimizerOptions oo;
  oo.name = "sgd";
  oo.learning_rate = 1.0f;
  Optimizer opt(oo, m->param_count());
  AllreduceOptions o;
  o.fusion_threshold_bytes = sizeof(float);
  o.shared_memory = GetParam();
  auto syncp = make_allreduce(c, o);
  GradientSync& sync = *syncp;
  Timeline tl;
  sync.start(*m, opt, {{"test", 1}}, {}, tl);
  std::vector<float> p0(m->param_count());
  m->read_params(p0.data());
  for (size_t i = 0; i < m->param_count(); ++i) m->grads()[i] = float(c.rank() + 1);
  sync.ready(6, 2);  // the biases leave as a bucket
  sync.ready(0, 3);  // out of order: the rest goes at the end
  sync.ready(3, 3);
  sync.finish_step(*m, opt);
  sync.finish(true);
  const float mean = float(c.size() + 1) / 2.0f;
  for (size_t i = 0; i < m->param_count(); ++i)
    EXPECT_FLOAT_EQ(m->params()[i], p0[i] - mean) << "parameter " << i;
}

INSTANTIATE_TEST_SUITE_P(MpiAndSharedMemory, OutOfOrder, ::testing::Bool());

// Horovod's meaning of the fusion threshold: a bucket never exceeds it (no single range here is
// larger), however the layers' pieces add up; 1000 bytes is no multiple of any layer's rows.
TEST(AllreduceSync, BucketsNeverExceedTheFusionThreshold) {
  auto& c = world();
  const Dataset d = make_synthetic(200, 10, 3);
  auto m = build_mlp(d.features(), {24, 12}, 10);
  Optimizer opt(OptimizerOptions{}, m->param_count());
  AllreduceOptions o;
  o.fusion_threshold_bytes = 1000;
  BucketedAllreduce sync(c, o);
  Timeline tl;
  sync.start(*m, opt, {{"test", 2}}, {}, tl);
  std::vector<float> x(8 * d.features(), 0.5f);
  std::vector<uint8_t> y(8, 1);
  for (size_t s = 0; s < 3; ++s) {
    m->train_step(x.data(), y.data(), 8, [&](size_t off, size_t n) { sync.ready(off, n); });
    sync.finish_step(*m, opt);
    EXPECT_GT(sync.last_step_buckets(), 1u);
    EXPECT_LE(sync.last_step_largest_bucket_bytes(), 1000u);
    EXPECT_GT(sync.last_step_largest_bucket_bytes(), 500u) << "buckets should fill up";
  }
  sync.finish(true);
}

TEST(AllreduceSync, ConsistencyCheckNamesRankAndField) {
  auto& c = world();
  const size_t bad = c.size() - 1;
  nlohmann::json job = {{"batch_size", c.rank() == bad ? 32 : 50}, {"optimizer", "adam"}};
  try {
    check_job_consistency(c, job);
    FAIL() << "no error on rank " << c.rank();
  } catch (const ConsistencyError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank " + std::to_string(bad)), std::string::npos) << msg;
    EXPECT_NE(msg.find("batch_size"), std::string::npos) << msg;
    EXPECT_NE(msg.find("50"), std::string::npos) << msg;
    EXPECT_NE(msg.find("32"), std::string::npos) << msg;
  }
  // Agreement passes.
  EXPECT_NO_THROW(check_job_consistency(c, {{"batch_size", 50}}));
}

}  // namespace
}  // namespace dtrain
