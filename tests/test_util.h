// Helpers every test binary shares: substring checks and the message of an expected exception.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace lf::testing {

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A fresh, empty directory `name` under $LF_TEST_TMP (ctest sets it) or the system's temp dir.
inline std::string fresh_dir(const std::string& name) {
  const char* base = std::getenv("LF_TEST_TMP");
  const std::filesystem::path dir =
      std::filesystem::path(base && *base ? base : std::filesystem::temp_directory_path().string()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// The message of the exception of type E (any std::exception by default) that `f` throws, or
// "(no exception)". An exception of another type propagates (and fails the test).
template <class E = std::exception, class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "(no exception)";
}

// Runs fn, expects an exception of type E whose message contains every part.
template <class E>
void ExpectThrowContains(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in message:\n" << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type; message: " << e.what();
    return;
  }
  ADD_FAILURE() << "no exception thrown; expected one containing '" << parts.front() << "'";
}

}  // namespace lf::testing
