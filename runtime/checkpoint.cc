#include "runtime/checkpoint.h"

#include <zlib.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "runtime/error.h"
#include "runtime/files.h"
#include "runtime/log.h"
#include "runtime/model.h"
#include "runtime/optimizer.h"

namespace dtrain {

namespace {
constexpr char kMagic[8] = {'D', 'T', 'R', 'A', 'I', 'N', 'C', 'K'};
constexpr uint32_t kVersion = 1;

template <typename T>
void put(std::string& s, const T& v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
// zlib's crc32 takes a 32-bit length: a file over 4 GiB was checked on its first (size - 4 GiB)
// bytes only. crc32_z takes a size_t.
uint32_t crc_of(const char* p, size_t n) {
  return static_cast<uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(p), n));
}
}  // namespace

CheckpointSnapshot snapshot_checkpoint(const Model& model, const Optimizer& opt,
                                       const CheckpointMeta& meta) {
  nlohmann::json j = {{"model", model.spec()},
                      {"optimizer", opt.spec()},
                      {"optimizer_steps", opt.steps()},
                      {"optimizer_state_floats", opt.state_size()},
                      {"epoch", meta.epoch},
                      {"global_step", meta.global_step},
                      {"seed", meta.seed},
                      {"extra", meta.extra}};
  const std::string js = j.dump();
  CheckpointSnapshot snap;
  snap.head.assign(kMagic, sizeof(kMagic));
  put(snap.head, kVersion);
  put(snap.head, static_cast<uint64_t>(js.size()));
  snap.head += js;
  // From the backend's memory (a download on a GPU).
  const size_t np = model.param_count(), ns = opt.state_size();
  snap.floats.resize(np + ns);
  model.read_params(snap.floats.data());
  opt.read_state(snap.floats.data() + np);
  return snap;
}

void write_checkpoint(const std::string& path, const CheckpointSnapshot& snap) {
  std::string s = snap.head;
  const size_t at = s.size();
  s.resize(at + snap.floats.size() * sizeof(float));
  std::memcpy(s.data() + at, snap.floats.data(), snap.floats.size() * sizeof(float));
  const uint32_t crc = crc_of(s.data(), s.size());
  put(s, crc);
  write_file_atomic(path, s);
}

void save_checkpoint(const std::string& path, const Model& model, const Optimizer& opt,
                     const CheckpointMeta& meta) {
  write_checkpoint(path, snapshot_checkpoint(model, opt, meta));
}

struct CheckpointWriter::State {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<std::pair<std::string, CheckpointSnapshot>> pending;
  uint64_t pending_step = 0;
  std::optional<uint64_t> last_ok;
  bool busy = false, stop = false;
  std::exception_ptr error;
  std::thread thread;
};

CheckpointWriter::CheckpointWriter() : st_(std::make_unique<State>()) {
  st_->thread = std::thread([s = st_.get()] {
    std::unique_lock<std::mutex> lock(s->mu);
    for (;;) {
      s->cv.wait(lock, [&] { return s->stop || s->pending; });
      if (!s->pending) return;
      auto job = std::move(*s->pending);
      const uint64_t step = s->pending_step;
      s->pending.reset();
      s->busy = true;
      lock.unlock();
      std::exception_ptr err;
      try {
        write_checkpoint(job.first, job.second);
      } catch (...) {
        err = std::current_exception();
      }
      if (err) {
        // Said now, not at the next flush (an epoch later, as the job's end): the previous
        // checkpoint stays, and the next write may well succeed (space freed meanwhile).
        try {
          std::rethrow_exception(err);
        } catch (const std::exception& e) {
          log_info("warning: a periodic checkpoint could not be written (", e.what(),
                   "); the previous one stays, training goes on");
        }
      }
      lock.lock();
      s->busy = false;
      s->error = err;  // a later success clears it
      if (!err) s->last_ok = step;
      s->cv.notify_all();
    }
  });
}

CheckpointWriter::~CheckpointWriter() {
  {
    std::lock_guard<std::mutex> lock(st_->mu);
    st_->stop = true;
  }
  st_->cv.notify_all();
  st_->thread.join();  // the last pending snapshot is written first
}

void CheckpointWriter::submit(std::string path, CheckpointSnapshot snap, uint64_t step) {
  {
    std::lock_guard<std::mutex> lock(st_->mu);
    st_->pending.emplace(std::move(path), std::move(snap));
    st_->pending_step = step;
  }
  st_->cv.notify_all();
}

std::optional<uint64_t> CheckpointWriter::last_written_step() const {
  std::lock_guard<std::mutex> lock(st_->mu);
  return st_->last_ok;
}

bool CheckpointWriter::flush() {
  std::unique_lock<std::mutex> lock(st_->mu);
  st_->cv.wait(lock, [&] { return !st_->pending && !st_->busy; });
  return !st_->error;
}

namespace {
// A checkpoint file's bytes checked (magic, version, checksum, metadata length) and its metadata.
struct CheckedFile {
  std::string bytes;
  size_t head = 0;  // where the metadata starts
  uint64_t jlen = 0;
  nlohmann::json meta;
};
// The metadata's fields this build reads, each of the type it must have: a file with a valid
// checksum but other metadata (another tool's, hand-edited) is an error naming the field.
void check_meta(const std::string& path, const nlohmann::json& j) {
  auto bad = [&](const char* key, const char* want) {
    return InputError(detail::cat(path, ": bad metadata: '", key, "' must be ", want, ", is ",
                                  j.contains(key) ? j[key].dump() : std::string("missing")));
  };
  if (!j.is_object()) throw InputError(path + ": bad metadata: not a JSON object");
  for (const char* k :
       {"epoch", "global_step", "seed", "optimizer_steps", "optimizer_state_floats"})
    if (!j.contains(k) || !j[k].is_number_unsigned()) throw bad(k, "a whole number >= 0");
  if (!j.contains("model") || !j["model"].is_object()) throw bad("model", "an object");
  if (!j.contains("optimizer") || !j["optimizer"].is_object() || !j["optimizer"].contains("name") ||
      !j["optimizer"]["name"].is_string())
    throw bad("optimizer", "an object with a name");
  if (j.contains("extra") && !j["extra"].is_object() && !j["extra"].is_null())
    throw bad("extra", "an object");
  if (j.contains("extra") && j["extra"].is_object() && j["extra"].contains("step_in_epoch") &&
      !j["extra"]["step_in_epoch"].is_number_unsigned())
    throw InputError(path + ": bad metadata: 'extra.step_in_epoch' must be a whole number >= 0");
}

CheckedFile read_checked(const std::string& path) {
  CheckedFile f;
  f.bytes = read_file(path);
  const std::string& s = f.bytes;
  const size_t head = sizeof(kMagic) + 4 + 8;
  if (s.size() < head + 4) throw InputError(path + ": too short to be a dtrain checkpoint");
  if (std::memcmp(s.data(), kMagic, sizeof(kMagic)) != 0)
    throw InputError(path + ": not a dtrain checkpoint (bad magic)");
  uint32_t version, crc_file;
  uint64_t jlen;
  std::memcpy(&version, s.data() + 8, 4);
  std::memcpy(&jlen, s.data() + 12, 8);
  if (version != kVersion)
    throw InputError(
        detail::cat(path, ": checkpoint version ", version, ", this build reads ", kVersion));
  std::memcpy(&crc_file, s.data() + s.size() - 4, 4);
  const uint32_t crc = crc_of(s.data(), s.size() - 4);
  if (crc != crc_file) throw InputError(path + ": checksum mismatch (corrupt or torn file)");
  if (jlen > s.size() - head - 4) throw InputError(path + ": metadata length out of range");
  try {
    f.meta = nlohmann::json::parse(s.substr(head, jlen));
  } catch (const std::exception& e) {
    throw InputError(path + ": bad metadata: " + e.what());
  }
  check_meta(path, f.meta);
  f.head = head;
  f.jlen = jlen;
  return f;
}

CheckpointMeta meta_of(const nlohmann::json& j) {
  CheckpointMeta m;
  m.epoch = j["epoch"].get<uint64_t>();
  m.global_step = j["global_step"].get<uint64_t>();
  m.seed = j["seed"].get<uint64_t>();
  m.extra = j.value("extra", nlohmann::json::object());
  if (m.extra.is_null()) m.extra = nlohmann::json::object();
  return m;
}
}  // namespace

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  return meta_of(read_checked(path).meta);
}

CheckpointMeta load_checkpoint(const std::string& path, Model& model, Optimizer& opt) {
  CheckedFile f = read_checked(path);
  const std::string& s = f.bytes;
  nlohmann::json& j = f.meta;
  const size_t head = f.head;
  const uint64_t jlen = f.jlen;
  if (j["model"] != model.spec())
    throw InputError(detail::cat(path, ": the checkpoint's model ", j["model"].dump(),
                                 " differs from this run's ", model.spec().dump()));
  if (j["optimizer"]["name"] != opt.options().name)
    throw InputError(detail::cat(path, ": the checkpoint's optimizer is ",
                                 j["optimizer"]["name"].dump(), ", this run's is ",
                                 opt.options().name));
  const size_t np = model.param_count(), ns = opt.state_size();
  if (j["optimizer_state_floats"].get<size_t>() != ns)
    throw InputError(path + ": optimizer state size differs from this run's");
  if (s.size() != head + jlen + (np + ns) * sizeof(float) + 4)
    throw InputError(path + ": file size does not match its metadata (truncated?)");
  std::vector<float> host(np + ns);
  std::memcpy(host.data(), s.data() + head + jlen, host.size() * sizeof(float));
  model.write_params(host.data());
  opt.write_state(host.data() + np);
  opt.set_steps(j["optimizer_steps"].get<uint64_t>());
  return meta_of(j);
}

}  // namespace dtrain
