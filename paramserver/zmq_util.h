// Small helpers shared by the server, the client and the ZAP handler.
#pragma once

#include <chrono>
#include <vector>
#include <zmq.hpp>

namespace dtrain::ps {

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Every frame of the next message (call when the socket is readable).
inline std::vector<zmq::message_t> recv_multipart(zmq::socket_t& s) {
  std::vector<zmq::message_t> parts;
  for (;;) {
    zmq::message_t part;
    if (!s.recv(part, zmq::recv_flags::none)) break;
    const bool more = part.more();
    parts.push_back(std::move(part));
    if (!more) break;
  }
  return parts;
}

}  // namespace dtrain::ps
