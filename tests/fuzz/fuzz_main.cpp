// The libFuzzer entry point of one target (LF_FUZZ_TARGET names it at compile time). An input
// whose outcome run_checked() judges wrong aborts, so libFuzzer keeps it as a crash.
#include <cstdio>
#include <cstdlib>

#include "tests/fuzz/fuzz_target.h"

#ifndef LF_FUZZ_TARGET
#error "compile with -DLF_FUZZ_TARGET=\"name\""
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const lf::fuzz::Target& t = lf::fuzz::target(LF_FUZZ_TARGET);
  const std::string problem = lf::fuzz::run_checked(t, data, size);
  if (!problem.empty()) {
    std::fprintf(stderr, "lf-fuzz %s: %s\n", t.name, problem.c_str());
    std::abort();
  }
  return 0;
}
