// Process-wide facts of a (possibly multi-rank) job that launch/ needs before and after the
// communicator exists: logging with the rank, and ending every rank when one fails.
#pragma once
#include <string>

namespace lf::launch {

// glog to stderr with "[rank r/N host]" in every line; ranks > 0 log warnings and errors only.
// Safe to call more than once.
void init_logging(const char* argv0);

// Logs `message` with this rank and ends the job: alone, returns (the caller exits with
// `code`); with other ranks running under MPI, aborts all of them (MPI_Abort) with `code`.
void fail_job(const std::string& message, int code);

}  // namespace lf::launch
