// Bounds for numeric flags, with messages that say what is allowed ("--batch-size: must be at
// least 1, got 0") instead of CLI11's range text (its "positive number" check printed a range
// from 0 to 1.8e308). Header-only; used by every program's flags (mnist_train, custom_model,
// dtrain_bench, dtrainrun).
#pragma once

#include <CLI/CLI.hpp>
#include <cmath>
#include <sstream>
#include <string>

namespace dtrain {

namespace detail {
inline std::string number_text(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
}  // namespace detail

// A number >= lo (lo = 1 for counts).
inline CLI::Validator at_least(double lo) {
  return CLI::Validator(
      [lo](std::string& v) -> std::string {
        double d = 0;
        if (!CLI::detail::lexical_cast(v, d) || !std::isfinite(d))
          return "must be a number, got '" + v + "'";
        if (d < lo) return "must be at least " + detail::number_text(lo) + ", got " + v;
        return {};
      },
      ">=" + detail::number_text(lo));
}

// A number > 0 (rates, timeouts, seconds).
inline CLI::Validator positive() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        double d = 0;
        if (!CLI::detail::lexical_cast(v, d) || !std::isfinite(d))
          return "must be a number, got '" + v + "'";
        if (!(d > 0)) return "must be greater than 0, got " + v;
        return {};
      },
      ">0");
}

}  // namespace dtrain
