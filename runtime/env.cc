#include "runtime/env.h"

#include <cctype>
#include <cstdlib>
#include <utility>

#include "runtime/error.h"
#include "runtime/netif.h"

namespace dtrain {

namespace {
std::optional<std::string> get(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

size_t parse_size(const char* name, const std::string& v) {
  size_t pos = 0;
  unsigned long long n = 0;
  try {
    n = std::stoull(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos != v.size() || v[0] == '-')
    throw InputError(detail::cat(name, "='", v, "' is not a non-negative whole number"));
  return static_cast<size_t>(n);
}
// Bytes, as Horovod's HOROVOD_FUSION_THRESHOLD; a unit may follow the number: K, M or G, with or
// without B or iB, all powers of 1024 ("64MB", "512K", "67108864").
size_t parse_bytes(const char* name, const std::string& v) {
  size_t pos = 0;
  while (pos < v.size() && v[pos] >= '0' && v[pos] <= '9') ++pos;
  std::string unit = v.substr(pos);
  for (auto& ch : unit) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  size_t scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  for (const auto& [prefix, f] : {std::pair<const char*, size_t>{"K", size_t(1) << 10},
                                  {"M", size_t(1) << 20},
                                  {"G", size_t(1) << 30}})
    if (unit == prefix || unit == std::string(prefix) + "B" || unit == std::string(prefix) + "IB")
      scale = f;
  if (pos == 0 || scale == 0)
    throw InputError(detail::cat(name, "='", v,
                                 "' is not a size in bytes (a whole number of bytes, or with a "
                                 "unit: 64MB, 512K, 1GiB)"));
  return parse_size(name, v.substr(0, pos)) * scale;
}
}  // namespace

ResumeEnv read_resume_env() {
  ResumeEnv r;
  if (auto v = get("DTRAIN_RESUME")) {
    std::string b = *v;
    for (auto& ch : b) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    if (b == "1" || b == "true" || b == "yes" || b == "on")
      r.resume = true;
    else if (b == "0" || b == "false" || b == "no" || b == "off")
      r.resume = false;
    else
      throw InputError("DTRAIN_RESUME='" + *v + "' must be 1 or 0 (true or false)");
  }
  if (auto v = get("DTRAIN_RESUME_JOB")) r.resume_job = parse_size("DTRAIN_RESUME_JOB", *v);
  if (auto v = get("DTRAIN_JOB_ID")) r.job_id = parse_size("DTRAIN_JOB_ID", *v);
  return r;
}

EnvConfig read_env() {
  EnvConfig e;
  if (auto v = get("DTRAIN_FUSION_THRESHOLD"))
    e.fusion_threshold_bytes = parse_bytes("DTRAIN_FUSION_THRESHOLD", *v);
  e.tf_config = get("TF_CONFIG");
  e.cache_dir = get("DTRAIN_CACHE_DIR");
  if (auto v = get("DTRAIN_JOB_ID")) e.job_id = parse_size("DTRAIN_JOB_ID", *v);
  for (const char* n : {"DTRAIN_PS_SERVER_PUBLIC_KEY", "DTRAIN_PS_SERVER_SECRET_KEY",
                        "DTRAIN_PS_CLIENT_PUBLIC_KEY", "DTRAIN_PS_CLIENT_SECRET_KEY"})
    if (auto v = get(n)) e.ps_keys[n] = *v;
  e.ps_key_file = get("DTRAIN_PS_KEY_FILE");
  if (auto v = get("DTRAIN_ALLREDUCE_SHM")) {
    if (*v != "0" && *v != "1")
      throw InputError("DTRAIN_ALLREDUCE_SHM='" + *v + "' must be 0 or 1");
    e.allreduce_shm = *v == "1";
  }
  if (auto v = get("DTRAIN_NETWORK_INTERFACE"))
    e.network_interfaces = split_interfaces(*v, "DTRAIN_NETWORK_INTERFACE");
  for (auto [name, field] : {std::pair{"DTRAIN_STALL_WARNING", &e.stall_warning_s},
                             std::pair{"DTRAIN_STALL_TIMEOUT", &e.stall_timeout_s}})
    if (auto v = get(name)) {
      char* end = nullptr;
      const double d = std::strtod(v->c_str(), &end);
      if (v->empty() || *end != '\0' || !(d >= 0))
        throw InputError(detail::cat(name, "='", *v, "' must be a number of seconds (0 or more)"));
      *field = d;
    }
  if (auto v = get("DTRAIN_HIERARCHICAL")) {
    if (*v != "0" && *v != "1") throw InputError("DTRAIN_HIERARCHICAL='" + *v + "' must be 0 or 1");
    e.hierarchical = *v == "1";
  }
  if (auto v = get("DTRAIN_REQUIRE_GPU")) {
    if (*v != "0" && *v != "1") throw InputError("DTRAIN_REQUIRE_GPU='" + *v + "' must be 0 or 1");
    e.require_gpu = *v == "1";
  }
  if (auto v = get("DTRAIN_CUDA_SYNC")) {
    if (*v != "0" && *v != "1") throw InputError("DTRAIN_CUDA_SYNC='" + *v + "' must be 0 or 1");
    e.cuda_sync = *v == "1";
  }
  if (auto v = get("DTRAIN_PS_SHM")) {
    if (*v != "0" && *v != "1") throw InputError("DTRAIN_PS_SHM='" + *v + "' must be 0 or 1");
    e.ps_shm = *v == "1";
  }
  for (const char* n : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"})
    if (auto v = get(n)) {
      e.mpi_world_size = static_cast<size_t>(std::atol(v->c_str()));
      break;
    }
  return e;
}

}  // namespace dtrain
