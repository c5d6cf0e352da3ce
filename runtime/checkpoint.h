// A checkpoint is one file, outputs/model/checkpoint.bin:
//   "DTRAINCK" | u32 version | u64 meta length | meta (JSON) | params (f32) | optimizer state (f32)
//   | u32 CRC-32 of everything before it
// The JSON holds the model and optimizer specs, epoch, step, the optimizer's step count and the
// seed (all the RNG state there is: batches and initialization derive from seed and epoch).
// Written atomically; a torn or foreign file is rejected on load with the reason.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace dtrain {

class Model;
class Optimizer;

struct CheckpointMeta {
  uint64_t epoch = 0;        // epochs completed
  uint64_t global_step = 0;  // optimizer steps completed
  uint64_t seed = 0;
  nlohmann::json extra;  // anything else worth keeping (world size, metrics)
};

void save_checkpoint(const std::string& path, const Model& model, const Optimizer& opt,
                     const CheckpointMeta& meta);

// The same in two halves, so the slow half can run off the training thread: a snapshot (the
// header and a host copy of the parameters and optimizer state: one memcpy-speed pass), then
// writing it (checksum, write, fsync, rename).
struct CheckpointSnapshot {
  std::string head;  // magic, version, meta length, meta
  std::vector<float> floats;
};
CheckpointSnapshot snapshot_checkpoint(const Model& model, const Optimizer& opt,
                                       const CheckpointMeta& meta);
void write_checkpoint(const std::string& path, const CheckpointSnapshot& snap);

// Writes snapshots on a thread of its own; the latest one submitted wins when several wait.
// A write that fails is a warning when it happens (the previous checkpoint stays); flush()
// returns once everything submitted is written or failed: true when the last write succeeded.
class CheckpointWriter {
 public:
  CheckpointWriter();
  ~CheckpointWriter();
  // `step`: the job's step the snapshot is of (last_written_step() reports it once written).
  void submit(std::string path, CheckpointSnapshot snap, uint64_t step = 0);
  bool flush();
  // The step of the newest snapshot written successfully, if any (after flush(): final).
  std::optional<uint64_t> last_written_step() const;

 private:
  struct State;
  std::unique_ptr<State> st_;
};

// Loads into model and optimizer after checking that the file's model and optimizer match them;
// a mismatch is an InputError naming the field.
CheckpointMeta load_checkpoint(const std::string& path, Model& model, Optimizer& opt);

// The metadata alone (the file checked as load_checkpoint checks it, but no model needed).
CheckpointMeta read_checkpoint_meta(const std::string& path);

}  // namespace dtrain
