// --secure: the launcher makes a fresh pair of CURVE key pairs per job (ZeroMQ's own generator;
// the launcher needs nothing else of the parameter-server code) and hands each task only the
// keys its role needs, as DTRAIN_PS_* variables.
#pragma once

#include <map>
#include <string>

namespace dtrain::launcher {

// The variables for a task: ps tasks get the server's secret key, workers the client's; both
// get both public keys. Throws when ZeroMQ lacks CURVE.
class JobKeys {
 public:
  JobKeys();
  std::map<std::string, std::string> for_task(bool ps_task) const;
  // Whether a variable for_task() hands out holds a secret key (never to be printed).
  static bool is_secret(const std::string& variable);

 private:
  std::string server_public_, server_secret_, client_public_, client_secret_;
};

}  // namespace dtrain::launcher
