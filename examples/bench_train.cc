// dtrain_bench train: the single-process training step the distributed modes are built on.
// Random inputs are generated in memory up front so that only forward, backward and the optimizer
// step are timed, the same as scripts/bench_torch.py does for PyTorch. With --device cuda each
// step still stages its batch from host memory through the pinned double buffer, as training does.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "dtrain/device.h"
#include "examples/bench_commands.h"
#include "runtime/cpu_ops.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"
#include "runtime/rng.h"

namespace dtrain::bench {

int run_train(const TrainBenchOptions& o) {
  cpu::set_blas_threads(o.threads);
  cpu::flush_denormals_on_this_thread();
  DeviceChoice device = choose_device(o.device, 0);
  Backend& be = *device.backend;
  auto model = build_model(o.model, 28, 28, 300, 100, 10, be);
  model->init(1);
  OptimizerOptions oo;
  oo.name = o.optimizer;
  Optimizer opt(oo, model->param_count(), &be);
  const size_t pool = 64;  // distinct batches, cycled
  Rng rng(3);
  std::vector<float> x(pool * o.batch_size * 784);
  std::vector<uint8_t> y(pool * o.batch_size);
  for (auto& v : x) v = rng.uniform();
  for (auto& v : y) v = static_cast<uint8_t>(rng.below(10));
  const GradReady none = [](size_t, size_t) {};
  auto step = [&](size_t i) {
    const size_t k = i % pool;
    model->train_step(x.data() + k * o.batch_size * 784, y.data() + k * o.batch_size, o.batch_size,
                      none);
    opt.step(model->params(), model->grads());
  };
  for (size_t i = 0; i < 100; ++i) step(i);
  be.synchronize();
  double best = 0, best_step_ms = 0;
  for (size_t r = 0; r < o.repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < o.steps; ++i) step(i);
    be.synchronize();  // a GPU queues the steps: the time is when they have all run
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double sps = double(o.steps * o.batch_size) / s;
    if (sps > best) {
      best = sps;
      best_step_ms = 1e3 * s / double(o.steps);
    }
  }
  const nlohmann::json j = {{"bench", "train"},
                            {"impl", "dtrain"},
                            {"model", o.model == "mlp" ? "mlp-784-300-100-10" : o.model},
                            {"optimizer", o.optimizer},
                            {"batch_size", o.batch_size},
                            {"threads", o.threads},
                            {"device", be.name()},
                            {"cpu_isa", cpu::cpu_isa()},
                            {"params", model->param_count()},
                            {"step_ms", best_step_ms},
                            {"samples_per_sec", best}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace dtrain::bench
