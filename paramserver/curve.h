// --secure: ZeroMQ CURVE. Traffic is encrypted, servers prove who they are with the job's server
// key, and a ZAP handler admits only clients holding the job's client key; anyone else is refused
// during the handshake and logged. Keys are Z85 text (40 characters), from the DTRAIN_PS_*
// variables or a key file (runtime/env.h reads both).
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "runtime/env.h"

namespace dtrain::ps {

struct CurveKeys {
  std::string server_public, server_secret, client_public, client_secret;
};

// A fresh pair of key pairs (the launcher makes one per job).
CurveKeys generate_curve_keys();
// Reads DTRAIN_PS_SERVER_PUBLIC_KEY, ..._SERVER_SECRET_KEY, ..._CLIENT_PUBLIC_KEY,
// ..._CLIENT_SECRET_KEY, or the file DTRAIN_PS_KEY_FILE with lines NAME=VALUE of the same names.
// Throws InputError naming what is missing or malformed. A server needs both server keys and the
// client public key; a client the server public key and both client keys.
CurveKeys load_curve_keys(bool for_server, const EnvConfig& env);

void apply_server_curve(zmq::socket_t& s, const CurveKeys& k);
void apply_client_curve(zmq::socket_t& s, const CurveKeys& k);

// Answers ZAP requests on the context's inproc://zeromq.zap.01: CURVE clients whose key is the
// job's client key get 200, anyone else 400 and a log line. Lives as long as the object.
class ZapHandler {
 public:
  ZapHandler(zmq::context_t& ctx, std::string allowed_client_key_z85, std::string name);
  ~ZapHandler();
  size_t refused() const { return refused_; }

 private:
  void loop();
  zmq::socket_t sock_;
  std::string allowed_, name_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> refused_{0};
  std::thread thread_;
};

}  // namespace dtrain::ps
