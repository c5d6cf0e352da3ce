#include "runtime/job_spec.h"

#include "runtime/model.h"

namespace dtrain {

nlohmann::json job_agreement(const JobSpec& spec, const Model& model) {
  return {{"model", model.spec()},
          {"param_count", model.param_count()},
          {"batch_size", spec.batch_size},
          {"optimizer", optimizer_spec(spec.optimizer)},
          {"epochs", spec.epochs}};
}

}  // namespace dtrain
