// dtrainrun: starts a training job and watches it, in the manner of horovodrun and torchrun.
//   dtrainrun -np 2 -- build/bin/mnist_train ...                       allreduce job via mpirun
//   dtrainrun --node-count 2 --process-count-per-node 4 -H a,b -- ...   an MPI configuration
//   dtrainrun --mode ps --num-ps 1 --num-workers 2 -- ...               a local ps job
//   dtrainrun --mode ps --cluster-spec cluster.json -- ...              a TF_CONFIG cluster
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "launcher/job_keys.h"
#include "launcher/job_plan.h"
#include "launcher/launcher_options.h"
#include "launcher/leftovers.h"
#include "launcher/slurm.h"
#include "launcher/supervisor.h"
#include "runtime/cluster_spec.h"
#include "runtime/env.h"
#include "runtime/error.h"
#include "runtime/flag_checks.h"
#include "runtime/log.h"

namespace {

// Runs the --host-discovery-script: the hosts it prints, host[:slots] a line.
std::vector<std::pair<std::string, size_t>> discover_hosts(const std::string& script) {
  FILE* p = popen(script.c_str(), "r");
  std::string text;
  char buf[4096];
  for (size_t n; p && (n = fread(buf, 1, sizeof(buf), p)) > 0;) text.append(buf, n);
  if (!p || pclose(p) != 0)
    throw dtrain::InputError("--host-discovery-script " + script + " failed");
  return dtrain::launcher::parse_host_lines(text, "--host-discovery-script " + script);
}

// Flags that would do nothing in this job are errors saying why, not silently ignored.
void check_flags_apply(const CLI::App& app, const dtrain::launcher::LauncherOptions& o,
                       bool cluster_named) {
  auto given = [&](const char* name) { return app.get_option(name)->count() > 0; };
  for (const char* name : {"--num-ps", "--num-workers", "--start-timeout"}) {
    if (!given(name)) continue;
    const bool start = std::string(name) == "--start-timeout";
    if (o.mode != "ps")
      throw dtrain::InputError(
          std::string(name) + " is for --mode ps" +
          (start ? " (mpirun starts an allreduce job's ranks together; --stall-timeout bounds "
                   "their waits)"
                 : " (an allreduce job's ranks come from -np, -H, --hostfile or the MPI "
                   "configuration)"));
    if (cluster_named && std::string(name) != "--start-timeout")
      throw dtrain::InputError(
          std::string(name) + " makes the tasks of a job on this machine; this job's come from " +
          (o.cluster_spec.empty() ? "TF_CONFIG" : "--cluster-spec") + ", which names them");
  }
  if (o.min_np == 0)
    for (const char* name : {"--max-np", "--host-discovery-script"})
      if (given(name))
        throw dtrain::InputError(std::string(name) +
                                 " is for an elastic job: give --min-np too (the fewest ranks "
                                 "the job goes on with)");
  if (o.min_np > 0 && o.mode != "allreduce")
    throw dtrain::InputError(
        "--min-np is for allreduce jobs (a ps job's workers are named by its cluster)");
  if (o.rejoin_workers > 0 && o.mode != "ps")
    throw dtrain::InputError(
        "--rejoin-workers is for ps jobs (--mode ps); an allreduce job goes on without a "
        "failed machine with --min-np");
  if (o.secure && o.mode != "ps") throw dtrain::InputError("--secure is for --mode ps");
}

// After a failed or stopped job across machines: ends what is left of it on every other machine
// it ran on, and names each machine that could not be checked (launcher/leftovers.h).
// Returns the machines that could not be reached.
std::vector<std::string> report_leftovers(const dtrain::launcher::JobPlan& plan,
                                          const std::string& job_id, bool verbose) {
  std::vector<std::string> unreachable;
  const std::vector<std::string> hosts = dtrain::launcher::remote_hosts(plan);
  if (hosts.empty()) return unreachable;
  for (const auto& h : dtrain::launcher::end_leftovers(hosts, job_id, 4.0)) {
    if (!h.reached) {
      unreachable.push_back(h.host);
      std::fprintf(stderr,
                   "[dtrainrun] %s unreachable: could not check it for leftover processes (%s)\n",
                   h.host.c_str(), h.error.c_str());
    } else if (h.ended > 0) {
      std::fprintf(stderr, "[dtrainrun] %s: ended %zu leftover process(es) of the job\n",
                   h.host.c_str(), h.ended);
    } else if (verbose) {
      std::fprintf(stderr, "[dtrainrun] %s: nothing of the job left\n", h.host.c_str());
    }
  }
  return unreachable;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace dtrain::launcher;
  CLI::App app{
      "dtrainrun: start a dtrain job (allreduce through mpirun, or TF_CONFIG ps tasks) "
      "and supervise it"};
  app.name("dtrainrun");
  LauncherOptions o;
  add_launcher_flags(app, o);
  try {
    std::vector<std::string> args = normalize_args(argc, argv);
    std::reverse(args.begin(), args.end());  // CLI11 takes them last first
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    const std::string hint = dtrain::did_you_mean(app, normalize_args(argc, argv));
    if (rc != 0 && hint.find("did you mean") != std::string::npos)
      std::fprintf(stderr, "dtrainrun: %s\n", hint.c_str());
    // "dtrainrun build/bin/mnist_train --epochs 1": the command's flags were taken for ours.
    else if (dynamic_cast<const CLI::ExtrasError*>(&e))
      std::fprintf(stderr,
                   "dtrainrun: the training command and its flags go after --: dtrainrun "
                   "[options] -- COMMAND [ARGS...] (see dtrainrun --help)\n");
    return rc == 0 ? 0 : 2;  // --help is success; any bad flag is bad input
  }
  try {
    const dtrain::EnvConfig env = dtrain::read_env();
    const bool cluster_named =
        o.mode == "ps" && (!o.cluster_spec.empty() || !env.tf_config.value_or("").empty());
    check_flags_apply(app, o, cluster_named);
    // An allreduce job's ranks inherit TF_CONFIG: one naming ps tasks makes each of them a ps
    // task or worker looking for its own "task" (they died with 'TF_CONFIG: no "task"').
    if (o.mode == "allreduce" && env.tf_config && !env.tf_config->empty()) {
      const dtrain::ClusterSpec s = dtrain::parse_cluster_spec(*env.tf_config, "TF_CONFIG", false);
      if (!s.job("ps").empty())
        throw dtrain::InputError(
            "TF_CONFIG names ps tasks: add --mode ps for a parameter-server job, or unset "
            "TF_CONFIG for an allreduce job");
    }
    // Slurm's variables are read only when they would name the hosts (a job given -H inside an
    // allocation whose variables this reader does not take still runs).
    const bool hosts_named =
        o.mode == "ps" ? cluster_named : !o.hosts.empty() || !o.hostfile.empty();
    std::optional<SlurmAllocation> slurm;
    if (!hosts_named) slurm = slurm_allocation();
    JobPlan plan =
        plan_job(o, env.tf_config.value_or(""), geteuid() == 0, {}, slurm ? &*slurm : nullptr);
    // One id for the job and all its restarts (the user's DTRAIN_JOB_ID when set): ps tasks put
    // it in every message, and every program writes it into its checkpoints, so a restart
    // resumes this job's checkpoint and never another's.
    const std::string job_id = std::to_string(env.job_id.value_or(new_job_id()));
    set_task_env(plan, "DTRAIN_JOB_ID", job_id);
    // The command asks for a resume itself: its restarts resume whatever checkpoint is there.
    const bool asked_resume =
        dtrain::read_resume_env().resume.value_or(false) ||
        std::find(o.command.begin(), o.command.end(), "--resume") != o.command.end();
    if (o.secure) {
      const JobKeys keys;
      for (auto& t : plan.tasks)
        for (auto& [k, v] : keys.for_task(t.name.rfind("ps:", 0) == 0))
          (JobKeys::is_secret(k) ? t.secrets : t.env)[k] = v;
    }
    const bool elastic = o.min_np > 0;
    std::vector<std::pair<std::string, size_t>> hosts;
    if (elastic) {
      hosts = allreduce_hosts(o, slurm ? &*slurm : nullptr);  // the pool, spare slots too
      size_t slots = 0;
      for (const auto& h : hosts) slots += h.second;
      const size_t cap = elastic_cap(o);
      const size_t total = cap ? std::min(cap, slots) : slots;
      if (total < o.min_np)
        throw dtrain::InputError(
            dtrain::detail::cat("--min-np ", o.min_np, " but the job has ", total, " rank(s)"));
      // The first start runs at most --max-np ranks too (it ran every slot). With -np the plan
      // already has that many.
      if (cap && cap < slots && (!o.np || o.np > cap)) {
        plan = plan_job(with_hosts(o, cap_hosts(hosts, cap)), env.tf_config.value_or(""),
                        geteuid() == 0, {}, nullptr);
        set_task_env(plan, "DTRAIN_JOB_ID", job_id);
      }
    }
    if (o.dry_run) {
      // Secret keys never reach a terminal (or a CI log): shell_line shows them as <secret>.
      for (const Task& t : plan.tasks)
        std::printf("[%s] %s\n", t.name.c_str(), shell_line(t).c_str());
      return 0;
    }
    if (o.rejoin_workers > 0) {
      // Every worker but the chief (chief:0, else worker:0) may rejoin.
      const bool has_chief = std::any_of(plan.tasks.begin(), plan.tasks.end(),
                                         [](const Task& t) { return t.name == "chief:0"; });
      for (Task& t : plan.tasks)
        t.rejoinable = t.name.rfind("worker:", 0) == 0 && (has_chief || t.name != "worker:0");
    }
    install_stop_handlers();
    Supervisor sup(o.output_dir, o.grace_period_s, o.verbose);
    sup.allow_rejoins(o.rejoin_workers);
    std::set<std::string> dropped;  // elastic: hosts that failed stay out
    size_t elastic_restarts = 0;
    for (size_t attempt = 0;; ++attempt) {
      RunResult r = sup.run(plan);
      if (r.exit_code == 0) {
        std::fprintf(stderr, "[dtrainrun] job finished; logs in %s/logs\n", o.output_dir.c_str());
        return 0;
      }
      if (r.interrupted) {
        std::fprintf(stderr, "[dtrainrun] stopped: %s; every task was stopped\n", r.reason.c_str());
        report_leftovers(plan, job_id, o.verbose);
        return r.exit_code;
      }
      // (A reason that names the machine already, mpirun's lost daemon, needs no "on".)
      const std::string where =
          r.failed_host.empty() || r.reason.find(" on " + r.failed_host) != std::string::npos
              ? ""
              : " on " + r.failed_host;
      std::fprintf(stderr, "[dtrainrun] task %s%s %s; the other tasks were stopped\n",
                   r.failed_task.c_str(), where.c_str(), r.reason.c_str());
      if (!r.stall.empty())
        std::fprintf(stderr, "[dtrainrun] the job stalled (%s's watchdog): %s\n",
                     r.stall_task.c_str(), r.stall.c_str());
      else if (!r.stall_warning.empty())
        std::fprintf(stderr, "[dtrainrun] the last stall warning (%s's watchdog): %s\n",
                     r.stall_warning_task.c_str(), r.stall_warning.c_str());
      if (!r.last_lines.empty()) {
        std::fprintf(stderr, "[dtrainrun] last lines of %s:\n", r.failed_task.c_str());
        for (const auto& l : r.last_lines) std::fprintf(stderr, "    %s\n", l.c_str());
      }
      const std::vector<std::string> unreachable = report_leftovers(plan, job_id, o.verbose);
      if (elastic) {
        std::optional<std::vector<std::pair<std::string, size_t>>> discovered;
        if (!o.host_discovery_script.empty()) discovered = discover_hosts(o.host_discovery_script);
        // Never more ranks than the job had, unless --max-np lets it grow (host discovery).
        // A machine that could not be reached afterwards is the one behind the failure (mpirun
        // may name another: its daemons relay through each other), and every such one goes.
        if (!unreachable.empty()) {
          dropped.insert(unreachable.begin() + 1, unreachable.end());
          r.failed_host = unreachable[0];
        }
        hosts = shrink_hosts(hosts, r.failed_host, &dropped, discovered, elastic_cap(o));
        size_t total = 0;
        for (const auto& h : hosts) total += h.second;
        const std::string list = describe_hosts(hosts);
        if (total < o.min_np) {
          std::fprintf(stderr,
                       "[dtrainrun] elastic: %zu rank(s) left (%s), fewer than --min-np %zu; "
                       "giving up\n",
                       total, list.empty() ? "none" : list.c_str(), o.min_np);
          return r.exit_code;
        }
        if (++elastic_restarts > 64) return r.exit_code;  // a job that fails at every start
        std::fprintf(stderr,
                     "[dtrainrun] elastic: going on with %zu rank(s) on %s from the latest "
                     "checkpoint (--min-np %zu)\n",
                     total, list.c_str(), o.min_np);
        plan =
            plan_job(with_hosts(o, hosts), env.tf_config.value_or(""), geteuid() == 0, {}, nullptr);
        set_task_env(plan, "DTRAIN_JOB_ID", job_id);
      } else {
        if (attempt >= o.max_restarts) return r.exit_code;
        std::fprintf(stderr,
                     "[dtrainrun] restarting from the latest checkpoint (restart %zu of %zu)\n",
                     attempt + 1, o.max_restarts);
      }
      // Through the environment (DTRAIN_RESUME), not a flag the command might not know;
      // DTRAIN_RESUME_JOB: resume only a checkpoint this job wrote (when the first attempt failed
      // before writing one, the output folder may hold an earlier job's).
      set_task_env(plan, "DTRAIN_RESUME", "1");
      if (!asked_resume) set_task_env(plan, "DTRAIN_RESUME_JOB", job_id);
    }
  } catch (const dtrain::InputError& e) {
    std::fprintf(stderr, "dtrainrun: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dtrainrun: error: %s\n", e.what());
    return 1;
  }
}
