#include "runtime/gradient_sync.h"

#include "runtime/model.h"
#include "runtime/optimizer.h"

namespace dtrain {

void LocalSync::finish_step(Model& model, Optimizer& opt) {
  opt.step(model.params(), model.grads());
}

}  // namespace dtrain
