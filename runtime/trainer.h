// The training loop, written once for every mode (DESIGN.md):
//   for each step: batch = batcher.next(); forward; backward (reporting finished gradient
//   ranges to the sync); sync.finish_step(); record metrics.
// After each epoch: test-set evaluation (sharded over workers and summed), the epoch line, and
// on the chief metrics.jsonl and an atomic checkpoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/dataset.h"
#include "runtime/gradient_sync.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"

namespace dtrain {

struct TrainerOptions {
  size_t batch_size = 50;  // per worker
  size_t epochs = 20;
  uint64_t seed = 42;
  std::string output_dir = "outputs";
  bool resume = false;
  size_t max_steps_per_epoch = 0;  // 0: the whole epoch
  std::string timeline_path;       // empty: no timeline
  bool write_outputs = true;       // the chief writes outputs/
  bool print = true;               // the chief prints epoch lines and the summary
  std::string mode = "local";
};

struct EpochMetrics {
  uint64_t epoch = 0;
  uint64_t step = 0;
  double loss = 0, train_accuracy = 0, test_loss = 0, test_accuracy = 0;
  double samples_per_sec = 0, seconds = 0;
  nlohmann::json to_json(size_t world) const;
};

struct TrainResult {
  std::vector<EpochMetrics> epochs;  // this run's epochs (after a resume: the new ones)
  double test_accuracy = 0;
  double samples_per_sec = 0;  // over all of this run's training steps, all workers
  double seconds = 0;
  nlohmann::json summary;
};

class Trainer {
 public:
  Trainer(Model& model, Optimizer& opt, GradientSync& sync, const Dataset& data,
          TrainerOptions opts);
  TrainResult run();

 private:
  void write_epoch_outputs(const EpochMetrics& m, uint64_t global_step);

  Model& model_;
  Optimizer& opt_;
  GradientSync& sync_;
  const Dataset& data_;
  TrainerOptions opts_;
  Timeline timeline_;
  std::vector<nlohmann::json> history_;  // metrics.jsonl lines, kept across a resume
};

}  // namespace dtrain
