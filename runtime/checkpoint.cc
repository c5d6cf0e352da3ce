#include "runtime/checkpoint.h"

#include <zlib.h>

#include <cstring>

#include "runtime/error.h"
#include "runtime/files.h"
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
}  // namespace

void save_checkpoint(const std::string& path, const Model& model, const Optimizer& opt,
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
  std::string s(kMagic, sizeof(kMagic));
  put(s, kVersion);
  put(s, static_cast<uint64_t>(js.size()));
  s += js;
  // Straight from the backend's memory into the file image (a download on a GPU).
  const size_t np = model.param_count(), ns = opt.state_size();
  const size_t at = s.size();
  s.resize(at + (np + ns) * sizeof(float));
  std::vector<float> host(np + ns);
  model.read_params(host.data());
  opt.read_state(host.data() + np);
  std::memcpy(s.data() + at, host.data(), host.size() * sizeof(float));
  const uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
  put(s, crc);
  write_file_atomic(path, s);
}

CheckpointMeta load_checkpoint(const std::string& path, Model& model, Optimizer& opt) {
  const std::string s = read_file(path);
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
  const uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size() - 4)));
  if (crc != crc_file) throw InputError(path + ": checksum mismatch (corrupt or torn file)");
  if (jlen > s.size() - head - 4) throw InputError(path + ": metadata length out of range");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(s.substr(head, jlen));
  } catch (const std::exception& e) {
    throw InputError(path + ": bad metadata: " + e.what());
  }
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
  CheckpointMeta m;
  m.epoch = j["epoch"].get<uint64_t>();
  m.global_step = j["global_step"].get<uint64_t>();
  m.seed = j["seed"].get<uint64_t>();
  m.extra = j["extra"];
  return m;
}

}  // namespace dtrain
