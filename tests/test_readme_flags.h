// The flags the table under `heading` of a page of the docs documents (first column, `--flag` in
// backticks), and the long flags a CLI11 app accepts: tests compare the two so help and docs
// cannot drift.
#pragma once

#include <CLI/CLI.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <string>

namespace dtrain::testing {

inline std::set<std::string> app_flags(const CLI::App& app) {
  std::set<std::string> out;
  for (const CLI::Option* o : app.get_options())
    for (const std::string& n : o->get_lnames())
      if (n != "help") out.insert("--" + n);
  return out;
}

// `page` is relative to the source folder (docs/training.md).
inline std::set<std::string> doc_flags(const std::string& page, const std::string& heading) {
  std::ifstream in(std::string(DTRAIN_SOURCE_DIR) + "/" + page);
  std::string line;
  bool in_section = false;
  std::set<std::string> out;
  const std::regex flag(R"(`(--[a-z0-9-]+)`)");
  while (std::getline(in, line)) {
    if (line.rfind("#", 0) == 0) in_section = line.find(heading) != std::string::npos;
    if (!in_section || line.rfind("|", 0) != 0) continue;
    const std::string first_cell = line.substr(1, line.find('|', 1) - 1);
    for (std::sregex_iterator it(first_cell.begin(), first_cell.end(), flag), end; it != end; ++it)
      out.insert((*it)[1]);
  }
  return out;
}

}  // namespace dtrain::testing
