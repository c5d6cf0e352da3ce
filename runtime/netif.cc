#include "runtime/netif.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>

#include "runtime/error.h"

namespace dtrain {

std::vector<NetInterface> network_interfaces() {
  std::vector<NetInterface> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_name || !(a->ifa_flags & IFF_UP)) continue;
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const NetInterface& n) { return n.name == a->ifa_name; });
    if (it == out.end()) it = out.insert(out.end(), NetInterface{a->ifa_name, {}});
    if (a->ifa_addr && a->ifa_addr->sa_family == AF_INET) {
      char ip[INET_ADDRSTRLEN] = "";
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, ip, sizeof(ip));
      it->ipv4.push_back(ip);
    }
  }
  freeifaddrs(list);
  return out;
}

std::string describe_interfaces(const std::vector<NetInterface>& all) {
  std::string s;
  for (const auto& n : all) {
    s += (s.empty() ? "" : ", ") + n.name;
    if (!n.ipv4.empty()) s += " (" + n.ipv4[0] + ")";
  }
  return s.empty() ? "none" : s;
}

std::string interface_address(const std::string& name, const std::string& where) {
  const auto all = network_interfaces();
  for (const auto& n : all)
    if (n.name == name) {
      if (n.ipv4.empty())
        throw InputError(
            detail::cat(where, ": interface '", name,
                        "' has no IPv4 address; interfaces here: ", describe_interfaces(all)));
      return n.ipv4[0];
    }
  throw InputError(detail::cat(where, ": no network interface '", name,
                               "' on this machine; interfaces here: ", describe_interfaces(all)));
}

std::string reachable_ipv4() {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  if (getaddrinfo(host, nullptr, &hints, &res) == 0 && res) {
    char ip[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, ip, sizeof(ip));
    freeaddrinfo(res);
    if (std::string(ip).rfind("127.", 0) != 0) return ip;
  }
  for (const auto& n : network_interfaces())
    for (const auto& ip : n.ipv4)
      if (ip.rfind("127.", 0) != 0) return ip;
  return "127.0.0.1";
}

std::vector<std::string> split_interfaces(const std::string& list, const std::string& where) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = list.find(',', start);
    const std::string name = list.substr(start, comma == std::string::npos ? comma : comma - start);
    if (name.empty())
      throw InputError(detail::cat(where, " '", list, "': an empty interface name"));
    out.push_back(name);
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

}  // namespace dtrain
