// The training programs' flags: the one function that registers them with CLI11, writing
// straight into the typed JobOptions (nothing is copied field by field afterwards), so the help
// text is generated from the parser and cannot drift from it (tests/test_flags.cc checks that the
// docs/training.md documents exactly these flags). mnist_train and custom_model share them.
#pragma once

#include <CLI/CLI.hpp>

#include "dtrain/job.h"

namespace dtrain {

// with_model_flags: --model, --first-layer-neurons and --second-layer-neurons (mnist_train's
// built-in models; a program that brings its own model leaves them out).
void add_train_flags(CLI::App& app, JobOptions& o, bool with_model_flags = true);

// Parses argv into o; returns the exit code when the program should stop now (--help: 0, a bad
// flag: 2, after printing CLI11's message), else nothing.
std::optional<int> parse_train_flags(CLI::App& app, int argc, char** argv);

}  // namespace dtrain
