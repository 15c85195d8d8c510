// Named crash points for tests of atomicity: when the environment variable LF_CRASH_AT names
// this point (optionally "NAME:K" for its K-th hit, counting from 1), the process dies at once
// with SIGKILL, as a power cut or an OOM kill would. Costs one getenv per call otherwise.
#pragma once

namespace lf {

// Call at a point where a crash must leave durable state consistent. It is a pause point of
// the same name too (LF_PAUSE_AT=ckpt.after_tensors:2 freezes a rank inside its second
// checkpoint write, for a test to kill its whole host at that instant).
void crash_point(const char* name);

// Named pause points for tests of signal handling: when LF_PAUSE_AT names this point (every
// hit; "NAME:K" for its K-th hit only, counting from 1), the process stops itself (SIGSTOP)
// there, so a test can deliver a signal at exactly that moment and then continue it (SIGCONT);
// once continued, it waits until a SIGUSR1/SIGTERM/SIGINT sent meanwhile has reached its handler
// (on whichever thread the kernel chose) before going on. Costs one getenv per call otherwise.
void pause_point(const char* name);

}  // namespace lf
