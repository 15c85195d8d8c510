// Signal handlers for checkpoint-and-stop (see signals.h).
#include "launch/signals.h"

#include <unistd.h>

#include <atomic>
#include <csignal>

namespace lf::launch {

namespace {

std::atomic<int> g_request{0};
std::atomic<int> g_term_count{0};

void on_signal(int sig) {
  if (sig == SIGUSR1) {
    int expected = 0;
    g_request.compare_exchange_strong(expected, static_cast<int>(StopRequest::kRequeue));
    return;
  }
  g_request.store(static_cast<int>(StopRequest::kTerminate));
  if (g_term_count.fetch_add(1) >= 1) {
    const char msg[] = "latentforge: second termination signal, exiting without a checkpoint\n";
    ssize_t ignored = ::write(2, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(128 + sig);
  }
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

StopRequest local_stop_request() { return static_cast<StopRequest>(g_request.load()); }

void reset_stop_request() {
  g_request.store(0);
  g_term_count.store(0);
}

}  // namespace lf::launch
