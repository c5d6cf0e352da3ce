// Errors: exceptions for what a user or a peer can cause, DTRAIN_CHECK for broken assumptions.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace dtrain {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Bad user input: a file, a flag, a configuration.
class InputError : public Error {
 public:
  using Error::Error;
};

// A peer that did not answer in time or went away.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// Bad input that every rank of a job detected together (a failed start-up consistency check):
// each raises the same error, so they can all exit normally instead of aborting the job.
class ConsistencyError : public InputError {
 public:
  using InputError::InputError;
};

class PeerError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void check_failed(const char* file, int line, const std::string& expr);
}  // namespace detail

}  // namespace dtrain

#define DTRAIN_CHECK(cond)                                                  \
  do {                                                                      \
    if (!(cond)) ::dtrain::detail::check_failed(__FILE__, __LINE__, #cond); \
  } while (0)

// Binary checks print both operands so a broken assumption explains itself.
#define DTRAIN_CHECK_OP(a, op, b)                                                            \
  do {                                                                                       \
    const auto& dtrain_a_ = (a);                                                             \
    const auto& dtrain_b_ = (b);                                                             \
    if (!(dtrain_a_ op dtrain_b_))                                                           \
      ::dtrain::detail::check_failed(                                                        \
          __FILE__, __LINE__,                                                                \
          ::dtrain::detail::cat(#a " " #op " " #b " (", dtrain_a_, " vs ", dtrain_b_, ")")); \
  } while (0)
#define DTRAIN_CHECK_EQ(a, b) DTRAIN_CHECK_OP(a, ==, b)
#define DTRAIN_CHECK_LE(a, b) DTRAIN_CHECK_OP(a, <=, b)
#define DTRAIN_CHECK_LT(a, b) DTRAIN_CHECK_OP(a, <, b)
