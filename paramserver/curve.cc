#include "paramserver/curve.h"

#include <fstream>
#include <map>

#include "paramserver/zmq_util.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace dtrain::ps {

CurveKeys generate_curve_keys() {
  if (!zmq_has("curve")) throw Error("this ZeroMQ library was built without CURVE support");
  CurveKeys k;
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) throw Error("zmq_curve_keypair failed");
  k.server_public = pub;
  k.server_secret = sec;
  if (zmq_curve_keypair(pub, sec) != 0) throw Error("zmq_curve_keypair failed");
  k.client_public = pub;
  k.client_secret = sec;
  return k;
}

CurveKeys load_curve_keys(bool for_server, const EnvConfig& env) {
  if (!zmq_has("curve")) throw InputError("--secure: this ZeroMQ library lacks CURVE support");
  std::map<std::string, std::string> vals;
  if (env.ps_key_file) {
    std::ifstream in(*env.ps_key_file);
    if (!in) throw InputError("DTRAIN_PS_KEY_FILE: cannot open " + *env.ps_key_file);
    std::string line;
    while (std::getline(in, line)) {
      const size_t eq = line.find('=');
      if (eq != std::string::npos) vals[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  for (const auto& [k, v] : env.ps_keys) vals[k] = v;  // variables win over the file
  auto need = [&](const char* n) {
    auto it = vals.find(n);
    if (it == vals.end())
      throw InputError(detail::cat("--secure needs ", n, " (or DTRAIN_PS_KEY_FILE)"));
    if (it->second.size() != 40)
      throw InputError(detail::cat(n, " must be a 40-character Z85 CURVE key, got ",
                                   it->second.size(), " characters"));
    // ZeroMQ refuses a key that is not Z85 with a bare "Invalid argument" naming nothing.
    uint8_t raw[32];
    if (!zmq_z85_decode(raw, it->second.c_str()))
      throw InputError(detail::cat(n, " is not a Z85 CURVE key (40 characters of Z85's alphabet: ",
                                   "0-9 a-z A-Z .-:+=^!/*?&<>()[]{}@%$#)"));
    return it->second;
  };
  CurveKeys k;
  k.server_public = need("DTRAIN_PS_SERVER_PUBLIC_KEY");
  k.client_public = need("DTRAIN_PS_CLIENT_PUBLIC_KEY");
  if (for_server)
    k.server_secret = need("DTRAIN_PS_SERVER_SECRET_KEY");
  else
    k.client_secret = need("DTRAIN_PS_CLIENT_SECRET_KEY");
  return k;
}

void apply_server_curve(zmq::socket_t& s, const CurveKeys& k) {
  s.set(zmq::sockopt::curve_server, 1);
  s.set(zmq::sockopt::curve_secretkey, k.server_secret);
  s.set(zmq::sockopt::zap_domain, "dtrain");
}

void apply_client_curve(zmq::socket_t& s, const CurveKeys& k) {
  s.set(zmq::sockopt::curve_serverkey, k.server_public);
  s.set(zmq::sockopt::curve_publickey, k.client_public);
  s.set(zmq::sockopt::curve_secretkey, k.client_secret);
}

ZapHandler::ZapHandler(zmq::context_t& ctx, std::string allowed, std::string name)
    : sock_(ctx, zmq::socket_type::rep), allowed_(std::move(allowed)), name_(std::move(name)) {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.bind("inproc://zeromq.zap.01");
  thread_ = std::thread([this] { loop(); });
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  thread_.join();
}

void ZapHandler::loop() {
  while (!stop_) {
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    poll_or_throw(&item, 1, std::chrono::milliseconds(100), name_, ": ZAP handler: poll");
    if (!(item.revents & ZMQ_POLLIN)) continue;
    // ZAP request: version, request id, domain, address, identity, mechanism, credentials...
    std::vector<zmq::message_t> req = recv_multipart(sock_, name_, ": ZAP handler: recv");
    std::string status = "400", text = "refused";
    if (req.size() >= 7 && req[5].to_string() == "CURVE" && req[6].size() == 32) {
      char z85[41];
      zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
      if (allowed_ == z85) {
        status = "200";
        text = "OK";
      } else {
        ++refused_;
        log_info(name_, ": refused a client from ", req[3].to_string(),
                 " without the job's key (--secure)");
      }
    } else {
      ++refused_;
      log_info(name_, ": refused an unauthenticated client (--secure)");
    }
    const std::string version = req.empty() ? "1.0" : req[0].to_string();
    const std::string id = req.size() > 1 ? req[1].to_string() : "";
    sock_.send(zmq::buffer(version), zmq::send_flags::sndmore);
    sock_.send(zmq::buffer(id), zmq::send_flags::sndmore);
    sock_.send(zmq::buffer(status), zmq::send_flags::sndmore);
    sock_.send(zmq::buffer(text), zmq::send_flags::sndmore);
    sock_.send(zmq::str_buffer(""), zmq::send_flags::sndmore);
    sock_.send(zmq::str_buffer(""), zmq::send_flags::none);
  }
}

}  // namespace dtrain::ps
