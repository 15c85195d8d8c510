// SIGUSR1 (Slurm's warning before the time limit) and SIGTERM/SIGINT (cancellation or
// preemption), recorded by async-signal-safe handlers and polled by the training loop at step
// boundaries, where the ranks agree on the step to stop at (see trainer.cpp).
#pragma once

namespace lf::launch {

enum class StopRequest : int { kNone = 0, kRequeue = 1, kTerminate = 2 };

// Installs the handlers (idempotent). A second SIGTERM/SIGINT while stopping exits at once.
void install_stop_handlers();

// What this process has been asked, the most severe so far (terminate beats requeue).
StopRequest local_stop_request();

// For tests: forget what was received.
void reset_stop_request();

}  // namespace lf::launch
