// mnist_train: the seeds' MNIST training script as a program. The same binary runs alone, as an
// allreduce rank under mpirun, or as a parameter-server task; only the GradientSync differs.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "examples/sync_factory.h"
#include "examples/train_flags.h"
#include "runtime/cpu_ops.h"
#include "runtime/dataset.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/model.h"
#include "runtime/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{
      "mnist_train: train an MLP or a CNN on MNIST (alone, under mpirun, or as a ps task), on the "
      "CPU or a GPU"};
  dtrain::TrainFlags flags;
  dtrain::add_train_flags(app, flags);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;  // --help is success; any bad flag is bad input
  }
  dtrain::DeviceChoice device;  // declared first: outlives the sync and the model
  std::unique_ptr<dtrain::GradientSync> sync;
  // Ends the job: an error all ranks share exits normally; one only this rank has takes the
  // others down with it (abort_job), since they would wait for it forever.
  auto fail = [&](const std::exception& e, int code, bool shared) {
    dtrain::log_info("error: ", e.what());
    if (sync && sync->world() > 1 && !shared) sync->abort_job(code);
    return code;
  };
  try {
    dtrain::set_verbose(flags.verbose);
    dtrain::cpu::set_blas_threads(1);
    if (auto code = dtrain::run_if_ps_task(flags)) return *code;
    sync = dtrain::make_sync(flags, argc, argv, device);
    if (!device.note.empty()) dtrain::log_debug(device.note);
    dtrain::Dataset data =
        flags.synthetic_data
            ? dtrain::make_synthetic(flags.synthetic_data,
                                     std::max<size_t>(flags.synthetic_data / 6, 1), flags.seed)
            : dtrain::load_mnist(flags.data_folder);
    auto model = dtrain::build_model(flags.model, data.rows, data.cols, flags.first_layer_neurons,
                                     flags.second_layer_neurons, data.classes, *device.backend);
    dtrain::Optimizer opt(flags.optimizer, model->param_count(), device.backend);
    dtrain::TrainerOptions topts;
    topts.batch_size = flags.batch_size;
    topts.epochs = flags.epochs;
    topts.seed = flags.seed;
    topts.output_dir = flags.output_dir;
    topts.resume = flags.resume;
    topts.max_steps_per_epoch = flags.max_steps_per_epoch;
    topts.timeline_path = flags.timeline;
    topts.mode = sync->name();
    dtrain::log_debug("training ", model->param_count(), " parameters on ", device.backend->name(),
                      " with ", sync->name(), " sync, world size ", sync->world());
    dtrain::Trainer trainer(*model, opt, *sync, data, topts);
    trainer.run();
    return 0;
  } catch (const dtrain::ConsistencyError& e) {
    return fail(e, 2, true);
  } catch (const dtrain::InputError& e) {
    return fail(e, 2, false);
  } catch (const std::exception& e) {
    return fail(e, 1, false);
  }
}
