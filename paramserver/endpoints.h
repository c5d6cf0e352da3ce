// From a TF_CONFIG cluster to ZeroMQ endpoints and a job id every task agrees on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/cluster_spec.h"

namespace dtrain::ps {

// tcp://IP:port; a host name is resolved (IPv4) since ZeroMQ binds to addresses, not names.
std::string tcp_endpoint(const HostPort& hp);
// With DTRAIN_NETWORK_INTERFACE: a ps task listens on the interface's address, which must be the
// one its cluster-spec host resolves to (else workers could not reach it: an InputError naming
// both); a worker connects from the interface's address ("tcp://SRC:0;IP:port").
std::string tcp_bind_endpoint(const HostPort& hp, const std::vector<std::string>& interfaces);
std::string tcp_connect_endpoint(const HostPort& hp, const std::vector<std::string>& interfaces);
// A hash of the cluster: the same in every task of a job, different between jobs.
uint64_t job_id_of(const ClusterSpec& spec);

}  // namespace dtrain::ps
