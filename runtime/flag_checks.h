// Bounds for numeric flags, with messages that say what is allowed ("--batch-size: must be at
// least 1, got 0") instead of CLI11's range text (its "positive number" check printed a range
// from 0 to 1.8e308). Header-only; used by every program's flags (mnist_train, custom_model,
// dtrain_bench, dtrainrun).
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

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

// For a command line CLI11 refused: the first word before "--" that looks like a flag but is
// none of app's, with the nearest flag it has ("unknown flag --num-worker: did you mean
// --num-workers?"); empty when every flag-like word is known. CLI11 itself only says "The
// following argument was not expected: -- --num-worker".
inline std::string did_you_mean(const CLI::App& app, const std::vector<std::string>& args) {
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diag = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        const size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    return row[b.size()];
  };
  std::vector<std::string> known;
  for (const CLI::Option* o : app.get_options()) {
    for (const auto& l : o->get_lnames()) known.push_back("--" + l);
    for (const auto& s : o->get_snames()) known.push_back("-" + s);
  }
  for (const std::string& a : args) {
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-' || (a[1] >= '0' && a[1] <= '9') || a[1] == '.') continue;
    const std::string name = a.substr(0, a.find('='));
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    std::string best;
    size_t best_d = 3;  // at most 2 edits away
    for (const auto& k : known)
      if (const size_t d = distance(name, k); d < best_d) best_d = d, best = k;
    return "unknown flag " + name +
           (best.empty() ? " (see --help)" : ": did you mean " + best + "?");
  }
  return {};
}

}  // namespace dtrain
