// mnist_train's flags: one typed struct and the one function that registers them with CLI11, so
// the help text is generated from the parser and cannot drift from it (tests/test_flags.cc checks
// that the README documents exactly these flags).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "runtime/optimizer.h"
#include "runtime/trainer.h"

namespace dtrain {

struct TrainFlags {
  std::string data_folder = "data/mnist";
  size_t batch_size = 50;
  size_t first_layer_neurons = 300;
  size_t second_layer_neurons = 100;
  OptimizerOptions optimizer;
  size_t epochs = 20;
  uint64_t seed = 42;
  std::string output_dir = "outputs";
  bool resume = false;
  std::string mode = "auto";  // auto, local, allreduce, ps
  std::string model = "mlp";
  std::string device = "auto";  // auto, cpu, cuda
  bool verbose = false;
  std::string timeline;
  double fusion_threshold_mb = -1;  // <0: DTRAIN_FUSION_THRESHOLD or the default
  size_t max_steps_per_epoch = 0;
  size_t synthetic_data = 0;  // >0: train on this many generated samples instead of MNIST
  // parameter-server mode
  bool ps_sync = true;
  size_t max_staleness = 0;
  double start_timeout_s = 60;
  double step_timeout_s = 60;
  bool secure = false;
};

void add_train_flags(CLI::App& app, TrainFlags& f);

}  // namespace dtrain
