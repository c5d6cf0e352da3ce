#include "launcher/job_keys.h"

#include <zmq.h>

#include "runtime/error.h"

namespace dtrain::launcher {

namespace {
void keypair(std::string* pub, std::string* sec) {
  char p[41], s[41];
  if (zmq_curve_keypair(p, s) != 0)
    throw Error(detail::cat("--secure: zmq_curve_keypair failed: ", zmq_strerror(zmq_errno())));
  *pub = p;
  *sec = s;
}
}  // namespace

JobKeys::JobKeys() {
  if (!zmq_has("curve")) throw Error("--secure: this ZeroMQ library was built without CURVE");
  keypair(&server_public_, &server_secret_);
  keypair(&client_public_, &client_secret_);
}

bool JobKeys::is_secret(const std::string& variable) {
  return variable == "DTRAIN_PS_SERVER_SECRET_KEY" || variable == "DTRAIN_PS_CLIENT_SECRET_KEY";
}

std::map<std::string, std::string> JobKeys::for_task(bool ps_task) const {
  std::map<std::string, std::string> env = {{"DTRAIN_PS_SERVER_PUBLIC_KEY", server_public_},
                                            {"DTRAIN_PS_CLIENT_PUBLIC_KEY", client_public_}};
  if (ps_task)
    env["DTRAIN_PS_SERVER_SECRET_KEY"] = server_secret_;
  else
    env["DTRAIN_PS_CLIENT_SECRET_KEY"] = client_secret_;
  return env;
}

}  // namespace dtrain::launcher
