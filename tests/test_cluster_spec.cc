// TF_CONFIG parsing: good specs and each bad case, with errors as clear as TensorFlow's.
#include <gtest/gtest.h>

#include "paramserver/endpoints.h"
#include "runtime/cluster_spec.h"
#include "runtime/error.h"

namespace dtrain {
namespace {

void expect_error(const std::string& text, const std::string& what, bool require_task = true) {
  try {
    parse_cluster_spec(text, "TF_CONFIG", require_task);
    FAIL() << "no error for " << text;
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(ClusterSpec, ParsesTensorFlowsFormat) {
  auto s = parse_cluster_spec(
      R"({"cluster":{"chief":["h0:2000"],"worker":["h1:2001","h2:2002"],"ps":["h3:2003"]},
          "task":{"type":"worker","index":1}})",
      "TF_CONFIG", true);
  EXPECT_EQ(s.num_workers(), 3u);
  EXPECT_EQ(*s.task_type, "worker");
  EXPECT_EQ(s.task_index, 1u);
  EXPECT_FALSE(s.is_chief());
  EXPECT_EQ(s.worker_rank(), 2u);  // chief, worker 0, worker 1
  EXPECT_EQ(s.chief_type(), "chief");
  EXPECT_EQ(s.job("ps")[0].host, "h3");
  EXPECT_EQ(s.job("ps")[0].port, 2003);
}

TEST(ClusterSpec, WorkerZeroIsChiefWithoutAChiefJob) {
  auto s = parse_cluster_spec(R"({"cluster":{"worker":["a:1","a:2"],"ps":["a:3"]},
                                  "task":{"type":"worker","index":0}})",
                              "TF_CONFIG", true);
  EXPECT_TRUE(s.is_chief());
  EXPECT_EQ(s.worker_rank(), 0u);
  EXPECT_NO_THROW(validate_for_ps(s, "TF_CONFIG"));
}

TEST(ClusterSpec, ClusterWithoutTaskForTheLauncher) {
  auto s = parse_cluster_spec(R"({"cluster":{"worker":["a:1"],"ps":["a:3"]}})", "spec.json", false);
  EXPECT_FALSE(s.task_type.has_value());
  expect_error(R"({"cluster":{"worker":["a:1"],"ps":["a:3"]}})", "no \"task\"");
}

TEST(ClusterSpec, BadCases) {
  expect_error(R"({"cluster":{"worker":["a:1"]},"task":{"type":"master","index":0}})",
               "unknown task type \"master\"");
  expect_error(R"({"cluster":{"worker":["a:1"]},"task":{"type":"ps","index":0}})",
               "task type \"ps\" is not in the cluster");
  expect_error(R"({"cluster":{"worker":["a:1"]},"task":{"type":"worker","index":3}})",
               "task index 3 is out of range");
  expect_error(R"({"cluster":{"chief":["a:1","a:2"]},"task":{"type":"chief","index":0}})",
               "at most one");
  expect_error(R"({"cluster":{"worker":["a1"]},"task":{"type":"worker","index":0}})",
               "is not host:port");
  expect_error(R"({"cluster":{"worker":["a:99999"]},"task":{"type":"worker","index":0}})",
               "not in 1..65535");
  expect_error(R"({"cluster":{"worker":["a:x1"]},"task":{"type":"worker","index":0}})",
               "is not a number");
  expect_error(R"({"cluster":{"worker":["a:1","a:1"]},"task":{"type":"worker","index":0}})",
               "used twice");
  expect_error(R"({"cluster":{"workers":["a:1"]},"task":{"type":"worker","index":0}})",
               "unknown job \"workers\"");
  expect_error("{\"cluster\": {\n  \"worker\": [\"a:1\",]\n}}", "line 2, column");
  expect_error("not json", "malformed JSON at line 1");
  expect_error(R"([1,2])", "must be a JSON object");
  expect_error(R"({"task":{"type":"worker"}})", "no \"cluster\"");
  // A key given twice kept only the last list: half the cluster gone without a word.
  expect_error(R"({"cluster":{"ps":["a:1"],"ps":["a:2"],"worker":["a:3"]}})",
               "the key \"ps\" appears twice in one object");
}

TEST(ClusterSpec, PsModeNeedsPsAndWorkers) {
  auto no_ps = parse_cluster_spec(R"({"cluster":{"worker":["a:1"]}})", "x", false);
  EXPECT_THROW(validate_for_ps(no_ps, "x"), InputError);
  auto no_worker = parse_cluster_spec(R"({"cluster":{"ps":["a:1"]}})", "x", false);
  EXPECT_THROW(validate_for_ps(no_worker, "x"), InputError);
}

}  // namespace
}  // namespace dtrain

// DTRAIN_NETWORK_INTERFACE: a ps task listens on the interface, which must carry its address in
// the cluster spec; a worker connects from the interface's address.
TEST(Endpoints, NetworkInterface) {
  using dtrain::HostPort;
  EXPECT_EQ(dtrain::ps::tcp_bind_endpoint(HostPort{"127.0.0.1", 7000}, {"lo"}),
            "tcp://127.0.0.1:7000");
  EXPECT_EQ(dtrain::ps::tcp_connect_endpoint(HostPort{"127.0.0.1", 7000}, {"lo"}),
            "tcp://127.0.0.1:0;127.0.0.1:7000");
  EXPECT_EQ(dtrain::ps::tcp_connect_endpoint(HostPort{"127.0.0.1", 7000}, {}),
            "tcp://127.0.0.1:7000");
  try {
    dtrain::ps::tcp_bind_endpoint(HostPort{"127.0.0.2", 7000}, {"lo"});
    ADD_FAILURE() << "a ps task not on the interface was accepted";
  } catch (const dtrain::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not on lo (127.0.0.1)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(dtrain::ps::tcp_bind_endpoint(HostPort{"127.0.0.1", 7000}, {"nosuchif9"}),
               dtrain::InputError);
}
