// custom_model: bring your own model. A model that is neither of mnist_train's built-ins (the
// image is max-pooled 2x2 first, then a small MLP reads the 14x14 result), trained alone, as an
// allreduce rank under mpirun, or in a parameter-server job, through the public API only: the
// same flags, outputs and JSON summary as mnist_train, with the model supplied as a factory that
// every process (ps tasks included) calls the same way.
#include "dtrain/dtrain.h"

namespace {

std::unique_ptr<dtrain::Model> pooled_mlp(const dtrain::JobSpec& spec, dtrain::Backend& be) {
  const dtrain::ModelSpec& m = spec.model;  // the data shape: 28 x 28 images, 10 classes
  const size_t pooled = (m.rows / 2) * (m.cols / 2), hidden = 64;
  std::vector<std::unique_ptr<dtrain::Layer>> layers;
  layers.push_back(std::make_unique<dtrain::MaxPool2>(1, m.rows, m.cols));
  layers.push_back(std::make_unique<dtrain::Dense>(pooled, hidden));
  layers.push_back(std::make_unique<dtrain::Relu>(hidden));
  layers.push_back(std::make_unique<dtrain::Dense>(hidden, m.classes));
  return std::make_unique<dtrain::Model>(m.rows * m.cols, m.classes, std::move(layers), be);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "custom_model: train your own model (here: max-pool 2x2, dense 64, dense 10) "
      "alone, under mpirun, or as a ps task"};
  dtrain::JobOptions o;
  o.spec.model.name = "pooled-mlp";
  dtrain::add_train_flags(app, o, /*with_model_flags=*/false);
  if (auto rc = dtrain::parse_train_flags(app, argc, argv)) return *rc;
  return dtrain::run_job(o, argc, argv, pooled_mlp);
}
