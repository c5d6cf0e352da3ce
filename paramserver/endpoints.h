// From a TF_CONFIG cluster to ZeroMQ endpoints and a job id every task agrees on.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/cluster_spec.h"

namespace dtrain::ps {

// tcp://IP:port; a host name is resolved (IPv4) since ZeroMQ binds to addresses, not names.
std::string tcp_endpoint(const HostPort& hp);
// A hash of the cluster: the same in every task of a job, different between jobs.
uint64_t job_id_of(const ClusterSpec& spec);

}  // namespace dtrain::ps
