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

#include "runtime/checkpoint.h"
#include "runtime/dataset.h"
#include "runtime/error.h"
#include "runtime/gradient_sync.h"
#include "runtime/job_spec.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/timeline.h"

namespace dtrain {

struct EpochMetrics {
  uint64_t epoch = 0;
  uint64_t step = 0;
  double loss = 0, train_accuracy = 0, test_loss = 0, test_accuracy = 0;
  double samples_per_sec = 0, seconds = 0;
  // False when this run trained no step of the epoch (resumed from a checkpoint taken at its
  // last step): its training loss, accuracy and speed are unknown, written as null.
  bool trained = true;
  nlohmann::json to_json(size_t world) const;
};

struct TrainResult {
  std::vector<EpochMetrics> epochs;  // this run's epochs (after a resume: the new ones)
  double test_accuracy = 0;
  double samples_per_sec = 0;  // over all of this run's training steps, all workers
  double seconds = 0;
  nlohmann::json summary;
};

// SIGTERM (a preemption, the launcher stopping the job): the training loop finishes its step,
// the chief writes a checkpoint there, and run() throws StopRequested. Async-signal-safe.
void request_stop();
bool stop_requested();
// For a program that trains again in the same process after a stop (a test, a notebook).
void clear_stop_request();
class StopRequested : public Error {
 public:
  using Error::Error;
};

class Trainer {
 public:
  // The optimizer's options are the model's; spec.optimizer describes the job to others.
  Trainer(Model& model, Optimizer& opt, GradientSync& sync, const Dataset& data, JobSpec spec);
  TrainResult run();

 private:
  void write_epoch_outputs(const EpochMetrics& m, uint64_t global_step);
  // A checkpoint inside epoch `epoch` (0-based) after `step_in_epoch` of its steps.
  void write_step_checkpoint(uint64_t epoch, uint64_t step_in_epoch, uint64_t global_step,
                             bool now);

  Model& model_;
  Optimizer& opt_;
  GradientSync& sync_;
  const Dataset& data_;
  JobSpec opts_;
  Timeline timeline_;
  std::vector<nlohmann::json> history_;  // metrics.jsonl lines, kept across a resume
  // Step checkpoints leave the training thread after a snapshot; epoch-end and stop
  // checkpoints flush it and are written in place, so an older one never lands last.
  std::unique_ptr<CheckpointWriter> writer_;
};

}  // namespace dtrain
