#include "launcher/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>

#include "runtime/error.h"
#include "runtime/log.h"

namespace dtrain::launcher {

namespace {

volatile sig_atomic_t g_stop_signal = 0;
void on_stop(int sig) {
  g_stop_signal = sig;
}

struct Stream {
  int fd = -1;
  bool is_err = false;
  size_t task = 0;
  std::string partial;
};

struct Running {
  const Task* task;
  pid_t pid = -1;
  int stdin_fd = -1;  // a remote task's ssh stdin, held open while it runs
  bool exited = false;
  int status = 0;
};

// Per (task name) output: console prefix and the log files.
class Sink {
 public:
  Sink(std::string root) : root_(std::move(root)) {}
  void line(const std::string& name, const std::string& log_dir, bool err, const std::string& s) {
    std::FILE* out = err ? stderr : stdout;
    std::fprintf(out, "[%s] %s\n", name.c_str(), s.c_str());
    std::fflush(out);
    auto& f = file(log_dir, err, false);
    file(log_dir, !err, false);  // both files exist for every task (an mpirun rank's too)
    f << s << '\n';
    f.flush();
    auto& last = last_[name];
    last.push_back(s);
    if (last.size() > 10) last.pop_front();
  }
  std::deque<std::string> last(const std::string& name) { return last_[name]; }
  // Every task gets its log folder, even one that never prints; one that cannot be written is
  // an InputError naming it (the launcher opens them all before it starts any task).
  void touch(const std::string& log_dir) {
    file(log_dir, false, true);
    file(log_dir, true, true);
  }

 private:
  // A log file that cannot be written: an error when `strict`, else said once (an mpirun rank's
  // folder, opened at its first line) and its lines go to the console only.
  std::ofstream& file(const std::string& log_dir, bool err, bool strict) {
    const std::string key = log_dir + (err ? "/stderr" : "/stdout");
    auto it = files_.find(key);
    if (it != files_.end()) return *it->second;
    const std::filesystem::path path = std::filesystem::path(root_) / key;
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    errno = 0;
    auto f = std::make_unique<std::ofstream>(path, std::ios::app);
    if (!*f) {
      const std::string why = ec ? ec.message() : std::strerror(errno ? errno : EIO);
      const std::string what = "cannot write the log file " + path.string() + " (" + why + ")";
      if (strict) throw InputError(what + ": pick another --log-dir");
      std::fprintf(stderr, "[dtrainrun] %s; its lines go to the console only\n", what.c_str());
    }
    return *files_.emplace(key, std::move(f)).first->second;
  }
  std::string root_;
  std::map<std::string, std::unique_ptr<std::ofstream>> files_;
  std::map<std::string, std::deque<std::string>> last_;
};

// A remote task runs over ssh through remote_command(); its secrets go down ssh's standard input,
// whose write end (*stdin_fd) the launcher holds open for the task's life: when the launcher
// goes, the remote side sees the pipe close and stops the task.
pid_t spawn(const Task& t, int out_fd, int err_fd, double grace_s, int* stdin_fd) {
  std::vector<std::string> argv = t.argv;
  int in[2] = {-1, -1};
  if (!t.host.empty()) {
    argv = {"ssh", "-o", "BatchMode=yes", t.host,
            remote_command(t, std::filesystem::current_path().string(), grace_s)};
    if (pipe2(in, O_CLOEXEC) != 0) throw Error("pipe failed: " + std::string(std::strerror(errno)));
  }
  const pid_t pid = fork();
  if (pid < 0) throw Error(std::string("fork failed: ") + std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (in[0] >= 0) dup2(in[0], STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    if (t.host.empty()) {
      for (const auto& [k, v] : t.env) setenv(k.c_str(), v.c_str(), 1);
      for (const auto& [k, v] : t.secrets) setenv(k.c_str(), v.c_str(), 1);
    }
    if (t.host.empty() && t.cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(t.cpu, &set);
      sched_setaffinity(0, sizeof(set), &set);  // best effort: unpinned is still correct
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  if (in[0] >= 0) {
    close(in[0]);
    const std::string keys = remote_stdin(t);  // a few hundred bytes: the pipe holds them
    if (write(in[1], keys.data(), keys.size()) != static_cast<ssize_t>(keys.size()))
      throw Error(detail::cat("cannot hand ", t.name, " its keys: ", std::strerror(errno)));
    *stdin_fd = in[1];
  }
  setpgid(pid, pid);
  return pid;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return detail::cat("was killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)),
                       ")");
  return "stopped";
}

int code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// SIGKILL to every process descended from this one, then reap them.
void kill_descendants() {
  for (int round = 0; round < 5; ++round) {
    std::map<pid_t, pid_t> parent;
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      const std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream stat(e.path() / "stat");
      std::string line;
      if (!std::getline(stat, line)) continue;
      const size_t close_paren = line.rfind(')');
      if (close_paren == std::string::npos) continue;
      std::istringstream rest(line.substr(close_paren + 2));
      char state;
      pid_t ppid = 0;
      rest >> state >> ppid;
      parent[std::stoi(name)] = ppid;
    }
    std::vector<pid_t> mine;
    for (const auto& [pid, ppid] : parent) {
      for (pid_t p = ppid, hops = 0; p > 1 && hops < 64;
           p = parent.count(p) ? parent[p] : 0, ++hops)
        if (p == getpid()) {
          mine.push_back(pid);
          break;
        }
    }
    if (mine.empty()) return;
    for (pid_t p : mine) kill(p, SIGKILL);
    for (int i = 0; i < 20; ++i) {
      while (waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      usleep(10000);
    }
  }
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

Supervisor::Supervisor(std::string output_dir, double grace_period_s, bool verbose)
    : output_dir_(std::move(output_dir)), grace_s_(grace_period_s), verbose_(verbose) {}

RunResult Supervisor::run(const JobPlan& plan) {
  // Orphans of the tasks (an ssh session whose mpirun is gone) come to us, not to init.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  Sink sink(output_dir_);
  std::vector<Running> tasks(plan.tasks.size());
  std::vector<Stream> streams;
  // Starts task i (again, for a rejoin): its output streams join the others.
  auto start = [&](size_t i) {
    const Task& t = plan.tasks[i];
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
      throw Error("pipe failed: " + std::string(std::strerror(errno)));
    Running r{&t};
    sink.touch(t.log_dir);
    r.pid = spawn(t, out[1], err[1], grace_s_, &r.stdin_fd);
    close(out[1]);
    close(err[1]);
    streams.push_back({out[0], false, i, ""});
    streams.push_back({err[0], true, i, ""});
    if (verbose_) std::fprintf(stderr, "[dtrainrun] started %s (pid %d)\n", t.name.c_str(), r.pid);
    tasks[i] = r;
  };
  for (const Task& t : plan.tasks) sink.touch(t.log_dir);  // before any task starts
  for (size_t i = 0; i < plan.tasks.size(); ++i) start(i);
  // mpirun's tagged lines ("[1,3]<stdout>:text") belong to worker:3; its own reports name the
  // rank that failed.
  const std::regex tag(R"(^\[\d+,(\d+)\]<(stdout|stderr)>: ?(.*)$)");
  const std::regex died(R"(process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+))");
  const std::regex node_line(R"(^\s*Node:\s+(\S+)\s*$)");
  // mpirun's report of a machine whose daemon went away (every process there killed, or the
  // machine lost).
  const std::regex lost_daemon(R"(Remote daemon: \S+ on node (\S+))");
  // A surviving rank's report of the peer that hung up on it.
  const std::regex peer_host(R"(^\s*Peer host:\s+(\S+)\s*$)");
  const std::regex exit_name(R"(Process name:\s+\[\[\d+,\d+\],(\d+)\])");
  const std::regex ssh_closed(R"(^Connection to (\S+) closed)");
  // A rank that called MPI_Abort (an error on one rank only: dtrain aborts the job with it).
  const std::regex aborted(R"(MPI_ABORT was invoked on rank (\d+))");
  const std::regex abort_code(R"(^\s*with errorcode (\d+))");
  // mpirun's own word that the job is over (a daemon it lost, a rank that died): behind a
  // partition it may then wait for a machine it cannot reach (or crash on the way out), so the
  // job is stopped from here at once.
  const std::regex terminating(R"(will terminate the job|therefore will terminate)");
  bool mpirun_terminating = false;
  std::string mpi_failed_rank, mpi_reason, mpi_node, abort_rank, abort_reason;
  RunResult result;
  const std::regex stall_line(R"(stall: ending the job: (.*)$)");
  const std::regex stall_warning(R"(stall: (waiting .*)$)");
  // A rank's own error line (dtrain's log prefix): names the rank when mpirun's report of an
  // MPI_Abort is lost (Open MPI 4.1's show_help fails now and then when ranks abort together:
  // "ORTE_ERROR_LOG: Data unpack would read past end of buffer ... show_help.c").
  const std::regex rank_error(R"(^\[rank \d+/\d+ [^\]]*\] error: )");
  std::string first_error_rank;
  auto blame_stall = [&] {
    result.failed_task = result.stall_task;
    result.failed_host.clear();
    result.reason = "stalled (--stall-timeout)";
    result.exit_code = 124;
  };
  auto emit = [&](const Stream& s, const std::string& line) {
    const Task& t = *tasks[s.task].task;
    std::smatch m;
    if (t.mpi_tagged_output && std::regex_match(line, m, tag)) {
      const std::string r = m[1];
      const std::string text = m[3];
      const bool err = m[2] == "stderr";
      if (result.stall.empty() && std::regex_search(text, m, stall_line)) {
        result.stall = m[1];
        result.stall_task = "worker:" + r;
      } else if (std::regex_search(text, m, stall_warning)) {
        result.stall_warning = m[1];
        result.stall_warning_task = "worker:" + r;
      }
      if (first_error_rank.empty() && std::regex_search(text, rank_error)) first_error_rank = r;
      sink.line("worker:" + r, "logs/worker:" + r, err, text);
      return;
    }
    if (result.stall.empty() && std::regex_search(line, m, stall_line)) {
      result.stall = m[1];
      result.stall_task = t.name;
    }
    if (t.mpi_tagged_output && std::regex_search(line, m, terminating)) mpirun_terminating = true;
    if (t.mpi_tagged_output && abort_rank.empty() && std::regex_search(line, m, aborted)) {
      abort_rank = m[1];
      abort_reason = "called MPI_Abort";
    } else if (t.mpi_tagged_output && !abort_rank.empty() &&
               std::regex_search(line, m, abort_code)) {
      abort_reason = detail::cat("exited with code ", m[1], " (MPI_Abort)");
    } else if (t.mpi_tagged_output && std::regex_search(line, m, died)) {
      mpi_failed_rank = m[1];
      mpi_node = m[2];
      mpi_reason =
          detail::cat("was killed by signal ", m[3], " (", strsignal(std::stoi(m[3])), ")");
    } else if (t.mpi_tagged_output && mpi_failed_rank.empty() &&
               std::regex_search(line, m, exit_name)) {
      mpi_failed_rank = m[1];
    } else if (t.mpi_tagged_output && mpi_node.empty() && std::regex_search(line, m, ssh_closed)) {
      mpi_node = m[1];  // ssh's word for a machine whose daemon went away
    } else if (t.mpi_tagged_output && std::regex_search(line, m, lost_daemon)) {
      mpi_node = m[1];
    } else if (t.mpi_tagged_output && mpi_node.empty() && std::regex_match(line, m, peer_host)) {
      mpi_node = m[1];
    } else if (t.mpi_tagged_output && mpi_node.empty() && std::regex_match(line, m, node_line)) {
      mpi_node = m[1];  // mpirun's report of a rank it could not start names the node so
    }
    sink.line(t.name, t.log_dir, s.is_err, line);
  };

  size_t open_streams = streams.size(), alive = tasks.size();
  bool stopping = false;
  std::chrono::steady_clock::time_point stop_at, stall_seen, all_exited_at;
  bool all_exited = false;
  auto stop_all = [&](int sig) {
    for (auto& r : tasks)
      if (!r.exited) kill(-r.pid, sig);
  };
  while (alive > 0 || open_streams > 0) {
    std::vector<pollfd> fds;
    std::vector<size_t> which;
    for (size_t i = 0; i < streams.size(); ++i)
      if (streams[i].fd >= 0) {
        fds.push_back({streams[i].fd, POLLIN, 0});
        which.push_back(i);
      }
    poll(fds.data(), fds.size(), 100);
    for (size_t k = 0; k < fds.size(); ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Stream& s = streams[which[k]];
      char buf[65536];
      const ssize_t n = read(s.fd, buf, sizeof(buf));
      if (n <= 0) {
        if (!s.partial.empty()) emit(s, s.partial);
        s.partial.clear();
        close(s.fd);
        s.fd = -1;
        --open_streams;
        continue;
      }
      s.partial.append(buf, size_t(n));
      size_t pos;
      while ((pos = s.partial.find('\n')) != std::string::npos) {
        emit(s, s.partial.substr(0, pos));
        s.partial.erase(0, pos + 1);
      }
    }
    // Reaps tasks, and orphans of theirs handed to us as the subreaper.
    for (;;) {
      int status = 0;
      const pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      auto it =
          std::find_if(tasks.begin(), tasks.end(), [&](const Running& t) { return t.pid == pid; });
      if (it == tasks.end()) continue;
      Running& r = *it;
      if (r.exited) continue;
      r.exited = true;
      r.status = status;
      if (r.stdin_fd >= 0) close(r.stdin_fd);
      r.stdin_fd = -1;
      --alive;
      if (verbose_)
        std::fprintf(stderr, "[dtrainrun] %s %s\n", r.task->name.c_str(), describe(status).c_str());
      if (code_of(status) != 0 && r.task->rejoinable && rejoins_left_ > 0 && !stopping &&
          !g_stop_signal) {
        --rejoins_left_;
        ++rejoins_;
        std::fprintf(stderr,
                     "[dtrainrun] %s %s; starting it again to rejoin the job (rejoin %zu; the "
                     "other tasks go on)\n",
                     r.task->name.c_str(), describe(status).c_str(), rejoins_);
        const size_t i = size_t(&r - tasks.data());
        kill(-r.pid, SIGKILL);  // anything left of its process group
        start(i);
        open_streams += 2;
        ++alive;
        continue;
      }
      if (code_of(status) != 0 && result.failed_task.empty() && !stopping) {
        result.failed_task = r.task->name;
        result.failed_host = r.task->host;
        result.reason = describe(status);
        result.exit_code = code_of(status);
        stopping = true;
        stop_at = std::chrono::steady_clock::now();
        stop_all(SIGTERM);
      }
    }
    // A rank's watchdog ended the job: mpirun normally follows within a moment, but behind a
    // partition it can wait for a daemon it cannot reach; then the job is stopped from here.
    if (!result.stall.empty() && !stopping) {
      if (stall_seen == std::chrono::steady_clock::time_point{})
        stall_seen = std::chrono::steady_clock::now();
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - stall_seen).count() >
          grace_s_) {
        blame_stall();
        stopping = true;
        stop_at = std::chrono::steady_clock::now();
        stop_all(SIGTERM);
      }
    }
    // (A watchdog's reason, come before or after, takes its place below.)
    if (mpirun_terminating && !stopping) {
      result.failed_task = "mpirun";
      result.reason = "said it will terminate the job";
      result.exit_code = 1;
      stopping = true;
      stop_at = std::chrono::steady_clock::now();
      stop_all(SIGTERM);
    }
    if (g_stop_signal && !stopping) {
      result.interrupted = true;
      result.exit_code = 128 + g_stop_signal;
      result.reason = detail::cat("the launcher got signal ", int(g_stop_signal));
      stopping = true;
      stop_at = std::chrono::steady_clock::now();
      stop_all(SIGTERM);
    }
    if (stopping && alive > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_at).count() >
            grace_s_) {
      stop_all(SIGKILL);
      stop_at = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    // Once every task has exited, what they wrote last is still in the pipes (a failing task's
    // error lines, most often): read to the end of every stream, but a stream still held open by
    // a grandchild (`sleep 300 &` in a task's shell) keeps us at most a second.
    if (alive == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (!all_exited) {
        all_exited = true;
        all_exited_at = now;
      } else if (std::chrono::duration<double>(now - all_exited_at).count() > 1.0) {
        break;
      }
    }
  }
  for (auto& s : streams) {
    if (s.fd < 0) continue;
    if (!s.partial.empty()) emit(s, s.partial);  // a last line without its newline
    s.partial.clear();
    close(s.fd);
  }
  // A task's own children (mpirun's ranks) in its process group go with it, and so does anything
  // else it started (mpirun puts its ssh sessions in process groups of their own): as the
  // subreaper, every process descended from the launcher is ours to end.
  for (auto& r : tasks) {
    kill(-r.pid, SIGKILL);
    if (r.stdin_fd >= 0) close(r.stdin_fd);
  }
  kill_descendants();
  // mpirun said it would end the job, and a rank's watchdog said why (before or after): the
  // watchdog's reason is the better one.
  if (mpirun_terminating && result.failed_task == "mpirun" && !result.stall.empty()) blame_stall();
  const bool mpirun_failed = result.failed_task == "mpirun";
  if (mpirun_failed && mpirun_terminating && !mpi_node.empty())
    result.reason = "lost contact with its daemon on " + mpi_node + " and ended the job";
  // mpirun named the failed rank but not its machine: the plan's placement says where it ran.
  const std::string& named_rank = !mpi_failed_rank.empty() ? mpi_failed_rank : abort_rank;
  if (mpirun_failed && mpi_node.empty() && !named_rank.empty()) {
    const size_t r = std::stoul(named_rank);
    for (const Task& t : plan.tasks)
      if (t.mpi_tagged_output && r < t.rank_hosts.size()) mpi_node = t.rank_hosts[r];
  }
  if (mpirun_failed && !mpi_node.empty() && mpi_node != host_name()) result.failed_host = mpi_node;
  if (mpirun_failed && !mpi_failed_rank.empty()) {
    result.failed_task = "worker:" + mpi_failed_rank;
    if (!mpi_reason.empty()) result.reason = mpi_reason;
  } else if (mpirun_failed && !abort_rank.empty()) {
    result.failed_task = "worker:" + abort_rank;  // its last lines say why
    result.reason = abort_reason;
  } else if (mpirun_failed && !first_error_rank.empty()) {
    result.failed_task = "worker:" + first_error_rank;
    result.reason = "reported an error; mpirun " + result.reason;
  }
  if (!result.failed_task.empty()) {
    result.last_lines = sink.last(result.failed_task);
    if (result.last_lines.empty() && result.failed_task != "mpirun")
      result.last_lines = sink.last("mpirun");  // mpirun's own report of that rank
  }
  return result;
}

}  // namespace dtrain::launcher
