#include "runtime/cluster_spec.h"

#include <set>

#include "runtime/error.h"

namespace dtrain {

namespace {
const std::set<std::string> kJobs = {"chief", "worker", "ps", "evaluator"};

// Line and column (1-based) of a byte offset, for JSON errors people can find.
std::pair<size_t, size_t> line_col(const std::string& text, size_t byte) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}
}  // namespace

HostPort parse_host_port(const std::string& s, const std::string& where) {
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
    throw InputError(detail::cat(where, ": '", s, "' is not host:port"));
  HostPort hp;
  hp.host = s.substr(0, colon);
  if (hp.host.front() == '[' && hp.host.back() == ']')
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  const std::string port = s.substr(colon + 1);
  if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5)
    throw InputError(detail::cat(where, ": port '", port, "' of '", s, "' is not a number"));
  const unsigned long p = std::stoul(port);
  if (p == 0 || p > 65535)
    throw InputError(detail::cat(where, ": port ", p, " of '", s, "' is not in 1..65535"));
  if (hp.host.find_first_of(" /\t") != std::string::npos)
    throw InputError(detail::cat(where, ": host '", hp.host, "' of '", s, "' is malformed"));
  hp.port = static_cast<uint16_t>(p);
  return hp;
}

const std::vector<HostPort>& ClusterSpec::job(const std::string& name) const {
  static const std::vector<HostPort> empty;
  auto it = jobs.find(name);
  return it == jobs.end() ? empty : it->second;
}

size_t ClusterSpec::num_workers() const {
  return job("chief").size() + job("worker").size();
}

bool ClusterSpec::is_chief() const {
  if (!task_type) return false;
  return *task_type == chief_type() && task_index == 0;
}

std::vector<std::pair<std::string, size_t>> ClusterSpec::training_tasks() const {
  std::vector<std::pair<std::string, size_t>> out;
  for (size_t i = 0; i < job("chief").size(); ++i) out.push_back({"chief", i});
  for (size_t i = 0; i < job("worker").size(); ++i) out.push_back({"worker", i});
  return out;
}

size_t ClusterSpec::worker_rank() const {
  const auto tasks = training_tasks();
  for (size_t i = 0; i < tasks.size(); ++i)
    if (task_type && tasks[i].first == *task_type && tasks[i].second == task_index) return i;
  throw InputError("task " + task_type.value_or("?") + ":" + std::to_string(task_index) +
                   " is not a training task");
}

nlohmann::json ClusterSpec::to_json(bool with_task) const {
  nlohmann::json c = nlohmann::json::object();
  for (const auto& [name, addrs] : jobs) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& hp : addrs) a.push_back(hp.str());
    c[name] = a;
  }
  nlohmann::json j = {{"cluster", c}};
  if (with_task && task_type) j["task"] = {{"type", *task_type}, {"index", task_index}};
  return j;
}

ClusterSpec parse_cluster_spec(const std::string& text, const std::string& source,
                               bool require_task) {
  nlohmann::json j;
  // A key given twice in one object: JSON parsers keep the last, which would drop part of the
  // cluster without a word (two "ps" lists, say).
  std::vector<std::set<std::string>> keys;
  const auto no_duplicates = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& v) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end && !keys.empty()) keys.pop_back();
    if (event == E::key && !keys.empty() && !keys.back().insert(v.get<std::string>()).second)
      throw InputError(detail::cat(source, ": the key \"", v.get<std::string>(),
                                   "\" appears twice in one object (only one may be given)"));
    return true;
  };
  try {
    j = nlohmann::json::parse(text, no_duplicates);
  } catch (const nlohmann::json::parse_error& e) {
    auto [line, col] = line_col(text, e.byte > 0 ? e.byte - 1 : 0);
    std::string why = e.what();
    const size_t p = why.find("syntax error");
    if (p != std::string::npos) why = why.substr(p);
    throw InputError(
        detail::cat(source, ": malformed JSON at line ", line, ", column ", col, ": ", why));
  }
  if (!j.is_object()) throw InputError(source + ": must be a JSON object");
  if (!j.contains("cluster") || !j["cluster"].is_object())
    throw InputError(source + ": no \"cluster\" object");
  ClusterSpec spec;
  std::set<std::string> seen;
  for (auto it = j["cluster"].begin(); it != j["cluster"].end(); ++it) {
    if (!kJobs.count(it.key()))
      throw InputError(detail::cat(source, ": unknown job \"", it.key(),
                                   "\" in cluster (expected chief, worker, ps, evaluator)"));
    if (!it.value().is_array())
      throw InputError(detail::cat(source, ": cluster.", it.key(), " must be a list of host:port"));
    auto& list = spec.jobs[it.key()];
    for (size_t i = 0; i < it.value().size(); ++i) {
      const auto& v = it.value()[i];
      const std::string where = detail::cat(source, ": cluster.", it.key(), "[", i, "]");
      if (!v.is_string()) throw InputError(where + " must be a \"host:port\" string");
      HostPort hp = parse_host_port(v.get<std::string>(), where);
      if (!seen.insert(hp.str()).second)
        throw InputError(detail::cat(where, ": address ", hp.str(), " is used twice"));
      list.push_back(hp);
    }
  }
  if (spec.job("chief").size() > 1)
    throw InputError(detail::cat(source, ": ", spec.job("chief").size(),
                                 " chief tasks; a cluster has at most one"));
  if (spec.job("evaluator").size() > 1)
    throw InputError(source + ": a cluster has at most one evaluator");
  if (j.contains("task") && !j["task"].is_null() && !(j["task"].is_object() && j["task"].empty())) {
    const auto& t = j["task"];
    if (!t.is_object() || !t.contains("type") || !t["type"].is_string())
      throw InputError(source + ": task needs a string \"type\"");
    const std::string type = t["type"].get<std::string>();
    if (!kJobs.count(type))
      throw InputError(detail::cat(source, ": unknown task type \"", type,
                                   "\" (expected chief, worker, ps, evaluator)"));
    if (!spec.jobs.count(type) || spec.jobs[type].empty())
      throw InputError(detail::cat(source, ": task type \"", type, "\" is not in the cluster"));
    size_t index = 0;
    if (t.contains("index")) {
      if (!t["index"].is_number_integer() || t["index"].get<long long>() < 0)
        throw InputError(source + ": task.index must be a non-negative integer");
      index = t["index"].get<size_t>();
    }
    if (index >= spec.jobs[type].size())
      throw InputError(detail::cat(source, ": task index ", index,
                                   " is out of range: the cluster has ", spec.jobs[type].size(),
                                   " ", type, " task(s)"));
    spec.task_type = type;
    spec.task_index = index;
  } else if (require_task) {
    throw InputError(source + ": no \"task\" (which of the cluster's tasks is this process?)");
  }
  return spec;
}

void validate_for_ps(const ClusterSpec& spec, const std::string& source) {
  if (spec.job("ps").empty())
    throw InputError(source + ": parameter-server mode needs at least one ps task");
  if (spec.num_workers() == 0)
    throw InputError(source + ": parameter-server mode needs at least one worker (or chief) task");
}

}  // namespace dtrain
