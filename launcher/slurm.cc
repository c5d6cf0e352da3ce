#include "launcher/slurm.h"

#include <cstdlib>

#include "runtime/error.h"

namespace dtrain::launcher {

namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// Splits at commas outside brackets.
std::vector<std::string> top_level_items(const std::string& list, const std::string& var) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : list) {
    if (c == '[') ++depth;
    if (c == ']' && --depth < 0) break;
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (depth != 0) throw InputError(var + "='" + list + "': unbalanced brackets");
  out.push_back(cur);
  for (const auto& item : out)
    if (item.empty()) throw InputError(var + "='" + list + "': an empty host name");
  return out;
}

}  // namespace

std::vector<std::string> expand_hostlist(const std::string& list, const std::string& var) {
  std::vector<std::string> hosts;
  for (const std::string& item : top_level_items(list, var)) {
    const size_t open = item.find('[');
    if (open == std::string::npos) {
      hosts.push_back(item);
      continue;
    }
    const size_t close = item.find(']', open);
    const std::string prefix = item.substr(0, open), suffix = item.substr(close + 1);
    if (suffix.find('[') != std::string::npos)
      throw InputError(var + "='" + list + "': only one bracketed range per name is supported");
    const std::string ranges = item.substr(open + 1, close - open - 1);
    size_t start = 0;
    for (;;) {
      const size_t comma = ranges.find(',', start);
      const std::string r =
          ranges.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      const size_t dash = r.find('-');
      const std::string lo = r.substr(0, dash),
                        hi = dash == std::string::npos ? lo : r.substr(dash + 1);
      // At most 9 digits (std::stoul throws a bare "stoul" past its range) and 100000 names
      // per range (a typo must not fill the memory).
      if (!all_digits(lo) || !all_digits(hi) || lo.size() > 9 || hi.size() > 9 ||
          std::stoul(hi) < std::stoul(lo) || std::stoul(hi) - std::stoul(lo) >= 100000)
        throw InputError(var + "='" + list + "': bad range '" + r + "' in " + item +
                         " (ascending, at most 100000 nodes)");
      for (unsigned long n = std::stoul(lo); n <= std::stoul(hi); ++n) {
        std::string num = std::to_string(n);
        if (num.size() < lo.size()) num.insert(0, lo.size() - num.size(), '0');  // node01
        hosts.push_back(prefix + num + suffix);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return hosts;
}

std::vector<size_t> expand_tasks_per_node(const std::string& s, size_t nodes,
                                          const std::string& var) {
  std::vector<size_t> out;
  for (const std::string& item : top_level_items(s, var)) {
    const size_t x = item.find("(x");
    const std::string n = item.substr(0, x);
    std::string times = "1";
    if (x != std::string::npos) {
      if (item.back() != ')') throw InputError(var + "='" + s + "': bad item '" + item + "'");
      times = item.substr(x + 2, item.size() - x - 3);
    }
    if (!all_digits(n) || !all_digits(times) || n.size() > 6 || times.size() > 5 ||
        std::stoul(n) == 0)
      throw InputError(var + "='" + s + "': bad item '" + item +
                       "' (tasks 1 to 999999, repeated at most 99999 times)");
    for (unsigned long k = 0; k < std::stoul(times); ++k) out.push_back(std::stoul(n));
  }
  if (out.size() == 1 && nodes > 1) out.assign(nodes, out[0]);
  if (out.size() != nodes)
    throw InputError(
        detail::cat(var, "='", s, "' gives ", out.size(), " node(s), the node list ", nodes));
  return out;
}

std::optional<SlurmAllocation> slurm_allocation(
    const std::function<const char*(const char*)>& get) {
  const char* list_var = "SLURM_JOB_NODELIST";
  const char* list = get(list_var);
  if (!list || !*list) {
    list_var = "SLURM_NODELIST";
    list = get(list_var);
  }
  if (!list || !*list) return std::nullopt;
  SlurmAllocation a;
  a.nodes = expand_hostlist(list, list_var);
  if (const char* n = get("SLURM_NTASKS_PER_NODE"); n && *n)
    a.tasks_per_node = expand_tasks_per_node(n, a.nodes.size(), "SLURM_NTASKS_PER_NODE");
  else if (const char* t = get("SLURM_TASKS_PER_NODE"); t && *t)
    a.tasks_per_node = expand_tasks_per_node(t, a.nodes.size(), "SLURM_TASKS_PER_NODE");
  else
    a.tasks_per_node.assign(a.nodes.size(), 1);
  return a;
}

}  // namespace dtrain::launcher
