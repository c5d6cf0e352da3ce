// TensorFlow's TF_CONFIG: {"cluster": {"chief": [...], "worker": [...], "ps": [...],
// "evaluator": [...]}, "task": {"type": "worker", "index": 1}}. Parsed and validated as
// TensorFlow does, with errors that say what is wrong and where. Lives in runtime/ because both
// paramserver/ (each task reads its own) and launcher/ (which writes them) use it.
#pragma once

#include <cstddef>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace dtrain {

struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
};

// "host:port" with a port in 1..65535; throws InputError naming `where`.
HostPort parse_host_port(const std::string& s, const std::string& where);

struct ClusterSpec {
  std::map<std::string, std::vector<HostPort>> jobs;  // chief, worker, ps, evaluator
  std::optional<std::string> task_type;
  size_t task_index = 0;

  const std::vector<HostPort>& job(const std::string& name) const;
  size_t num_workers() const;  // chief + workers: the tasks that train
  // The chief: "chief" when present, else worker 0.
  std::string chief_type() const { return jobs.count("chief") ? "chief" : "worker"; }
  bool is_chief() const;
  // Training tasks in order (chief first when present), as "type:index".
  std::vector<std::pair<std::string, size_t>> training_tasks() const;
  // This task's position among training_tasks() (only for chief/worker tasks).
  size_t worker_rank() const;
  nlohmann::json to_json(bool with_task) const;
};

// Parses a TF_CONFIG string. require_task: a task must be present and valid (a task's own
// TF_CONFIG); otherwise a cluster alone is accepted (the launcher's input).
ClusterSpec parse_cluster_spec(const std::string& text, const std::string& source,
                               bool require_task);

// Checks what parameter-server mode needs: at least one ps and one worker (chief counts).
void validate_for_ps(const ClusterSpec& spec, const std::string& source);

}  // namespace dtrain
