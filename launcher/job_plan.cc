#include "launcher/job_plan.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "runtime/cluster_spec.h"
#include "runtime/error.h"
#include "runtime/log.h"
#include "runtime/netif.h"

extern char** environ;

namespace dtrain::launcher {

namespace {

struct HostSlots {
  std::string host;
  size_t slots = 0;  // 0: not given
};

// A slot count as written: digits, 1 to 999999 (a longer number is a typo, and std::stoul
// would throw a bare "stoul" on one past its range).
bool slot_count_ok(const std::string& n) {
  return !n.empty() && n.size() <= 6 && n.find_first_not_of("0123456789") == std::string::npos &&
         std::stoul(n) > 0;
}

HostSlots parse_host_slots(const std::string& given) {
  // "-H 'a, b'": the spaces around a name are not part of it.
  const size_t first = given.find_first_not_of(" \t"), last = given.find_last_not_of(" \t");
  const std::string s = first == std::string::npos ? "" : given.substr(first, last - first + 1);
  HostSlots h;
  const size_t c = s.rfind(':');
  if (c == std::string::npos) {
    h.host = s;
  } else {
    h.host = s.substr(0, c);
    const std::string n = s.substr(c + 1);
    if (!slot_count_ok(n))
      throw InputError("-H " + s +
                       ": slots must be a positive number (host:slots, at most 999999)");
    h.slots = std::stoul(n);
  }
  if (h.host.empty()) throw InputError("-H " + s + ": empty host name");
  return h;
}

// A file a flag names, read whole: a folder or an unreadable file is an InputError saying so.
std::string read_text(const std::string& path, const std::string& flag) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw InputError(flag + " " + path + ": is a folder, not a file");
  std::ifstream in(path);
  if (!in) throw InputError(flag + " " + path + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// Open MPI's hostfile: one "host [slots=N] [max_slots=M] ..." per line, '#' starts a comment,
// spaces may stand around '='; a host without slots= has one. count= and cpu= are Open MPI's
// other names for slots=; its other keywords (max_slots, username, boards, sockets, cores,
// cpu_set, in their spellings) are taken and do not add slots. Any other word is an error: a
// misspelt slots= would otherwise count one slot where mpirun counts another number.
std::vector<HostSlots> read_hostfile(const std::string& path) {
  static const std::set<std::string> slot_words = {"slots", "count", "cpu"};
  static const std::set<std::string> other_words = {
      "max_slots",        "max-slots",         "slots_max",         "slots-max",
      "max_cpu",          "max-cpu",           "cpu_max",           "cpu-max",
      "max_count",        "max-count",         "count_max",         "count-max",
      "username",         "user-name",         "user_name",         "boards",
      "sockets",          "sockets_per_board", "sockets-per-board", "cores",
      "cores_per_socket", "cores-per-socket",  "cpu_set",           "cpu-set"};
  std::istringstream in(read_text(path, "--hostfile"));
  std::vector<HostSlots> hosts;
  std::string line;
  for (size_t no = 1; std::getline(in, line); ++no) {
    line = line.substr(0, line.find('#'));
    // "slots = 4" is "slots=4" to Open MPI.
    std::string joined;
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] != '=') {
        joined += line[i];
        continue;
      }
      while (!joined.empty() && (joined.back() == ' ' || joined.back() == '\t')) joined.pop_back();
      joined += '=';
      while (i + 1 < line.size() && (line[i + 1] == ' ' || line[i + 1] == '\t')) ++i;
    }
    line = joined;
    std::istringstream words(line);
    HostSlots h;
    if (!(words >> h.host)) continue;
    const std::string where = detail::cat("--hostfile ", path, " line ", no, ": ");
    if (h.host.find('=') != std::string::npos)
      throw InputError(where + "'" + h.host + "': a line starts with the host's name");
    h.slots = 1;
    for (std::string w; words >> w;) {
      const size_t eq = w.find('=');
      const std::string key = w.substr(0, eq);
      if (eq == std::string::npos || eq + 1 == w.size() ||
          (!slot_words.count(key) && !other_words.count(key)))
        throw InputError(where + "'" + w +
                         "' is not one of Open MPI's hostfile settings (host slots=N "
                         "[max_slots=N]; count= and cpu= mean slots=)");
      if (!slot_words.count(key)) continue;  // max_slots= and the like limit, not add
      const std::string n = w.substr(eq + 1);
      if (!slot_count_ok(n))
        throw InputError(where + "'" + w + "': slots must be a positive number, at most 999999");
      h.slots = std::stoul(n);
    }
    hosts.push_back(h);
  }
  if (hosts.empty()) throw InputError("--hostfile " + path + ": names no host");
  return hosts;
}

// This machine: loopback, its host name, or one of its interfaces' addresses (a cluster spec
// written with this machine's address starts its tasks here, not over ssh to itself).
// A name that resolves to loopback addresses only (an alias of 127.0.0.1 in /etc/hosts).
bool resolves_to_loopback(const std::string& h) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  if (getaddrinfo(h.c_str(), nullptr, &hints, &res) != 0 || !res) return false;
  bool all = true;
  for (addrinfo* a = res; a; a = a->ai_next) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
    if ((ntohl(in->sin_addr.s_addr) >> 24) != 127) all = false;
  }
  freeaddrinfo(res);
  return all;
}

bool is_local_host(const std::string& h) {
  if (h == "localhost" || h.rfind("127.", 0) == 0 || h == "::1") return true;
  char name[256] = "";
  gethostname(name, sizeof(name) - 1);
  if (h == name) return true;
  for (const auto& i : network_interfaces())
    if (std::find(i.ipv4.begin(), i.ipv4.end(), h) != i.ipv4.end()) return true;
  return false;
}

JobPlan plan_allreduce(const LauncherOptions& o, bool is_root, const SlurmAllocation* slurm) {
  if (!o.cluster_spec.empty()) throw InputError("--cluster-spec is for --mode ps");
  std::vector<HostSlots> hosts;
  for (const auto& h : o.hosts) {
    hosts.push_back(parse_host_slots(h));
    // mpirun merges them: -H n2,n2 with --node-count 2 put all ranks on n2, silently.
    for (size_t k = 0; k + 1 < hosts.size(); ++k)
      if (hosts[k].host == hosts.back().host)
        throw InputError(detail::cat("-H names ", hosts.back().host,
                                     " twice: give each machine once, with its slots (",
                                     hosts.back().host, ":N)"));
  }
  // Inside a Slurm allocation the nodes and their tasks are Slurm's unless -H/--hostfile say.
  const bool from_slurm = hosts.empty() && o.hostfile.empty() && slurm;
  if (from_slurm)
    for (size_t i = 0; i < slurm->nodes.size(); ++i)
      hosts.push_back({slurm->nodes[i], slurm->tasks_per_node[i]});
  size_t np = o.np;
  if (o.node_count || o.process_count_per_node) {
    if (!o.node_count || !o.process_count_per_node)
      throw InputError("an MPI configuration needs both --node-count and --process-count-per-node");
    const size_t total = o.node_count * o.process_count_per_node;
    if (np && np != total)
      throw InputError(detail::cat("-np ", np, " does not match --node-count ", o.node_count,
                                   " x --process-count-per-node ", o.process_count_per_node, " = ",
                                   total));
    np = total;
    if (hosts.empty() && o.hostfile.empty() && o.node_count > 1)
      throw InputError(detail::cat("--node-count ", o.node_count,
                                   " needs the nodes: -H with that many hosts, or --hostfile"));
    if (!hosts.empty()) {
      if (hosts.size() != o.node_count)
        throw InputError(detail::cat("--node-count ", o.node_count, " but ",
                                     from_slurm ? "the Slurm allocation has " : "-H names ",
                                     hosts.size(), from_slurm ? " node(s)" : " host(s)"));
      for (auto& h : hosts) {
        if (h.slots && h.slots != o.process_count_per_node && !from_slurm)
          throw InputError(detail::cat("-H ", h.host, ":", h.slots, " disagrees with ",
                                       "--process-count-per-node ", o.process_count_per_node));
        h.slots = o.process_count_per_node;
      }
    }
  }
  if (!hosts.empty() && !o.hostfile.empty())
    throw InputError("-H and --hostfile both name the hosts: give one of them");
  // The hostfile's slots count as -H's do (mpirun starts that many ranks by default).
  const std::vector<HostSlots> counted = o.hostfile.empty() ? hosts : read_hostfile(o.hostfile);
  // A loopback interface in a job across machines: mpirun offered 127.0.0.1 to the other
  // machines and the job hung before any rank spoke (lo,eth0) or died in Open MPI's TCP code.
  const bool across = std::any_of(counted.begin(), counted.end(), [](const HostSlots& h) {
    return !is_local_host(h.host) && !resolves_to_loopback(h.host);
  });
  if (across && !o.network_interface.empty())
    for (const auto& name : split_interfaces(o.network_interface, "--network-interface"))
      if (interface_address(name, "--network-interface").rfind("127.", 0) == 0)
        throw InputError(detail::cat(
            "--network-interface ", o.network_interface, ": ", name,
            " is this machine's loopback interface, which the other machines cannot reach; "
            "name only the interfaces that connect the machines"));
  if (!o.hostfile.empty() && o.node_count) {
    // mpirun fills a host's slots before the next host's: the hostfile must give each node
    // exactly --process-count-per-node slots, or the ranks would not be laid out as asked.
    std::vector<HostSlots> nodes;
    for (const auto& h : counted) {
      auto it = std::find_if(nodes.begin(), nodes.end(),
                             [&](const HostSlots& n) { return n.host == h.host; });
      if (it == nodes.end())
        nodes.push_back(h);
      else
        it->slots += h.slots;
    }
    if (nodes.size() != o.node_count)
      throw InputError(detail::cat("--node-count ", o.node_count, " but --hostfile ", o.hostfile,
                                   " names ", nodes.size(), " host(s)"));
    for (const auto& n : nodes)
      if (n.slots != o.process_count_per_node)
        throw InputError(detail::cat("--hostfile ", o.hostfile, ": ", n.host, " has ", n.slots,
                                     " slot(s) where --process-count-per-node is ",
                                     o.process_count_per_node,
                                     " (mpirun fills a host's slots before the next host's)"));
  }
  const char* source = !o.hostfile.empty() ? "the hostfile gives"
                       : from_slurm        ? "the Slurm allocation gives"
                                           : "-H gives";
  size_t slots = 0;
  for (const auto& h : counted) slots += h.slots ? h.slots : 1;
  if (!np) np = counted.empty() ? 1 : slots;
  if (!counted.empty() && np > slots)
    throw InputError(detail::cat("-np ", np, " is more than the ", slots, " slot(s) ", source));
  Task t;
  t.name = "mpirun";
  t.log_dir = "logs/mpirun";
  t.mpi_tagged_output = true;
  t.argv = {"mpirun", "-np", std::to_string(np)};
  if (!hosts.empty()) {
    std::string list;
    for (const auto& h : hosts)
      list += (list.empty() ? "" : ",") + h.host + ":" + std::to_string(h.slots ? h.slots : 1);
    t.argv.insert(t.argv.end(), {"-H", list});
  }
  {
    std::vector<std::pair<std::string, size_t>> placed;
    for (const auto& h : counted) placed.emplace_back(h.host, h.slots ? h.slots : 1);
    for (const auto& [h, n] : merge_hosts(std::move(placed)))  // mpirun merges repeated hosts
      for (size_t k = 0; k < n && t.rank_hosts.size() < np; ++k) t.rank_hosts.push_back(h);
  }
  if (!o.hostfile.empty()) t.argv.insert(t.argv.end(), {"--hostfile", o.hostfile});
  if (is_root) t.argv.push_back("--allow-run-as-root");
  // One process per core is the job's layout; mpirun's default binding fights oversubscription,
  // and binding ranks measured no clear gain here (--bind-to core asks for it).
  t.argv.insert(t.argv.end(), {"--bind-to", o.bind_to == "core" ? "core" : "none", "--tag-output"});
  if (hosts.empty() && o.hostfile.empty()) t.argv.push_back("--oversubscribe");
  if (!o.network_interface.empty()) {
    t.argv.insert(t.argv.end(),
                  {"--mca", "btl_tcp_if_include", o.network_interface, "--mca",
                   "oob_tcp_if_include", o.network_interface, "-x", "DTRAIN_NETWORK_INTERFACE"});
    t.env["DTRAIN_NETWORK_INTERFACE"] = o.network_interface;
  }
  // The job's id (dtrainrun sets the same one again on every restart): written into checkpoints.
  t.env["DTRAIN_JOB_ID"] = std::to_string(new_job_id());
  t.argv.insert(t.argv.end(), {"-x", "DTRAIN_JOB_ID"});
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    if (kv.rfind("DTRAIN_", 0) == 0 && !t.env.count(kv.substr(0, kv.find('='))))
      t.argv.insert(t.argv.end(), {"-x", kv.substr(0, kv.find('='))});
  }
  t.argv.insert(t.argv.end(), o.command.begin(), o.command.end());
  return {"allreduce", {t}};
}

}  // namespace

uint64_t new_job_id() {
  std::random_device rd;
  return ((uint64_t(rd()) << 32) | rd()) >> 1;
}

void set_task_env(JobPlan& plan, const std::string& name, const std::string& value) {
  for (Task& t : plan.tasks) {
    if (t.mpi_tagged_output) {
      bool forwarded = false;
      for (size_t i = 0; i + 1 < t.argv.size(); ++i)
        forwarded = forwarded || (t.argv[i] == "-x" && t.argv[i + 1] == name);
      if (!forwarded) t.argv.insert(t.argv.begin() + 1, {"-x", name});
    }
    t.env[name] = value;
  }
}

namespace {

ClusterSpec ps_cluster(const LauncherOptions& o, const std::string& tf_config,
                       const SlurmAllocation* slurm) {
  if (!o.cluster_spec.empty()) {
    ClusterSpec s = parse_cluster_spec(read_text(o.cluster_spec, "--cluster-spec"),
                                       "--cluster-spec " + o.cluster_spec, false);
    if (s.task_type)
      throw InputError("--cluster-spec " + o.cluster_spec +
                       " names a task: that is one task's configuration; the launcher needs the "
                       "cluster alone (it gives each task its own)");
    return s;
  }
  if (!tf_config.empty()) {
    ClusterSpec s = parse_cluster_spec(tf_config, "TF_CONFIG", false);
    if (s.task_type)
      throw InputError(
          "TF_CONFIG names a task: that is one task's configuration; the launcher "
          "needs a cluster alone (or pass --cluster-spec)");
    return s;
  }
  if (o.num_ps == 0 || o.num_workers == 0)
    throw InputError("--num-ps and --num-workers must be at least 1");
  ClusterSpec s;
  if (slurm) {
    // One task per Slurm task slot, in node order: the first --num-ps are ps tasks, the rest
    // workers; a node's tasks listen on ports kSlurmPortBase, +1, ...
    std::vector<HostPort> slots;
    for (size_t i = 0; i < slurm->nodes.size(); ++i)
      for (size_t k = 0; k < slurm->tasks_per_node[i]; ++k)
        slots.push_back({slurm->nodes[i], static_cast<uint16_t>(kSlurmPortBase + k)});
    if (slots.size() <= o.num_ps)
      throw InputError(detail::cat("the Slurm allocation has ", slots.size(), " task(s): --num-ps ",
                                   o.num_ps, " leaves no worker"));
    for (size_t i = 0; i < slots.size(); ++i)
      s.jobs[i < o.num_ps ? "ps" : "worker"].push_back(slots[i]);
    return s;
  }
  // On this machine: loopback, or the address of --network-interface's first interface.
  const std::string host =
      o.network_interface.empty()
          ? std::string("127.0.0.1")
          : interface_address(split_interfaces(o.network_interface, "--network-interface")[0],
                              "--network-interface");
  const auto ports = free_ports(o.num_ps + o.num_workers);
  for (size_t i = 0; i < o.num_ps; ++i) s.jobs["ps"].push_back({host, ports[i]});
  for (size_t i = 0; i < o.num_workers; ++i)
    s.jobs["worker"].push_back({host, ports[o.num_ps + i]});
  return s;
}

JobPlan plan_ps(const LauncherOptions& o, const std::string& tf_config,
                const std::vector<int>& cpus, const SlurmAllocation* slurm) {
  if (o.np || !o.hosts.empty() || !o.hostfile.empty() || o.node_count || o.process_count_per_node)
    throw InputError(
        "-np, -H, --hostfile and the MPI configuration are for --mode allreduce; a "
        "ps job's hosts come from its cluster spec");
  ClusterSpec spec = ps_cluster(o, tf_config, slurm);
  validate_for_ps(spec, o.cluster_spec.empty() ? "the cluster" : o.cluster_spec);
  if (!spec.job("evaluator").empty())
    throw InputError("evaluator tasks are not supported (the chief evaluates)");
  const uint64_t job_id = new_job_id();
  JobPlan plan{"ps", {}};
  for (const char* type : {"ps", "chief", "worker"}) {
    for (size_t i = 0; i < spec.job(type).size(); ++i) {
      ClusterSpec me = spec;
      me.task_type = type;
      me.task_index = i;
      Task t;
      t.name = detail::cat(type, ":", i);
      t.log_dir = "logs/" + t.name;  // the task's name everywhere: [ps:0], logs/ps:0, errors
      const std::string host = spec.job(type)[i].host;
      t.host = is_local_host(host) ? "" : host;
      t.env["TF_CONFIG"] = me.to_json(true).dump();
      t.env["DTRAIN_JOB_ID"] = std::to_string(job_id);
      if (!o.network_interface.empty()) t.env["DTRAIN_NETWORK_INTERFACE"] = o.network_interface;
      // Settings go through the environment: the command may be any program (a Python
      // script), which must not get flags it does not know. TF_CONFIG naming ps tasks makes
      // mnist_train's --mode auto a ps task or worker.
      t.argv = o.command;
      t.env["DTRAIN_START_TIMEOUT"] = detail::cat(o.start_timeout_s);
      if (o.secure) t.env["DTRAIN_SECURE"] = "1";
      plan.tasks.push_back(std::move(t));
    }
  }
  // --bind-to core: workers on this machine get a core each when there are enough, the ps tasks
  // float. Oversubscribed, nobody is bound. Not the default: 1 ps + 2 workers on 2 cores
  // measured no clear difference (6 alternating runs, medians ~71,000 vs ~72,000 samples/s).
  std::vector<Task*> local_workers;
  for (auto& t : plan.tasks)
    if (t.host.empty() && t.name.rfind("ps:", 0) != 0) local_workers.push_back(&t);
  if (o.bind_to == "core" && !local_workers.empty() && local_workers.size() <= cpus.size())
    for (size_t k = 0; k < local_workers.size(); ++k) local_workers[k]->cpu = cpus[k];
  return plan;
}

std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

}  // namespace

std::vector<uint16_t> free_ports(size_t n) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  for (size_t i = 0; i < n; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw Error("cannot find a free port on 127.0.0.1");
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) close(fd);
  return ports;
}

JobPlan plan_job(const LauncherOptions& o, const std::string& tf_config, bool is_root,
                 std::vector<int> cpus, const SlurmAllocation* slurm) {
  if (o.command.empty()) throw InputError("no training command: dtrainrun [options] -- COMMAND");
  // Checked here, on the launching machine; each task checks its own machine again.
  if (!o.network_interface.empty())
    for (const auto& name : split_interfaces(o.network_interface, "--network-interface"))
      interface_address(name, "--network-interface");
  if (cpus.empty()) cpus = allowed_cpus();
  return o.mode == "ps" ? plan_ps(o, tf_config, cpus, slurm) : plan_allreduce(o, is_root, slurm);
}

std::string shell_line(const Task& t) {
  std::string s;
  if (!t.host.empty()) s += "ssh " + t.host + " ";
  for (const auto& [k, v] : t.env) s += k + "=" + shell_quote(v) + " ";
  for (const auto& kv : t.secrets) s += kv.first + "=<secret> ";
  if (t.cpu >= 0 && t.host.empty()) s += detail::cat("taskset -c ", t.cpu, " ");
  for (size_t i = 0; i < t.argv.size(); ++i) s += (i ? " " : "") + shell_quote(t.argv[i]);
  return s;
}

std::string remote_command(const Task& t, const std::string& cwd, double grace_s) {
  std::string run = "env";
  for (const auto& [k, v] : t.env) run += " " + shell_quote(k + "=" + v);
  run += " DTRAIN_PS_KEY_FILE=\"$d/keys\"";
  for (const auto& a : t.argv) run += " " + shell_quote(a);
  const std::string grace = detail::cat(std::max(1, static_cast<int>(grace_s + 0.999)));
  // fd 3 keeps the launcher's pipe: a background job's own stdin is /dev/null in sh.
  std::string script =
      "exec 3<&0 </dev/null; umask 077; "
      "d=$(mktemp -d /dev/shm/dtrain-keys.XXXXXX 2>/dev/null || mktemp -d /tmp/dtrain-keys.XXXXXX) "
      "|| { echo \"dtrainrun: cannot make a private folder on $(hostname)\" >&2; exit 126; }; "
      "trap 'rm -rf \"$d\"' EXIT; "
      "while IFS= read -r l <&3; do [ \"$l\" = . ] && break; printf '%s\\n' \"$l\"; done "
      ">\"$d/keys\"; "
      "cd " +
      shell_quote(cwd) + " 2>/dev/null || { echo \"dtrainrun: no folder " + shell_quote(cwd) +
      " on $(hostname)\" >&2; exit 126; }; " + run +
      " 3<&- & c=$!; "
      "trap 'kill -TERM $c 2>/dev/null' HUP INT TERM; "
      // After a normal end the folder is gone before the pipe closes: nothing to stop then.
      "( cat <&3 >/dev/null; [ -d \"$d\" ] || exit 0; kill -TERM $c 2>/dev/null; sleep " +
      grace +
      "; [ -d \"$d\" ] && kill -KILL $c 2>/dev/null ) >/dev/null 2>&1 & w=$!; "
      "wait $c; r=$?; while kill -0 $c 2>/dev/null; do wait $c; r=$?; done; "
      "kill $w 2>/dev/null; "
      "[ $r -eq 126 ] || [ $r -eq 127 ] && echo \"dtrainrun: cannot run " +
      shell_quote(t.argv.empty() ? std::string() : t.argv[0]) +
      " on $(hostname) (exit $r)\" >&2; "
      "exit $r";
  return "sh -c " + shell_quote(script);
}

std::string remote_stdin(const Task& t) {
  std::string s;
  for (const auto& [k, v] : t.secrets) s += k + "=" + v + "\n";
  return s + ".\n";
}

std::vector<std::pair<std::string, size_t>> allreduce_hosts(const LauncherOptions& o,
                                                            const SlurmAllocation* slurm) {
  std::vector<std::pair<std::string, size_t>> out;
  if (!o.hosts.empty()) {
    for (const auto& h : o.hosts) {
      const HostSlots hs = parse_host_slots(h);
      out.emplace_back(
          hs.host, o.process_count_per_node ? o.process_count_per_node : (hs.slots ? hs.slots : 1));
    }
  } else if (!o.hostfile.empty()) {
    for (const auto& hs : read_hostfile(o.hostfile)) out.emplace_back(hs.host, hs.slots);
  } else if (slurm) {
    for (size_t i = 0; i < slurm->nodes.size(); ++i)
      out.emplace_back(slurm->nodes[i], o.process_count_per_node ? o.process_count_per_node
                                                                 : slurm->tasks_per_node[i]);
  } else {
    const size_t np =
        o.np ? o.np
             : (o.node_count && o.process_count_per_node ? o.node_count * o.process_count_per_node
                                                         : 1);
    out.emplace_back("", np);
  }
  return merge_hosts(std::move(out));
}

std::vector<std::pair<std::string, size_t>> merge_hosts(
    std::vector<std::pair<std::string, size_t>> hosts) {
  std::vector<std::pair<std::string, size_t>> out;
  for (auto& [h, n] : hosts) {
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& x) { return x.first == h; });
    if (it == out.end())
      out.emplace_back(std::move(h), n);
    else
      it->second += n;  // as mpirun merges a host named twice
  }
  return out;
}

std::vector<std::pair<std::string, size_t>> cap_hosts(
    const std::vector<std::pair<std::string, size_t>>& hosts, size_t cap) {
  if (!cap) return hosts;
  std::vector<std::pair<std::string, size_t>> out;
  size_t total = 0;
  for (const auto& [h, n] : hosts) {
    const size_t take = std::min(n, cap - total);
    if (take == 0) break;
    out.emplace_back(h, take);
    total += take;
  }
  return out;
}

size_t elastic_cap(const LauncherOptions& o) {
  return o.np && o.max_np ? std::min(o.np, o.max_np) : o.np ? o.np : o.max_np;
}

LauncherOptions with_hosts(LauncherOptions o,
                           const std::vector<std::pair<std::string, size_t>>& hosts) {
  o.hosts.clear();
  o.hostfile.clear();
  o.node_count = o.process_count_per_node = 0;
  size_t np = 0;
  for (const auto& [h, n] : hosts) {
    np += n;
    if (!h.empty()) o.hosts.push_back(detail::cat(h, ":", n));
  }
  o.np = np;
  return o;
}

std::vector<std::pair<std::string, size_t>> shrink_hosts(
    std::vector<std::pair<std::string, size_t>> hosts, const std::string& failed_host,
    std::set<std::string>* dropped,
    const std::optional<std::vector<std::pair<std::string, size_t>>>& discovered, size_t max_np) {
  if (!failed_host.empty() && !is_local_host(failed_host)) {
    dropped->insert(failed_host);
  } else if (!hosts.empty()) {
    auto it = std::find_if(hosts.begin(), hosts.end(),
                           [](const auto& h) { return h.first.empty() || is_local_host(h.first); });
    if (it == hosts.end()) it = hosts.end() - 1;
    if (--it->second == 0) dropped->insert(it->first);
  }
  if (discovered) hosts = *discovered;
  std::vector<std::pair<std::string, size_t>> left;
  size_t total = 0;
  for (const auto& [host, slots] : hosts) {
    if (dropped->count(host) || slots == 0) continue;
    const size_t n = max_np ? std::min(slots, max_np - total) : slots;
    if (n == 0) break;
    left.emplace_back(host, n);
    total += n;
  }
  return left;
}

std::string describe_hosts(const std::vector<std::pair<std::string, size_t>>& hosts) {
  std::string list;
  for (const auto& [h, n] : hosts)
    list += (list.empty() ? "" : ",") + (h.empty() ? host_name() : h) + ":" + std::to_string(n);
  return list;
}

std::vector<std::pair<std::string, size_t>> parse_host_lines(const std::string& text,
                                                             const std::string& what) {
  std::vector<std::pair<std::string, size_t>> out;
  std::istringstream in(text);
  std::string line;
  for (size_t no = 1; std::getline(in, line); ++no) {
    line = line.substr(0, line.find('#'));
    const size_t a = line.find_first_not_of(" \t"), b = line.find_last_not_of(" \t\r");
    if (a == std::string::npos) continue;
    try {
      const HostSlots hs = parse_host_slots(line.substr(a, b - a + 1));
      out.emplace_back(hs.host, hs.slots ? hs.slots : 1);
    } catch (const InputError& e) {
      throw InputError(detail::cat(what, " line ", no, ": ", e.what()));
    }
  }
  return merge_hosts(std::move(out));
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-./:=,@%+") == std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::vector<std::string> remote_hosts(const JobPlan& plan) {
  std::vector<std::string> out;
  auto add = [&](const std::string& h) {
    if (!h.empty() && !is_local_host(h) && std::find(out.begin(), out.end(), h) == out.end())
      out.push_back(h);
  };
  for (const Task& t : plan.tasks) {
    add(t.host);
    for (const auto& h : t.rank_hosts) add(h);
  }
  return out;
}

}  // namespace dtrain::launcher
