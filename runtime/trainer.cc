#include "runtime/trainer.h"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include "runtime/batcher.h"
#include "runtime/checkpoint.h"
#include "runtime/env.h"
#include "runtime/error.h"
#include "runtime/files.h"
#include "runtime/log.h"
#include "runtime/memory_use.h"

namespace dtrain {

namespace fs = std::filesystem;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

nlohmann::json EpochMetrics::to_json(size_t world) const {
  auto known = [this](double v) { return trained ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"epoch", epoch},
          {"step", step},
          {"loss", known(loss)},
          {"train_accuracy", known(train_accuracy)},
          {"test_loss", test_loss},
          {"test_accuracy", test_accuracy},
          {"samples_per_sec", known(samples_per_sec)},
          {"seconds", seconds},
          {"world_size", world}};
}

Trainer::Trainer(Model& model, Optimizer& opt, GradientSync& sync, const Dataset& data,
                 JobSpec spec)
    : model_(model), opt_(opt), sync_(sync), data_(data), opts_(std::move(spec)) {
  if (data.features() != model.input_size())
    throw InputError(detail::cat("the data has ", data.features(),
                                 " features per sample, the model takes ", model.input_size()));
  if (opts_.epochs == 0) throw InputError("--epochs must be at least 1");
  // A global batch larger than the training set repeats samples within a step (and a huge one
  // ran out of memory before saying anything).
  const size_t n = data.train.size(), w = std::max<size_t>(sync_.world(), 1);
  if (opts_.batch_size > n || opts_.batch_size * w > n)
    throw InputError(detail::cat("--batch-size ", opts_.batch_size, " x ", w,
                                 " worker(s) is more than the ", n, " training samples"));
}

namespace {
volatile std::sig_atomic_t g_stop = 0;
constexpr size_t kStopCheckSteps = 8;
}  // namespace

void request_stop() {
  g_stop = 1;
}
bool stop_requested() {
  return g_stop != 0;
}
void clear_stop_request() {
  g_stop = 0;
}

TrainResult Trainer::run() {
  const bool chief = sync_.is_chief();
  const bool writer = chief && opts_.write_outputs;
  const std::string ckpt = (fs::path(opts_.output_dir) / "model" / "checkpoint.bin").string();
  const std::string metrics_path = (fs::path(opts_.output_dir) / "metrics.jsonl").string();

  // The chief's output folder is usable, and no other job writes into it, before any training:
  // an unusable one was found at the first epoch's end, and two jobs sharing one overwrote each
  // other's checkpoint and metrics without a word.
  OutputLock lock;
  if (writer) lock = lock_output_dir(opts_.output_dir);
  // Weights the model already holds (a model factory that loaded pretrained ones, to fine-tune)
  // are where training starts; only a model that holds none is initialized from the seed.
  if (model_.holds_params()) {
    if (chief && opts_.print)
      log_info(
          "starting from the parameters the model holds (set before training), not from "
          "--seed ",
          opts_.seed, "'s initialization");
  } else {
    model_.init(opts_.seed);
  }
  // Where training continues, decided by the chief and handed to every process by start().
  ResumePoint resume;
  // A restart by dtrainrun resumes this job's own checkpoint only: when the first attempt failed
  // before writing one, the folder may hold another job's (a run before this one), which is
  // replaced as it would be without --resume.
  bool others = false;
  if (chief && opts_.resume && opts_.resume_only_job && fs::exists(ckpt)) {
    const nlohmann::json extra = read_checkpoint_meta(ckpt).extra;
    const auto written_by =
        extra.is_object() && extra.contains("job_id") && extra["job_id"].is_number_unsigned()
            ? std::optional<uint64_t>(extra["job_id"].get<uint64_t>())
            : std::nullopt;
    others = written_by != opts_.resume_only_job;
    if (others && opts_.print)
      log_info("restart: ", ckpt, " was written by another job (",
               written_by ? detail::cat("job id ", *written_by) : std::string("no job id"),
               ", this job is ", *opts_.resume_only_job,
               ") and this job wrote none before it failed: starting from scratch (the "
               "checkpoint will be replaced; pass --resume to the command to continue it)");
  }
  if (chief && opts_.resume && !others) {
    if (fs::exists(ckpt)) {
      CheckpointMeta m = load_checkpoint(ckpt, model_, opt_);
      if (m.seed != opts_.seed)
        log_info("note: the checkpoint was made with seed ", m.seed, ", this run uses ", opts_.seed,
                 "; batches after the resume follow this run's seed");
      resume.epoch = m.epoch;
      resume.step = m.global_step;
      resume.step_in_epoch = m.extra.is_object() ? m.extra.value("step_in_epoch", uint64_t(0)) : 0;
      // A checkpoint from another world size (an elastic restart): the batch per worker stays,
      // the global batch changes. Batches are slices of one permutation of the epoch, so the
      // place inside it converts to this world's steps (rounded down: at most one global batch
      // is trained again).
      const uint64_t was = m.extra.is_object() ? m.extra.value("world_size", uint64_t(0)) : 0;
      // A checkpoint made with another --batch-size: the place in the epoch is samples, not
      // steps (applying the steps to the new batch skipped data, or a whole epoch).
      const uint64_t was_batch = m.extra.is_object()
                                     ? m.extra.value("batch_size", uint64_t(opts_.batch_size))
                                     : opts_.batch_size;
      if (was_batch != opts_.batch_size) {
        const uint64_t w = was ? was : sync_.world();
        const uint64_t converted =
            resume.step_in_epoch * was_batch * w / (opts_.batch_size * sync_.world());
        if (opts_.print)
          log_info("note: the checkpoint was made with --batch-size ", was_batch, " x ", w,
                   " worker(s), this job has ", opts_.batch_size, " x ", sync_.world(),
                   resume.step_in_epoch ? detail::cat(": step ", resume.step_in_epoch,
                                                      " of the epoch becomes step ", converted)
                                        : std::string());
        resume.step_in_epoch = converted;
      } else if (was && was != sync_.world()) {
        const uint64_t converted = resume.step_in_epoch * was / sync_.world();
        if (opts_.print)
          log_info("note: the checkpoint was made by ", was, " worker(s), this job has ",
                   sync_.world(), ": the batch per worker stays ", opts_.batch_size,
                   ", the global batch becomes ", opts_.batch_size * sync_.world(), " (was ",
                   opts_.batch_size * was, ")",
                   resume.step_in_epoch ? detail::cat("; step ", resume.step_in_epoch,
                                                      " of the epoch becomes step ", converted)
                                        : std::string());
        resume.step_in_epoch = converted;
      }
      if (fs::exists(metrics_path)) {
        std::ifstream in(metrics_path);
        std::string line;
        while (std::getline(in, line)) {
          if (line.empty()) continue;
          auto j = nlohmann::json::parse(line, nullptr, false);
          if (!j.is_discarded() && j.value("epoch", uint64_t(0)) <= m.epoch) history_.push_back(j);
        }
      }
      if (opts_.print && resume.step_in_epoch)
        log_info("resuming from ", ckpt, " inside epoch ", m.epoch + 1, " after ",
                 resume.step_in_epoch, " of its steps (step ", m.global_step, ")");
      else if (opts_.print)
        log_info("resuming from ", ckpt, " after epoch ", m.epoch, " (step ", m.global_step, ")");
    } else if (opts_.print) {
      log_info("--resume: no checkpoint at ", ckpt, ", starting from scratch");
    }
  } else if (writer && fs::exists(ckpt) && opts_.print && !others) {
    log_info("note: ", ckpt, " exists and will be replaced (pass --resume to continue from it)");
  }

  // The optimizer that runs is what the others must agree with.
  JobSpec agreed = opts_;
  agreed.optimizer = opt_.options();
  nlohmann::json job = job_agreement(agreed, model_);
  // What decides how many steps, and so how many collectives, each rank makes: a rank with
  // another training set or step limit met the others' collectives out of order (a hang).
  job["train_samples"] = data_.train.size();
  job["max_steps_per_epoch"] = opts_.max_steps_per_epoch;
  job["checkpoint_every_steps"] = opts_.checkpoint_every_steps;
  if (!opts_.timeline_path.empty() && chief)
    timeline_.open(opts_.timeline_path, static_cast<int>(sync_.rank()));
  // Ends the timeline's document however train() ends (a stop, an error).
  struct CloseTimeline {
    Timeline& t;
    ~CloseTimeline() { t.close(); }
  } close_timeline{timeline_};
  resume = sync_.start(model_, opt_, job, resume, timeline_);
  const bool ps_worker = sync_.name() == "ps";
  // Allreduce ranks agree on where to stop: every kStopCheckSteps steps they sum their SIGTERM
  // flags (8 bytes; ~0.3% of a step's time), and all stop there together, the chief writing the
  // checkpoint. A SIGTERM reaches the ranks at slightly different moments; stopping each at its
  // own step would leave the others waiting.
  const bool agree_on_stop = sync_.world() > 1 && !ps_worker;
  auto any_rank_stopping = [this] {
    double flag = stop_requested() ? 1 : 0;
    sync_.sum(&flag, 1);
    return flag > 0;
  };
  // Not under mpirun: its output forwarding does not keep a carriage-return progress line.
  const bool progress = chief && opts_.print && sync_.world() == 1 && isatty(STDOUT_FILENO) &&
                        read_env().mpi_world_size == 0;

  if (resume.epoch >= opts_.epochs && chief && opts_.print)
    log_info("nothing to do: the checkpoint is at epoch ", resume.epoch, " of ", opts_.epochs,
             " (raise --epochs to train further); its last epoch's metrics follow");
  Batcher batcher(data_.train.size(), opts_.batch_size, sync_.rank(), sync_.world(), opts_.seed);
  TrainResult result;
  uint64_t global_step = resume.step;
  // The step of the checkpoint in the output folder that this job made or resumed from.
  std::optional<uint64_t> saved_step;
  if (opts_.resume && (resume.step || resume.epoch)) saved_step = resume.step;
  size_t peak_anon = read_memory_use().anonymous_bytes;  // sampled at every epoch's end
  double samples = 0, seconds = 0;
  for (uint64_t e = resume.epoch; e < opts_.epochs; ++e) {
    EpochMetrics m;
    {
      // Inline rather than a helper so the loop reads top to bottom.
      batcher.start_epoch(e);
      const size_t steps = opts_.max_steps_per_epoch
                               ? std::min(opts_.max_steps_per_epoch, batcher.steps_per_epoch())
                               : batcher.steps_per_epoch();
      const size_t f = data_.features(), b = opts_.batch_size;
      std::vector<float> x(b * f);
      std::vector<uint8_t> y(b);
      const GradReady ready = [this](size_t off, size_t n) { sync_.ready(off, n); };
      model_.take_train_stats();  // start the epoch's sums from zero
      const auto t0 = std::chrono::steady_clock::now();
      // A mid-epoch checkpoint: its steps of this epoch are done; the batches that follow are
      // the ones an uninterrupted run takes (they derive from the seed and the epoch).
      const size_t first = e == resume.epoch ? std::min<size_t>(resume.step_in_epoch, steps) : 0;
      for (size_t s = first; s < steps; ++s) {
        gather_batch(batcher.indices(s), data_.train.images.data(), data_.train.labels.data(), f,
                     x.data(), y.data());
        // On a GPU these spans time the queueing of the work, which runs asynchronously.
        const int64_t ta = timeline_.now_us();
        model_.forward_train(x.data(), y.data(), b);
        const int64_t tb = timeline_.now_us();
        model_.backward(ready);
        const int64_t tc = timeline_.now_us();
        sync_.finish_step(model_, opt_);
        if (timeline_.enabled()) {
          timeline_.span("forward", 0, ta, tb, {{"step", global_step}});
          timeline_.span("backward", 0, tb, tc, {{"step", global_step}});
          timeline_.span("finish_step", 0, tc, timeline_.now_us(), {{"step", global_step}});
        }
        ++global_step;
        // Every kStopCheckSteps steps of the job (not of the epoch: with fewer steps per epoch a
        // SIGTERM was never looked at) and at each epoch's last step, the same on every rank.
        const bool check = global_step % kStopCheckSteps == 0 || s + 1 == steps;
        const bool stop = agree_on_stop ? check && any_rank_stopping() : stop_requested();
        const size_t every = opts_.checkpoint_every_steps;
        // ps mode: the servers hold the parameters and optimizer state; the chief gathers their
        // shards into its model first (sync: they are those of this step, which no worker can
        // pass before the chief pushes the next). On a stop the servers are being stopped too, so
        // a ps job keeps its last periodic checkpoint.
        // Allreduce ranks gather the optimizer state together (a sharded optimizer keeps only its
        // piece current; the stop is agreed), the chief writes.
        const bool checkpoint_here =
            (stop && !ps_worker) || (every && (s + 1) % every == 0 && s + 1 < steps);
        if (checkpoint_here && (writer || !ps_worker)) sync_.gather_state(model_, opt_);
        if (checkpoint_here && writer) write_step_checkpoint(e, s + 1, global_step, /*now=*/stop);
        if (stop) {
          sync_.finish(false);
          // A periodic checkpoint counts once written (a failed write is only a warning).
          if (writer && writer_) {
            writer_->flush();
            const std::optional<uint64_t> w = writer_->last_written_step();
            if (w && (!saved_step || *w > *saved_step)) saved_step = w;
          }
          // A ps job writes none on a stop: it keeps its last one, if it has one.
          std::string said;
          if (checkpoint_here && writer)
            said = "; checkpoint written (--resume continues)";
          else if (writer && saved_step)
            said = detail::cat("; keeping the last checkpoint (step ", *saved_step,
                               "; --resume continues from there)");
          else if (writer)
            said =
                "; it has no checkpoint yet (a ps job writes one at each epoch's end and "
                "every --checkpoint-every-steps steps)";
          throw StopRequested(detail::cat("stopped by SIGTERM after step ", global_step, said));
        }
        if (progress && (s % 50 == 0 || s + 1 == steps)) {
          const BatchStats so_far = model_.peek_train_stats();
          std::printf("\repoch %llu/%zu  step %zu/%zu  loss %.4f ", (unsigned long long)e + 1,
                      opts_.epochs, s + 1, steps,
                      so_far.loss_sum / static_cast<double>(so_far.count));
          std::fflush(stdout);
        }
      }
      // Reading the sums waits for the queued steps, so the epoch's time includes them.
      const BatchStats ts_train = model_.take_train_stats();
      const double stats[3] = {ts_train.loss_sum, static_cast<double>(ts_train.correct),
                               static_cast<double>(ts_train.count)};
      const double secs = seconds_since(t0);
      if (progress) std::printf("\r%60s\r", "");
      log_debug("epoch ", e + 1, ": ", steps, " steps, loss ", stats[0] / stats[2], ", ",
                secs > 0 ? stats[2] / secs : 0.0, " samples/s on this worker");

      sync_.gather_state(model_, opt_);
      // Test set sharded over workers; sums combined with the training sums in one call.
      const size_t nt = data_.test.size(), r = sync_.rank(), w = sync_.world();
      const size_t lo = nt * r / w, hi = nt * (r + 1) / w;
      BatchStats ts = model_.evaluate_pixels(data_.test.images.data() + lo * f,
                                             data_.test.labels.data() + lo, hi - lo);
      double all[6] = {stats[0],    stats[1],           stats[2],
                       ts.loss_sum, double(ts.correct), double(ts.count)};
      sync_.sum(all, 6);
      m.epoch = e + 1;
      m.step = global_step;
      m.trained = all[2] > 0;  // no step left after a resume at the epoch's last step
      m.loss = all[2] > 0 ? all[0] / all[2] : 0;
      m.train_accuracy = all[2] > 0 ? all[1] / all[2] : 0;
      m.test_loss = all[5] > 0 ? all[3] / all[5] : 0;
      m.test_accuracy = all[5] > 0 ? all[4] / all[5] : 0;
      m.seconds = secs;
      m.samples_per_sec = secs > 0 ? all[2] / secs : 0;
      samples += all[2];
      seconds += secs;
      peak_anon = std::max(peak_anon, read_memory_use().anonymous_bytes);
    }
    if (chief && opts_.print && m.trained)
      std::printf(
          "epoch %llu/%zu  loss %.4f  train_acc %.4f  test_acc %.4f  %.0f samples/s  (%.2f s)\n",
          (unsigned long long)m.epoch, opts_.epochs, m.loss, m.train_accuracy, m.test_accuracy,
          m.samples_per_sec, m.seconds);
    else if (chief && opts_.print)
      std::printf("epoch %llu/%zu  no step left to train (resumed at its end)  test_acc %.4f\n",
                  (unsigned long long)m.epoch, opts_.epochs, m.test_accuracy);
    std::fflush(stdout);
    if (writer) {
      write_epoch_outputs(m, global_step);
      saved_step = global_step;
    }
    result.epochs.push_back(m);
  }
  sync_.finish(true);
  timeline_.close();

  const MemoryUse mem = read_memory_use();
  peak_anon = std::max(peak_anon, mem.anonymous_bytes);
  log_debug("memory: peak resident ", mem.peak_resident_bytes >> 20, " MB, anonymous (private) ",
            peak_anon >> 20, " MB at most, file-backed now ", mem.file_bytes >> 20, " MB");
  result.seconds = seconds;
  result.samples_per_sec = seconds > 0 ? samples / seconds : 0;
  // A resumed job with no epoch left reports the checkpoint's last epoch (from metrics.jsonl).
  EpochMetrics last = result.epochs.empty() ? EpochMetrics{} : result.epochs.back();
  if (result.epochs.empty() && !history_.empty()) {
    const nlohmann::json& h = history_.back();
    auto number = [&h](const char* k) {
      return h.contains(k) && h[k].is_number() ? h[k].get<double>() : 0.0;
    };
    last.epoch = h.value("epoch", uint64_t(0));
    last.loss = number("loss");
    last.train_accuracy = number("train_accuracy");
    last.test_loss = number("test_loss");
    last.test_accuracy = number("test_accuracy");
    last.trained = h.contains("loss") && h["loss"].is_number();
  }
  result.test_accuracy = last.test_accuracy;
  result.summary = {
      {"event", "summary"},
      {"mode", sync_.name()},
      {"world_size", sync_.world()},
      {"device", model_.backend().name()},
      {"epochs", opts_.epochs},
      {"global_step", global_step},
      {"loss", last.trained ? nlohmann::json(last.loss) : nlohmann::json()},
      {"train_accuracy", last.trained ? nlohmann::json(last.train_accuracy) : nlohmann::json()},
      {"test_loss", last.test_loss},
      {"test_accuracy", last.test_accuracy},
      // Nothing trained (a resumed job with no epoch left): not known, not 0.
      {"samples_per_sec",
       result.epochs.empty() ? nlohmann::json() : nlohmann::json(result.samples_per_sec)},
      {"seconds", result.epochs.empty() ? nlohmann::json() : nlohmann::json(result.seconds)},
      {"output_dir", opts_.output_dir},
      {"peak_rss_bytes", mem.peak_resident_bytes},
      {"peak_anon_bytes", peak_anon}};
  if (chief && opts_.print) std::printf("%s\n", result.summary.dump().c_str());
  std::fflush(stdout);
  return result;
}

void Trainer::write_step_checkpoint(uint64_t epoch, uint64_t step_in_epoch, uint64_t global_step,
                                    bool now) {
  CheckpointMeta meta;
  meta.epoch = epoch;
  meta.global_step = global_step;
  meta.seed = opts_.seed;
  meta.extra = {{"world_size", sync_.world()},
                {"batch_size", opts_.batch_size},
                {"mode", sync_.name()},
                {"step_in_epoch", step_in_epoch}};
  if (opts_.job_id) meta.extra["job_id"] = *opts_.job_id;
  const std::string path = (fs::path(opts_.output_dir) / "model" / "checkpoint.bin").string();
  if (!writer_) writer_ = std::make_unique<CheckpointWriter>();
  if (now) {
    writer_->flush();
    save_checkpoint(path, model_, opt_, meta);
  } else {
    writer_->submit(path, snapshot_checkpoint(model_, opt_, meta), global_step);
  }
}

void Trainer::write_epoch_outputs(const EpochMetrics& m, uint64_t global_step) {
  const fs::path out(opts_.output_dir);
  history_.push_back(m.to_json(sync_.world()));
  std::string lines;
  for (const auto& j : history_) lines += j.dump() + "\n";
  write_file_atomic((out / "metrics.jsonl").string(), lines);
  CheckpointMeta meta;
  meta.epoch = m.epoch;
  meta.global_step = global_step;
  meta.seed = opts_.seed;
  meta.extra = {{"world_size", sync_.world()},
                {"batch_size", opts_.batch_size},
                {"mode", sync_.name()},
                {"metrics", history_.back()}};
  if (opts_.job_id) meta.extra["job_id"] = *opts_.job_id;
  if (writer_) writer_->flush();
  save_checkpoint((out / "model" / "checkpoint.bin").string(), model_, opt_, meta);
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& t : model_.tensors())
    tensors.push_back({{"name", t.name}, {"offset", t.offset}, {"count", t.count}});
  const nlohmann::json model_file = {
      {"format", "dtrain-model-1"},      {"model", model_.spec()},         {"tensors", tensors},
      {"optimizer", opt_.spec()},        {"checkpoint", "checkpoint.bin"}, {"epoch", m.epoch},
      {"test_accuracy", m.test_accuracy}};
  write_file_atomic((out / "model" / "model.json").string(), model_file.dump(2) + "\n");
}

}  // namespace dtrain
