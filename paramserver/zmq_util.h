// Small helpers shared by the server, the client and the ZAP handler.
//
// ZeroMQ reports a failed send, recv or poll as a zmq::error_t that says only what went wrong
// ("Interrupted system call"), not which task failed doing what with whom, which is what someone
// reading a dead job's log needs. The *_or_throw wrappers below turn it into a PeerError that
// starts with a description the caller passes as pieces ("worker ", rank, ": send push to ",
// name): the pieces are held by reference and formatted only when the call fails, so the hot
// path pays for nothing but the call. What ZeroMQ does not treat as an error (a dontwait send or
// recv that would block returns an empty result) stays a result for the caller to handle.
#pragma once

#include <chrono>
#include <cstdio>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "runtime/error.h"

namespace dtrain::ps {

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Throws the PeerError for a failed ZeroMQ call: the description pieces, then ZeroMQ's reason.
template <typename... Where>
[[noreturn]] void throw_zmq_failure(const zmq::error_t& e, const Where&... where) {
  throw PeerError(detail::cat(where..., ": ", e.what()));
}

// Runs one ZeroMQ call; a failure becomes a PeerError described by `where` (formatted only then).
template <typename Call, typename... Where>
auto zmq_or_throw(Call&& call, const Where&... where) -> decltype(call()) {
  try {
    return call();
  } catch (const zmq::error_t& e) {
    throw_zmq_failure(e, where...);
  }
}

template <typename... Where>
zmq::send_result_t send_or_throw(zmq::socket_t& s, zmq::const_buffer buf, zmq::send_flags flags,
                                 const Where&... where) {
  return zmq_or_throw([&] { return s.send(buf, flags); }, where...);
}

template <typename... Where>
zmq::send_result_t send_or_throw(zmq::socket_t& s, zmq::message_t& msg, zmq::send_flags flags,
                                 const Where&... where) {
  return zmq_or_throw([&] { return s.send(msg, flags); }, where...);
}

template <typename... Where>
zmq::recv_result_t recv_or_throw(zmq::socket_t& s, zmq::message_t& msg, zmq::recv_flags flags,
                                 const Where&... where) {
  return zmq_or_throw([&] { return s.recv(msg, flags); }, where...);
}

template <typename... Where>
int poll_or_throw(zmq::pollitem_t* items, size_t n, std::chrono::milliseconds timeout,
                  const Where&... where) {
  return zmq_or_throw([&] { return zmq::poll(items, n, timeout); }, where...);
}

// Every frame of the next message (call when the socket is readable).
template <typename... Where>
std::vector<zmq::message_t> recv_multipart(zmq::socket_t& s, const Where&... where) {
  std::vector<zmq::message_t> parts;
  for (;;) {
    zmq::message_t part;
    if (!recv_or_throw(s, part, zmq::recv_flags::none, where...)) break;
    const bool more = part.more();
    parts.push_back(std::move(part));
    if (!more) break;
  }
  return parts;
}

// Description pieces that are streamed only when a call fails.
// Names from `names`: those at the indices in `which`, or all of them; comma-separated.
struct NameList {
  const std::vector<std::string>& names;
  const std::vector<size_t>* which = nullptr;
};
inline std::ostream& operator<<(std::ostream& os, const NameList& l) {
  const size_t n = l.which ? l.which->size() : l.names.size();
  for (size_t i = 0; i < n; ++i) os << (i ? ", " : "") << l.names[l.which ? (*l.which)[i] : i];
  return os;
}

// A ROUTER socket's peer: the worker its request claims to come from when that is one of the
// job's (worker < num_workers), and its routing identity in hex, which is all a server knows of
// a peer whose frames did not decode.
struct RouterPeer {
  std::string_view identity;
  uint32_t worker;
  size_t num_workers;
};
inline std::ostream& operator<<(std::ostream& os, const RouterPeer& p) {
  if (p.worker < p.num_workers) os << "worker " << p.worker << " (";
  os << "identity ";
  for (unsigned char c : p.identity) {
    char hex[3];
    std::snprintf(hex, sizeof(hex), "%02x", c);
    os << hex;
  }
  if (p.worker < p.num_workers) os << ")";
  return os;
}

}  // namespace dtrain::ps
