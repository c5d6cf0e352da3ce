#include "dtrain/flags.h"

#include <cstdio>

#include "runtime/env.h"
#include "runtime/flag_checks.h"

namespace dtrain {

void add_train_flags(CLI::App& app, JobOptions& f, bool with_model_flags) {
  JobSpec& j = f.spec;
  app.add_option("--data-folder", f.data_folder, "folder with the MNIST IDX files (raw or .gz)")
      ->capture_default_str();
  app.add_option("--batch-size", j.batch_size, "minibatch size per worker")
      ->capture_default_str()
      ->check(at_least(1));
  if (with_model_flags) {
    app.add_option("--first-layer-neurons", j.model.first_layer_neurons,
                   "neurons in the first hidden layer")
        ->capture_default_str()
        ->check(at_least(1));
    app.add_option("--second-layer-neurons", j.model.second_layer_neurons,
                   "neurons in the second hidden layer")
        ->capture_default_str()
        ->check(at_least(1));
  }
  app.add_option("--learning-rate", j.optimizer.learning_rate, "optimizer learning rate")
      ->capture_default_str()
      ->check(positive());
  app.add_option("--optimizer", j.optimizer.name, "sgd, momentum, adam or rmsprop")
      ->capture_default_str()
      ->check(CLI::IsMember({"sgd", "momentum", "adam", "rmsprop"}));
  app.add_option("--epochs", j.epochs, "passes over the training set")
      ->capture_default_str()
      ->check(at_least(1));
  app.add_option("--seed", j.seed, "seed for initialization and shuffling")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_option("--output-dir", j.output_dir,
                 "where metrics.jsonl and model/ (checkpoint, model.json) go")
      ->capture_default_str();
  // dtrainrun passes its settings through the environment (DTRAIN_RESUME, DTRAIN_START_TIMEOUT,
  // DTRAIN_SECURE), never as flags a program it starts might not know; a flag given wins.
  CLI::Option* resume =
      app.add_flag("--resume", j.resume, "continue from output-dir/model/checkpoint.bin");
  // DTRAIN_RESUME by hand, not CLI11's envname: a restart by dtrainrun resumes only this job's
  // checkpoint (DTRAIN_RESUME_JOB), but --resume on the command line asks for whatever is there.
  app.parse_complete_callback([resume, &j] {
    ResumeEnv env;
    try {
      env = read_resume_env();
    } catch (const InputError& e) {
      throw CLI::ValidationError(e.what());
    }
    j.job_id = env.job_id;
    if (resume->count() > 0) return;  // the flag given wins
    j.resume = env.resume.value_or(false);
    if (j.resume) j.resume_only_job = env.resume_job;
  });
  app.add_option("--mode", f.mode,
                 "auto, local, allreduce or ps (auto: allreduce under mpirun with more than one "
                 "rank, ps when TF_CONFIG names ps tasks, else local)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "local", "allreduce", "ps"}));
  if (with_model_flags)
    app.add_option("--model", j.model.name,
                   "mlp (784-first-second-10) or cnn (conv 5x5x32, pool, conv 5x5x64, pool, dense "
                   "1024, dense 10)")
        ->capture_default_str()
        ->check(CLI::IsMember({"mlp", "cnn"}));
  app.add_option("--device", f.device,
                 "auto, cpu or cuda (auto: cuda when this build has CUDA and a GPU is present; "
                 "GPU = local rank % GPUs per node)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_flag("--verbose", f.verbose,
               "log every process's progress (lines are prefixed [rank r/n host:pid], or "
               "[worker i/n ...] / [ps i/n ...] in ps mode)");
  app.add_option(
      "--timeline", j.timeline_path,
      "write a Chrome-trace timeline (forward, backward, optimizer, reduction; ps: push, "
      "wait) here");
  app.add_option("--fusion-threshold-mb", f.fusion_threshold_mb,
                 "largest allreduce bucket in MB (2^20 bytes; a bucket is larger only when one "
                 "gradient piece alone is); default: DTRAIN_FUSION_THRESHOLD (bytes), else 64")
      ->check(positive());
  app.add_option("--stall-warning", f.stall_warning_s,
                 "seconds a rank waits in one collective (ps mode: for its peers) before it logs "
                 "which have not arrived; default: DTRAIN_STALL_WARNING, else 60")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--stall-timeout", f.stall_timeout_s,
                 "allreduce: seconds in one collective before the job ends (exit 124) naming the "
                 "ranks it waits for, 0: never; default: DTRAIN_STALL_TIMEOUT, else 600")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--checkpoint-every-steps", j.checkpoint_every_steps,
                 "also checkpoint every N steps inside an epoch, with the place in the epoch "
                 "(--resume continues from there bit for bit; 0: at epoch ends only; in ps mode "
                 "the chief gathers the servers' shards into it)")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_option("--max-steps-per-epoch", j.max_steps_per_epoch,
                 "stop each epoch after this many steps (0: the whole epoch)")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_option("--synthetic-data", f.synthetic_data,
                 "train on this many generated samples instead of MNIST (testing)")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_flag_callback(
      "--ps-sync", [&f] { f.ps.sync = true; }, "ps mode: synchronous updates (the default)");
  app.add_flag_callback(
      "--ps-async", [&f] { f.ps.sync = false; }, "ps mode: asynchronous updates");
  app.add_option("--max-staleness", f.ps.max_staleness,
                 "ps mode: with --ps-async, steps a worker may run ahead of the slowest (0: no "
                 "bound)")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_option("--start-timeout", f.ps.start_timeout_s,
                 "ps mode: seconds to wait for every task to come up")
      ->capture_default_str()
      ->check(positive())
      ->envname("DTRAIN_START_TIMEOUT");
  app.add_option("--step-timeout", f.ps.step_timeout_s,
                 "ps mode: seconds a server or worker waits for a peer during training")
      ->capture_default_str()
      ->check(positive());
  app.add_flag("--secure", f.ps.secure,
               "ps mode: CURVE-encrypt and authenticate traffic (keys from DTRAIN_PS_* variables)")
      ->envname("DTRAIN_SECURE");
}

std::optional<int> parse_train_flags(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    if (rc != 0)
      if (const std::string hint =
              did_you_mean(app, std::vector<std::string>(argv + 1, argv + argc));
          !hint.empty())
        std::fprintf(stderr, "%s\n", hint.c_str());
    return rc == 0 ? 0 : 2;  // --help is success; any bad flag is bad input
  }
  return std::nullopt;
}

}  // namespace dtrain
