#include "launcher/launcher_options.h"

#include "runtime/flag_checks.h"

namespace dtrain::launcher {

void add_launcher_flags(CLI::App& app, LauncherOptions& o) {
  app.add_option("-n,--np", o.np,
                 "allreduce: number of ranks, also spelled -np (default: the slots of -H, "
                 "node-count x process-count-per-node, or 1)")
      ->check(at_least(0));
  app.add_option("-H,--hosts", o.hosts, "allreduce: hosts as host[:slots], comma-separated")
      ->delimiter(',')
      ->allow_extra_args(false);
  app.add_option("--hostfile", o.hostfile, "allreduce: an Open MPI hostfile")
      ->check(CLI::ExistingFile);
  app.add_option("--node-count", o.node_count, "MPI configuration: nodes")->check(at_least(0));
  app.add_option("--process-count-per-node", o.process_count_per_node,
                 "MPI configuration: processes per node")
      ->check(at_least(0));
  app.add_option("--mode", o.mode, "allreduce (through mpirun) or ps (TF_CONFIG tasks)")
      ->capture_default_str()
      ->check(CLI::IsMember({"allreduce", "ps"}));
  app.add_option("--num-ps", o.num_ps, "ps: ps tasks to start on 127.0.0.1")
      ->capture_default_str()
      ->check(at_least(1));
  app.add_option("--num-workers", o.num_workers, "ps: worker tasks to start on 127.0.0.1")
      ->capture_default_str()
      ->check(at_least(1));
  app.add_option("--cluster-spec", o.cluster_spec,
                 "ps: a TF_CONFIG-style JSON file with the cluster (default: TF_CONFIG's cluster, "
                 "else --num-ps/--num-workers on 127.0.0.1)");
  app.add_option("--log-dir,--output-dir", o.output_dir,
                 "the tasks' logs/<task>/{stdout,stderr} go under it (--output-dir: the old name)")
      ->capture_default_str();
  app.add_option("--start-timeout", o.start_timeout_s,
                 "ps: seconds the tasks wait for each other at start-up (passed to them)")
      ->capture_default_str()
      ->check(positive());
  app.add_option("--max-restarts", o.max_restarts,
                 "restart a failed job up to N times, from its latest checkpoint (DTRAIN_RESUME=1)")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_option("--min-np", o.min_np,
                 "elastic allreduce job: after a failure drop the failed host (or slot) and "
                 "resume from the latest checkpoint while at least this many ranks remain")
      ->check(at_least(0));
  app.add_option("--max-np", o.max_np,
                 "elastic: at most this many ranks when hosts are added by "
                 "--host-discovery-script (0: no cap)")
      ->check(at_least(0));
  app.add_option("--host-discovery-script", o.host_discovery_script,
                 "elastic: a program printing the available hosts as host[:slots] lines, run "
                 "before every restart (Horovod's name)")
      ->check(CLI::ExistingFile);
  app.add_option("--rejoin-workers", o.rejoin_workers,
                 "ps job (--ps-async): a worker other than the chief that fails is started again "
                 "and rejoins while the others train on, up to N times in all")
      ->capture_default_str()
      ->check(at_least(0));
  app.add_option("--grace-period", o.grace_period_s,
                 "seconds between SIGTERM and SIGKILL when stopping tasks")
      ->capture_default_str()
      ->check(positive());
  app.add_option("--bind-to", o.bind_to,
                 "none, or core: allreduce ranks bound by mpirun, each local ps-mode worker on a "
                 "core of its own (when there are enough cores)")
      ->capture_default_str()
      ->check(CLI::IsMember({"core", "none"}));
  app.add_option("--network-interface", o.network_interface,
                 "IF[,IF]: the network interface(s) the job's traffic uses (MPI's btl/oob TCP "
                 "interfaces; ps tasks listen and connect on the first), passed to the tasks as "
                 "DTRAIN_NETWORK_INTERFACE");
  app.add_flag("--dry-run", o.dry_run, "print every task's command and environment, run nothing");
  app.add_flag("--verbose", o.verbose, "log what the launcher does");
  app.add_flag("--secure", o.secure,
               "ps: generate the job's CURVE keys; tasks get DTRAIN_SECURE=1");
  app.add_option("command", o.command, "the training command, after --")->required();
}

std::vector<std::string> normalize_args(int argc, char** argv) {
  std::vector<std::string> out;
  bool command = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") command = true;
    if (!command && a == "-np") a = "--np";
    if (!command && a.rfind("-np=", 0) == 0) a = "--np=" + a.substr(4);
    out.push_back(a);
  }
  return out;
}

}  // namespace dtrain::launcher
