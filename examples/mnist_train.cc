// mnist_train: the seeds' MNIST training script as a program. The same binary runs alone, as an
// allreduce rank under mpirun, or as a parameter-server task; the library (dtrain::Job) decides
// which from the flags and the environment.
#include "dtrain/dtrain.h"

int main(int argc, char** argv) {
  CLI::App app{
      "mnist_train: train an MLP or a CNN on MNIST (alone, under mpirun, or as a ps task), on the "
      "CPU or a GPU"};
  dtrain::JobOptions o;
  dtrain::add_train_flags(app, o);
  if (auto rc = dtrain::parse_train_flags(app, argc, argv)) return *rc;
  return dtrain::run_job(o, argc, argv, dtrain::build_builtin_model);
}
