// Network interfaces of this machine (--network-interface, DTRAIN_NETWORK_INTERFACE).
#pragma once

#include <string>
#include <vector>

namespace dtrain {

struct NetInterface {
  std::string name;
  std::vector<std::string> ipv4;  // dotted quads, in the kernel's order
};

// Every interface that is up, with its IPv4 addresses (getifaddrs).
std::vector<NetInterface> network_interfaces();

// "eth0 (10.0.0.5), lo (127.0.0.1)": for error messages.
std::string describe_interfaces(const std::vector<NetInterface>& all);

// The first IPv4 address of interface `name`. An InputError that starts with `where` and lists
// the interfaces this machine has when it has no such interface, or one without IPv4.
std::string interface_address(const std::string& name, const std::string& where);

// An IPv4 address of this machine that other machines can reach: its host name's, unless that
// is a loopback address (Debian maps the name to 127.0.1.1), else the first interface's that is
// not loopback; 127.0.0.1 when there is none.
std::string reachable_ipv4();

// "a,b" -> {"a", "b"}; empty names are an InputError naming `where`.
std::vector<std::string> split_interfaces(const std::string& list, const std::string& where);

}  // namespace dtrain
