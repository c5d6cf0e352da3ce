// The job description shared by everyone: one typed JobSpec, built once from the flags (or by a
// program that uses the library), read by the Trainer, the parameter servers and the start-up
// consistency check. Mode-specific settings (allreduce buckets, ps timeouts) are not here: they
// belong to their strategies and to dtrain::JobOptions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "runtime/optimizer.h"

namespace dtrain {

class Model;

// What a model is built from: a name (the built-ins are "mlp" and "cnn"; a custom model names
// itself), the data shape it takes, and the MLP's widths.
struct ModelSpec {
  std::string name = "mlp";
  size_t rows = 28, cols = 28, classes = 10;  // MNIST
  size_t first_layer_neurons = 300;
  size_t second_layer_neurons = 100;
};

struct JobSpec {
  ModelSpec model;
  OptimizerOptions optimizer;
  size_t batch_size = 50;  // per worker
  size_t epochs = 20;
  uint64_t seed = 42;
  std::string output_dir = "outputs";
  bool resume = false;
  // dtrainrun's job id (DTRAIN_JOB_ID), written into the checkpoints this job makes.
  std::optional<uint64_t> job_id;
  // Set on dtrainrun's restarts (DTRAIN_RESUME_JOB) when the command did not ask for --resume
  // itself: resume only a checkpoint this job wrote (its job_id); another job's checkpoint in the
  // output folder is replaced, as without --resume (the first attempt failed before writing).
  std::optional<uint64_t> resume_only_job;
  size_t max_steps_per_epoch = 0;  // 0: the whole epoch
  // > 0: the chief also checkpoints every this many steps inside an epoch (local and allreduce
  // modes), with its place in the epoch, so --resume continues from there bit for bit.
  size_t checkpoint_every_steps = 0;
  std::string timeline_path;  // empty: no timeline
  bool write_outputs = true;  // the chief writes outputs/
  bool print = true;          // the chief prints epoch lines and the summary
};

// What every process of a job must agree on before the first step: the model as built (its
// layers and size), the batch, the optimizer and the epochs.
nlohmann::json job_agreement(const JobSpec& spec, const Model& model);

}  // namespace dtrain
