// dtrainrun's planning without processes: flag and cluster-spec validation, the mpirun command
// of allreduce jobs and MPI configurations, the TF_CONFIG of every ps task; help vs
// docs/launcher.md.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "launcher/job_plan.h"
#include "runtime/cluster_spec.h"
#include "runtime/error.h"
#include "runtime/netif.h"
#include "tests/test_readme_flags.h"

namespace dtrain::launcher {
namespace {

LauncherOptions with_command() {
  LauncherOptions o;
  o.command = {"train", "--epochs", "1"};
  return o;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& a : v) s += a + " ";
  return s;
}

void expect_error(const LauncherOptions& o, const std::string& what, const std::string& tf = "") {
  try {
    plan_job(o, tf, false);
    FAIL() << "no error, expected: " << what;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(Launcher, ReadmeDocumentsExactlyTheParsersFlags) {
  CLI::App app;
  LauncherOptions o;
  add_launcher_flags(app, o);
  EXPECT_EQ(testing::doc_flags("docs/launcher.md", "dtrainrun flags"), testing::app_flags(app));
}

TEST(Launcher, AllreducePlansOneMpirun) {
  LauncherOptions o = with_command();
  o.np = 3;
  JobPlan p = plan_job(o, "", true);
  ASSERT_EQ(p.tasks.size(), 1u);
  const std::string cmd = joined(p.tasks[0].argv);
  EXPECT_EQ(cmd.rfind("mpirun -np 3 ", 0), 0u) << cmd;
  EXPECT_NE(cmd.find("--allow-run-as-root"), std::string::npos);
  EXPECT_NE(cmd.find("--bind-to none"), std::string::npos);
  EXPECT_NE(cmd.find("--tag-output"), std::string::npos);
  EXPECT_NE(cmd.find("train --epochs 1"), std::string::npos);
  EXPECT_EQ(plan_job(o, "", false).tasks[0].argv[3], "--bind-to") << "no root flag unless root";
}

// A hostfile's slots decide the rank count as -H's do (mpirun starts that many by default), and
// -np beyond them is the same clear error.
TEST(Launcher, HostfileSlotsGiveTheRankCount) {
  const std::string path = ::testing::TempDir() + "dtrain_hostfile";
  {
    std::ofstream f(path);
    f << "# two nodes\nnode1 slots=4\nnode2 slots=4 max_slots=8  # comment\n\nnode3\n";
  }
  LauncherOptions o = with_command();
  o.hostfile = path;
  const std::string cmd = joined(plan_job(o, "", false).tasks[0].argv);
  EXPECT_EQ(cmd.rfind("mpirun -np 9 ", 0), 0u) << cmd;
  EXPECT_NE(cmd.find("--hostfile " + path), std::string::npos) << cmd;
  o.np = 10;
  expect_error(o, "-np 10 is more than the 9 slot(s) the hostfile gives");
  o.np = 0;
  o.hostfile = path + ".missing";
  expect_error(o, "--hostfile " + path + ".missing: cannot open");
  {
    std::ofstream f(path);
    f << "node1 slots=zero\n";
  }
  o.hostfile = path;
  expect_error(o, "line 1: 'slots=zero': slots must be a positive number");
  {
    std::ofstream f(path);
    f << "node1 slots=99999999999999999999\n";
  }
  expect_error(o, "line 1: 'slots=99999999999999999999': slots must be a positive number");
}

TEST(Launcher, MpiConfigurationIsNodesTimesProcesses) {
  LauncherOptions o = with_command();
  o.node_count = 2;
  o.process_count_per_node = 4;
  o.hosts = {"node1", "node2"};
  const std::string cmd = joined(plan_job(o, "", false).tasks[0].argv);
  EXPECT_NE(cmd.find("-np 8 -H node1:4,node2:4"), std::string::npos) << cmd;
  o.np = 6;
  expect_error(o, "does not match");
  o.np = 0;
  o.hosts = {"node1"};
  expect_error(o, "names 1 host");
  o.hosts = {"node1:3", "node2:4"};
  expect_error(o, "disagrees with --process-count-per-node 4");
  o.hosts = {};
  expect_error(o, "needs the nodes");
  o.process_count_per_node = 0;
  expect_error(o, "needs both");
}

TEST(Launcher, HostSlotsGiveTheRankCount) {
  LauncherOptions o = with_command();
  o.hosts = {"a:2", "b"};
  EXPECT_NE(joined(plan_job(o, "", false).tasks[0].argv).find("-np 3 -H a:2,b:1"),
            std::string::npos);
  o.np = 5;
  expect_error(o, "more than the 3 slot(s)");
  o.np = 0;
  o.hosts = {"a:0"};
  expect_error(o, "slots must be a positive number");
  o.hosts = {"a:2", " b "};  // -H "a:2, b"
  EXPECT_NE(joined(plan_job(o, "", false).tasks[0].argv).find("-np 3 -H a:2,b:1"),
            std::string::npos);
  o.hosts = {"a:99999999999999999999"};  // past std::stoul's range: said, not a bare "stoul"
  expect_error(o, "-H a:99999999999999999999: slots must be a positive number");
}

TEST(Launcher, PsTasksEachGetTheirTfConfig) {
  LauncherOptions o = with_command();
  o.mode = "ps";
  o.num_ps = 2;
  o.num_workers = 3;
  JobPlan p = plan_job(o, "", false);
  ASSERT_EQ(p.tasks.size(), 5u);
  std::set<std::string> addrs;
  for (const auto& t : p.tasks) {
    ClusterSpec s = parse_cluster_spec(t.env.at("TF_CONFIG"), t.name, true);
    EXPECT_EQ(t.name, *s.task_type + ":" + std::to_string(s.task_index));
    EXPECT_EQ(s.job("ps").size(), 2u);
    EXPECT_EQ(s.job("worker").size(), 3u);
    EXPECT_EQ(t.env.at("DTRAIN_JOB_ID"), p.tasks[0].env.at("DTRAIN_JOB_ID"));
    // Settings reach the command through the environment, no flag is appended (#14: any
    // program, a Python script included, can be the command).
    EXPECT_EQ(t.env.at("DTRAIN_START_TIMEOUT"), "60");
    EXPECT_EQ(t.argv, o.command);
    EXPECT_TRUE(t.host.empty()) << "127.0.0.1 tasks run here";
    addrs.insert(s.job(*s.task_type)[s.task_index].str());
  }
  EXPECT_EQ(addrs.size(), 5u) << "every task has its own port";
}

TEST(Launcher, BindToCoreGivesLocalWorkersACoreEachWhenThereAreEnough) {
  LauncherOptions o = with_command();
  o.mode = "ps";
  o.num_ps = 1;
  o.num_workers = 2;
  auto cpus_of = [](const JobPlan& p) {
    std::map<std::string, int> m;
    for (const auto& t : p.tasks) m[t.name] = t.cpu;
    return m;
  };
  o.bind_to = "core";
  const std::map<std::string, int> pinned = {{"ps:0", -1}, {"worker:0", 4}, {"worker:1", 6}};
  EXPECT_EQ(cpus_of(plan_job(o, "", false, {4, 6})), pinned) << "the allowed CPUs, in order";
  const JobPlan p = plan_job(o, "", false, {4, 6});
  for (const auto& t : p.tasks) {
    if (t.name == "worker:1") {
      EXPECT_NE(shell_line(t).find("taskset -c 6 "), std::string::npos);
    }
  }
  o.num_workers = 3;  // more workers than CPUs: nobody is bound
  for (const auto& [name, cpu] : cpus_of(plan_job(o, "", false, {0, 1})))
    EXPECT_EQ(cpu, -1) << name;
  o.num_workers = 2;
  o.bind_to = "none";
  for (const auto& [name, cpu] : cpus_of(plan_job(o, "", false, {0, 1})))
    EXPECT_EQ(cpu, -1) << name;
  // Allreduce: mpirun binds with --bind-to core only.
  LauncherOptions a = with_command();
  a.np = 2;
  EXPECT_NE(joined(plan_job(a, "", false).tasks[0].argv).find("--bind-to none"), std::string::npos);
  a.bind_to = "core";
  EXPECT_NE(joined(plan_job(a, "", false).tasks[0].argv).find("--bind-to core"), std::string::npos);
}

TEST(Launcher, PsClusterFromTfConfigOrRejected) {
  LauncherOptions o = with_command();
  o.mode = "ps";
  JobPlan p =
      plan_job(o, R"({"cluster":{"ps":["127.0.0.1:7000"],"chief":["127.0.0.1:7001"]}})", false);
  ASSERT_EQ(p.tasks.size(), 2u);
  EXPECT_EQ(p.tasks[1].name, "chief:0");
  expect_error(o, "names a task",
               R"({"cluster":{"ps":["a:1"],"worker":["a:2"]},"task":{"type":"ps","index":0}})");
  expect_error(o, "at least one ps", R"({"cluster":{"worker":["a:2"]}})");
  expect_error(o, "used twice", R"({"cluster":{"ps":["a:2"],"worker":["a:2"]}})");
  o.np = 2;
  expect_error(o, "are for --mode allreduce");
}

TEST(Launcher, RemoteTasksGoOverSsh) {
  LauncherOptions o = with_command();
  o.mode = "ps";
  JobPlan p =
      plan_job(o, R"({"cluster":{"ps":["10.0.0.5:7000"],"worker":["127.0.0.1:7001"]}})", false);
  EXPECT_EQ(p.tasks[0].host, "10.0.0.5");
  EXPECT_EQ(shell_line(p.tasks[0]).rfind("ssh 10.0.0.5 ", 0), 0u);
  EXPECT_TRUE(p.tasks[1].host.empty());
}

// A remote task's secrets travel on ssh's standard input, never in the command ssh runs; the
// script it runs reads them into a private key file and names that file to the task.
TEST(Launcher, RemoteSecretsNeverOnTheCommandLine) {
  Task t;
  t.name = "ps:0";
  t.host = "node7";
  t.env["TF_CONFIG"] = R"({"cluster":{}})";
  t.secrets["DTRAIN_PS_SERVER_SECRET_KEY"] = "S3cr3t-k3y-of-40-characters-xxxxxxxxxxxx";
  t.argv = {"/opt/it's here/mnist_train", "--mode", "ps"};
  const std::string cmd = remote_command(t, "/work/job dir", 2);
  EXPECT_EQ(cmd.find("S3cr3t"), std::string::npos) << cmd;
  EXPECT_EQ(shell_line(t).find("S3cr3t"), std::string::npos);
  EXPECT_NE(shell_line(t).find("DTRAIN_PS_SERVER_SECRET_KEY=<secret>"), std::string::npos);
  EXPECT_EQ(remote_stdin(t),
            "DTRAIN_PS_SERVER_SECRET_KEY=S3cr3t-k3y-of-40-characters-xxxxxxxxxxxx\n.\n");
  EXPECT_EQ(cmd.rfind("sh -c ", 0), 0u);
  EXPECT_NE(cmd.find("umask 077"), std::string::npos);
  EXPECT_NE(cmd.find("DTRAIN_PS_KEY_FILE="), std::string::npos);
  // The folder, the program (with a quote and a space) and the environment reach the script.
  EXPECT_NE(cmd.find("job dir"), std::string::npos);
  EXPECT_NE(cmd.find("TF_CONFIG="), std::string::npos);
}

TEST(Launcher, NetworkInterface) {
  LauncherOptions o = with_command();
  o.network_interface = "lo";
  o.np = 2;
  JobPlan p = plan_job(o, "", false);
  const std::string line = shell_line(p.tasks[0]);
  EXPECT_NE(line.find("--mca btl_tcp_if_include lo --mca oob_tcp_if_include lo"), std::string::npos)
      << line;
  EXPECT_EQ(p.tasks[0].env.at("DTRAIN_NETWORK_INTERFACE"), "lo");
  o.np = 0;
  o.mode = "ps";
  p = plan_job(o, "", false);
  for (const Task& t : p.tasks) EXPECT_EQ(t.env.at("DTRAIN_NETWORK_INTERFACE"), "lo") << t.name;
  // A wrong name says which interfaces there are.
  o.network_interface = "lo,nosuchif9";
  expect_error(o,
               "--network-interface: no network interface 'nosuchif9' on this machine; "
               "interfaces here: lo (127.0.0.1)");
  o.network_interface = "lo,";
  expect_error(o, "an empty interface name");
  // Loopback in a job across machines: refused (it hung before any rank spoke).
  LauncherOptions across = with_command();
  across.hosts = {"node-a:1", "node-b:1"};
  across.network_interface = "lo";
  expect_error(across, "--network-interface lo: lo is this machine's loopback interface");
}

TEST(Slurm, ExpandsNodeLists) {
  using V = std::vector<std::string>;
  EXPECT_EQ(expand_hostlist("node[01-04,07],login1", "L"),
            (V{"node01", "node02", "node03", "node04", "node07", "login1"}));
  EXPECT_EQ(expand_hostlist("a1", "L"), V{"a1"});
  EXPECT_EQ(expand_hostlist("gpu[8-10]-ib,cpu[2]", "L"),
            (V{"gpu8-ib", "gpu9-ib", "gpu10-ib", "cpu2"}));
  EXPECT_EQ(expand_hostlist("n[098-101]", "L"), (V{"n098", "n099", "n100", "n101"}));
  for (const char* bad : {"n[1-", "n[3-1]", "n[a-b]", "a,,b", "n[1]x[2]"})
    EXPECT_THROW(expand_hostlist(bad, "SLURM_JOB_NODELIST"), InputError) << bad;
  EXPECT_EQ(expand_tasks_per_node("2(x3),1", 4, "T"), (std::vector<size_t>{2, 2, 2, 1}));
  EXPECT_EQ(expand_tasks_per_node("4", 3, "T"), (std::vector<size_t>{4, 4, 4}));
  EXPECT_THROW(expand_tasks_per_node("2(x2)", 3, "T"), InputError);
  EXPECT_THROW(expand_tasks_per_node("0", 1, "T"), InputError);
  // Past std::stoul's range, or a range that would fill the memory: InputErrors naming it.
  for (const char* bad : {"n[1-99999999999999999999]", "n[1-999999999]"})
    EXPECT_THROW(expand_hostlist(bad, "SLURM_JOB_NODELIST"), InputError) << bad;
  EXPECT_THROW(expand_tasks_per_node("2(x99999999999999999999)", 1, "T"), InputError);
  EXPECT_THROW(expand_tasks_per_node("99999999999999999999", 1, "T"), InputError);
}

TEST(Slurm, AllocationStandsInForHosts) {
  std::map<std::string, std::string> env = {{"SLURM_JOB_NODELIST", "node[01-02]"},
                                            {"SLURM_TASKS_PER_NODE", "2(x2)"}};
  auto get = [&](const char* n) -> const char* {
    auto it = env.find(n);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  auto a = slurm_allocation(get);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->nodes, (std::vector<std::string>{"node01", "node02"}));
  EXPECT_EQ(a->tasks_per_node, (std::vector<size_t>{2, 2}));
  env["SLURM_NTASKS_PER_NODE"] = "1";  // --ntasks-per-node wins
  EXPECT_EQ(slurm_allocation(get)->tasks_per_node, (std::vector<size_t>{1, 1}));
  env.erase("SLURM_NTASKS_PER_NODE");
  // allreduce: mpirun gets the nodes and their slots.
  LauncherOptions o = with_command();
  JobPlan p = plan_job(o, "", false, {}, &*a);
  EXPECT_NE(shell_line(p.tasks[0]).find("mpirun -np 4 -H node01:2,node02:2 "), std::string::npos)
      << shell_line(p.tasks[0]);
  o.node_count = 3;
  o.process_count_per_node = 1;
  EXPECT_THROW(plan_job(o, "", false, {}, &*a), InputError);  // 3 nodes asked, 2 allocated
  o.node_count = 2;
  p = plan_job(o, "", false, {}, &*a);
  EXPECT_NE(shell_line(p.tasks[0]).find("mpirun -np 2 -H node01:1,node02:1 "), std::string::npos);
  // -H still wins over the allocation.
  LauncherOptions h = with_command();
  h.hosts = {"other:1"};
  EXPECT_NE(shell_line(plan_job(h, "", false, {}, &*a).tasks[0]).find("-H other:1 "),
            std::string::npos);
  // ps: the first task slot is ps:0, the other three workers, ports from kSlurmPortBase per node.
  LauncherOptions ps = with_command();
  ps.mode = "ps";
  p = plan_job(ps, "", false, {}, &*a);
  ASSERT_EQ(p.tasks.size(), 4u);
  const ClusterSpec spec = parse_cluster_spec(p.tasks[0].env.at("TF_CONFIG"), "ps:0", true);
  EXPECT_EQ(spec.job("ps")[0].str(), "node01:29400");
  EXPECT_EQ(spec.job("worker")[2].str(), "node02:29401");
  EXPECT_EQ(p.tasks[3].host, "node02");
  EXPECT_FALSE(slurm_allocation([](const char*) -> const char* { return nullptr; }));
}

// Elastic jobs plan again from the hosts that are left.
TEST(Launcher, ElasticHostLists) {
  LauncherOptions o = with_command();
  o.node_count = 2;
  o.process_count_per_node = 2;
  o.hosts = {"n1", "n2"};
  using Hosts = std::vector<std::pair<std::string, size_t>>;
  EXPECT_EQ(allreduce_hosts(o, nullptr), (Hosts{{"n1", 2}, {"n2", 2}}));
  const LauncherOptions left = with_hosts(o, {{"n1", 2}});
  EXPECT_NE(shell_line(plan_job(left, "", false).tasks[0]).find("mpirun -np 2 -H n1:2 "),
            std::string::npos);
  LauncherOptions local = with_command();
  local.np = 3;
  EXPECT_EQ(allreduce_hosts(local, nullptr), (Hosts{{"", 3}}));
  const std::string line = shell_line(plan_job(with_hosts(local, {{"", 2}}), "", false).tasks[0]);
  EXPECT_NE(line.find("mpirun -np 2 "), std::string::npos) << line;
  EXPECT_EQ(line.find(" -H "), std::string::npos) << line;
  EXPECT_EQ(parse_host_lines("# hosts\nn1:2\n\n  n3  \n", "script"), (Hosts{{"n1", 2}, {"n3", 1}}));
  EXPECT_THROW(parse_host_lines("n1:x\n", "script"), InputError);
  // After a failure: the named machine goes for good; none named: one local slot goes.
  std::set<std::string> dropped;
  EXPECT_EQ(shrink_hosts({{"n1", 2}, {"n2", 2}}, "n2", &dropped, std::nullopt, 0),
            (Hosts{{"n1", 2}}));
  EXPECT_EQ(shrink_hosts({{"", 3}}, "", &dropped, std::nullopt, 0), (Hosts{{"", 2}}));
  EXPECT_EQ(shrink_hosts({{"n1", 2}}, "", &dropped, Hosts{{"n1", 2}, {"n2", 4}, {"n3", 4}}, 5),
            (Hosts{{"n1", 2}, {"n3", 3}}));  // n2 stays out, capped at 5 slots
}

// Found on the simulated cluster: an elastic job whose rank on n2 failed dropped this machine
// (mpirun named the rank, not its node: the plan's placement now says where each rank runs);
// -H n2,n2 with --node-count 2 put every rank on n2; a restart ran every slot, not -np ranks.
TEST(Launcher, RankHostsDuplicateHostsAndElasticCaps) {
  LauncherOptions o = with_command();
  o.hosts = {"n1:2", "n2:1"};
  EXPECT_EQ(plan_job(o, "", false).tasks[0].rank_hosts,
            (std::vector<std::string>{"n1", "n1", "n2"}));
  o.np = 2;
  EXPECT_EQ(plan_job(o, "", false).tasks[0].rank_hosts, (std::vector<std::string>{"n1", "n1"}));
  LauncherOptions dup = with_command();
  dup.node_count = 2;
  dup.process_count_per_node = 2;
  dup.hosts = {"n2", "n2"};
  expect_error(dup, "-H names n2 twice: give each machine once, with its slots (n2:N)");
  using Hosts = std::vector<std::pair<std::string, size_t>>;
  LauncherOptions e = with_command();
  e.hosts = {"n1:2", "n2:2"};
  e.np = 2;
  e.min_np = 1;
  // The pool keeps the spare slots (a restart after n1 fails goes on on n2); the ranks that
  // run are capped: -np, --max-np, the smaller of the two.
  EXPECT_EQ(allreduce_hosts(e, nullptr), (Hosts{{"n1", 2}, {"n2", 2}}));
  EXPECT_EQ(elastic_cap(e), 2u);
  EXPECT_EQ(cap_hosts(allreduce_hosts(e, nullptr), 3), (Hosts{{"n1", 2}, {"n2", 1}}));
  std::set<std::string> dropped;
  EXPECT_EQ(shrink_hosts(allreduce_hosts(e, nullptr), "n1", &dropped, std::nullopt, 2),
            (Hosts{{"n2", 2}}));
  e.max_np = 1;
  EXPECT_EQ(elastic_cap(e), 1u);
  e.np = 0;
  e.max_np = 3;
  EXPECT_EQ(elastic_cap(e), 3u);
  // A host named twice (a hostfile, a discovery script) is one host with its slots added, as
  // mpirun places them; the ranks' hosts follow.
  EXPECT_EQ(parse_host_lines("n1:1\nn2:1\nn1:1\n", "script"), (Hosts{{"n1", 2}, {"n2", 1}}));
  const std::string hf = ::testing::TempDir() + "dtrain_hostfile_repeated";
  {
    std::ofstream(hf) << "a slots=1\nb slots=1\na slots=1\n";
    LauncherOptions f = with_command();
    f.hostfile = hf;
    EXPECT_EQ(plan_job(f, "", false).tasks[0].rank_hosts,
              (std::vector<std::string>{"a", "a", "b"}));
    std::remove(hf.c_str());
  }
}

TEST(Launcher, NoCommandIsAnError) {
  LauncherOptions o;
  expect_error(o, "no training command");
}

TEST(Launcher, NpSpellingIsNormalized) {
  const char* argv[] = {"dtrainrun", "-np", "4", "--", "train", "-np", "9"};
  auto args = normalize_args(7, const_cast<char**>(argv));
  EXPECT_EQ(args[0], "--np");
  EXPECT_EQ(args[4], "-np") << "the command's own arguments are left alone";
}

}  // namespace
}  // namespace dtrain::launcher

namespace dtrain::launcher {
namespace {

// The job id reaches every task and every rank (mpirun forwards it once), and a restart's
// settings are added the same way.
TEST(Launcher, JobIdAndRestartSettingsReachEveryTask) {
  LauncherOptions o = with_command();
  o.np = 2;
  JobPlan p = plan_job(o, "", false);
  ASSERT_EQ(p.tasks.size(), 1u);
  set_task_env(p, "DTRAIN_JOB_ID", "123");
  set_task_env(p, "DTRAIN_RESUME_JOB", "123");
  set_task_env(p, "DTRAIN_RESUME_JOB", "123");
  const Task& t = p.tasks[0];
  EXPECT_EQ(t.env.at("DTRAIN_JOB_ID"), "123");
  for (const char* name : {"DTRAIN_JOB_ID", "DTRAIN_RESUME_JOB"}) {
    size_t forwarded = 0;
    for (size_t i = 0; i + 1 < t.argv.size(); ++i)
      forwarded += t.argv[i] == "-x" && t.argv[i + 1] == name;
    EXPECT_EQ(forwarded, 1u) << name;
  }
  EXPECT_TRUE(std::equal(o.command.rbegin(), o.command.rend(), t.argv.rbegin()))
      << "the command stays last";
  o.mode = "ps";
  o.np = 0;
  p = plan_job(o, "", false);
  set_task_env(p, "DTRAIN_JOB_ID", "123");
  for (const auto& task : p.tasks) {
    EXPECT_EQ(task.env.at("DTRAIN_JOB_ID"), "123");
    EXPECT_EQ(task.argv, o.command) << "nothing added to a ps task's command";
  }
  EXPECT_NE(new_job_id(), new_job_id());
}

}  // namespace
}  // namespace dtrain::launcher

namespace dtrain::launcher {
namespace {

// Open MPI's hostfile words: "slots = 4" is slots=4, count= and cpu= are slots=, its other
// settings are taken; a word it does not know is an error (a misspelt slots= counted one slot).
TEST(Launcher, HostfileWordsAreOpenMpis) {
  const std::string path = ::testing::TempDir() + "dtrain_hostfile_words";
  auto write = [&](const std::string& text) { std::ofstream(path) << text; };
  LauncherOptions o = with_command();
  o.hostfile = path;
  write(
      "node1 slots = 3\nnode2 count=2 max-slots=4 username=me\nnode3 cpu =1\tcores_per_socket= "
      "8\n");
  EXPECT_EQ(plan_job(o, "", false).tasks[0].argv[2], "6");
  write("node1 sots=4\n");
  expect_error(o, "line 1: 'sots=4' is not one of Open MPI's hostfile settings");
  write("node1\nnode2 4\n");
  expect_error(o, "line 2: '4' is not one of Open MPI's hostfile settings");
  write("node1 slots=\n");
  expect_error(o, "line 1: 'slots=' is not one of Open MPI's hostfile settings");
  write("slots=4 node1\n");
  expect_error(o, "line 1: 'slots=4': a line starts with the host's name");
  std::filesystem::create_directories(path + ".d");
  o.hostfile = path + ".d";
  expect_error(o, "--hostfile " + path + ".d: is a folder, not a file");
  o.hostfile.clear();
  o.mode = "ps";
  o.cluster_spec = path + ".d";
  expect_error(o, "--cluster-spec " + path + ".d: is a folder, not a file");
}

// An MPI configuration with a hostfile: the hostfile names --node-count hosts with
// --process-count-per-node slots each (mpirun fills one host's slots before the next's, so
// node1 slots=8 would have put all 8 ranks on node1).
TEST(Launcher, HostfileMatchesTheMpiConfiguration) {
  const std::string path = ::testing::TempDir() + "dtrain_hostfile_nodes";
  auto write = [&](const std::string& text) { std::ofstream(path) << text; };
  LauncherOptions o = with_command();
  o.hostfile = path;
  o.node_count = 2;
  o.process_count_per_node = 4;
  write("node1 slots=4\nnode2 slots=4\n");
  EXPECT_EQ(plan_job(o, "", false).tasks[0].argv[2], "8");
  write("node1 slots=2\nnode2 slots=4\nnode1 slots=2\n");  // a host listed twice adds up
  EXPECT_EQ(plan_job(o, "", false).tasks[0].argv[2], "8");
  write("node1 slots=8\nnode2 slots=8\n");
  expect_error(o, "node1 has 8 slot(s) where --process-count-per-node is 4");
  write("node1 slots=4\nnode2 slots=4\nnode3 slots=4\n");
  expect_error(o, "--node-count 2 but --hostfile " + path + " names 3 host(s)");
  write("node1\nnode2\n");
  expect_error(o, "node1 has 1 slot(s) where --process-count-per-node is 4");
}

}  // namespace
}  // namespace dtrain::launcher

namespace dtrain::launcher {
namespace {

// A cluster spec may name this machine by one of its addresses: its tasks start here, not over
// ssh to itself.
TEST(Launcher, OwnAddressInAClusterRunsHere) {
  std::string own;
  for (const auto& i : network_interfaces())
    for (const auto& a : i.ipv4)
      if (a.rfind("127.", 0) != 0) own = a;
  if (own.empty()) GTEST_SKIP() << "this machine has no IPv4 address but loopback";
  LauncherOptions o = with_command();
  o.mode = "ps";
  const std::string tf = R"({"cluster":{"ps":[")" + own + R"(:2222"],"worker":[")" + own +
                         R"(:2223","192.0.2.1:2224"]}})";
  const JobPlan p = plan_job(o, tf, false);
  std::map<std::string, std::string> host;
  for (const auto& t : p.tasks) host[t.name] = t.host;
  EXPECT_EQ(host.at("ps:0"), "") << own;
  EXPECT_EQ(host.at("worker:0"), "") << own;
  EXPECT_EQ(host.at("worker:1"), "192.0.2.1");
}

}  // namespace
}  // namespace dtrain::launcher
