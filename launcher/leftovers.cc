#include "launcher/leftovers.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <regex>

#include "launcher/job_plan.h"
#include "runtime/error.h"

namespace dtrain::launcher {

std::string leftovers_script(const std::string& job_id) {
  if (job_id.empty() || job_id.find_first_not_of("0123456789") != std::string::npos)
    throw Error("leftovers_script: the job id '" + job_id + "' is not a number");
  // $$'s network namespace stands for "this machine"; environ files are NUL-separated.
  return "me=$(readlink /proc/$$/ns/net); n=0; "
         "for d in /proc/[0-9]*; do p=${d#/proc/}; [ \"$p\" = \"$$\" ] && continue; "
         "[ \"$(readlink \"$d/ns/net\" 2>/dev/null)\" = \"$me\" ] || continue; "
         "if { tr '\\0' '\\n' <\"$d/environ\"; } 2>/dev/null | grep -qx 'DTRAIN_JOB_ID=" +
         job_id +
         "'; then kill -9 \"$p\" 2>/dev/null && n=$((n+1)); fi; done; "
         "echo \"dtrain-leftovers ended $n\"";
}

namespace {

struct Probe {
  HostSweep result;
  pid_t pid = -1;
  int fd = -1;  // ssh's stdout and stderr together
  std::string out;
};

}  // namespace

std::vector<HostSweep> end_leftovers(const std::vector<std::string>& hosts,
                                     const std::string& job_id, double timeout_s) {
  const std::string command = "sh -c " + shell_quote(leftovers_script(job_id));
  const std::string connect =
      "ConnectTimeout=" + std::to_string(std::max(1, static_cast<int>(std::ceil(timeout_s / 2))));
  std::vector<Probe> probes(hosts.size());
  for (size_t i = 0; i < hosts.size(); ++i) {
    Probe& p = probes[i];
    p.result.host = hosts[i];
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw Error("pipe failed: " + std::string(strerror(errno)));
    p.pid = fork();
    if (p.pid < 0) throw Error("fork failed: " + std::string(strerror(errno)));
    if (p.pid == 0) {
      setpgid(0, 0);
      const int null = open("/dev/null", O_RDONLY);
      dup2(null, STDIN_FILENO);
      dup2(fds[1], STDOUT_FILENO);
      dup2(fds[1], STDERR_FILENO);
      signal(SIGPIPE, SIG_DFL);
      execlp("ssh", "ssh", "-o", "BatchMode=yes", "-o", connect.c_str(), hosts[i].c_str(),
             command.c_str(), static_cast<char*>(nullptr));
      std::fprintf(stderr, "cannot run ssh: %s\n", strerror(errno));
      _exit(127);
    }
    close(fds[1]);
    p.fd = fds[0];
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(long(timeout_s * 1000));
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<Probe*> which;
    for (auto& p : probes)
      if (p.fd >= 0) {
        fds.push_back({p.fd, POLLIN, 0});
        which.push_back(&p);
      }
    if (fds.empty() || std::chrono::steady_clock::now() >= deadline) break;
    poll(fds.data(), fds.size(), 50);
    for (size_t k = 0; k < fds.size(); ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t n = read(fds[k].fd, buf, sizeof(buf));
      if (n > 0) {
        which[k]->out.append(buf, size_t(n));
      } else {
        close(which[k]->fd);
        which[k]->fd = -1;
      }
    }
  }
  const std::regex ended(R"(dtrain-leftovers ended (\d+))");
  std::vector<HostSweep> out;
  for (auto& p : probes) {
    int status = 0;
    // Output closed: ssh is exiting (wait for it); still open at the deadline: given up.
    bool exited = p.fd < 0 && waitpid(p.pid, &status, 0) == p.pid;
    if (!exited) {
      kill(-p.pid, SIGKILL);
      waitpid(p.pid, &status, 0);
      close(p.fd);
    }
    std::smatch m;
    if (exited && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
        std::regex_search(p.out, m, ended)) {
      p.result.reached = true;
      p.result.ended = std::stoul(m[1]);
    } else if (!exited) {
      p.result.error = detail::cat("no answer within ", timeout_s, " s");
    } else {
      std::string last = p.out;
      while (!last.empty() && (last.back() == '\n' || last.back() == '\r')) last.pop_back();
      const size_t nl = last.rfind('\n');
      if (nl != std::string::npos) last = last.substr(nl + 1);
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      p.result.error = last.empty() ? "ssh exited with code " + std::to_string(code) : last;
    }
    out.push_back(p.result);
  }
  return out;
}

}  // namespace dtrain::launcher
