#include "paramserver/endpoints.h"

#include <arpa/inet.h>
#include <netdb.h>

#include "runtime/error.h"
#include "runtime/netif.h"

namespace dtrain::ps {

std::string tcp_endpoint(const HostPort& hp) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(hp.host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || !res)
    throw InputError(
        detail::cat("cannot resolve host '", hp.host, "' of ", hp.str(), ": ", gai_strerror(rc)));
  char ip[INET_ADDRSTRLEN] = {0};
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, ip, sizeof(ip));
  freeaddrinfo(res);
  return detail::cat("tcp://", ip, ":", hp.port);
}

std::string tcp_bind_endpoint(const HostPort& hp, const std::vector<std::string>& interfaces) {
  const std::string ep = tcp_endpoint(hp);
  if (interfaces.empty()) return ep;
  const std::string ip = interface_address(interfaces[0], "DTRAIN_NETWORK_INTERFACE");
  if (ep != detail::cat("tcp://", ip, ":", hp.port))
    throw InputError(detail::cat("DTRAIN_NETWORK_INTERFACE ", interfaces[0], ": this ps task is ",
                                 hp.str(), " (", ep.substr(6), ") in the cluster spec, not on ",
                                 interfaces[0], " (", ip,
                                 "): name the host by that interface's address"));
  return ep;
}

std::string tcp_connect_endpoint(const HostPort& hp, const std::vector<std::string>& interfaces) {
  const std::string ep = tcp_endpoint(hp);
  if (interfaces.empty()) return ep;
  const std::string ip = interface_address(interfaces[0], "DTRAIN_NETWORK_INTERFACE");
  return detail::cat("tcp://", ip, ":0;", ep.substr(6));  // source port 0: any
}

uint64_t job_id_of(const ClusterSpec& spec) {
  const std::string s = spec.to_json(false).dump();
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h >> 1;  // fits the int64 that JSON tools read
}

}  // namespace dtrain::ps
