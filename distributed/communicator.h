// The Communicator interface: collectives on tensors across ranks (sum/max/min all-reduce,
// broadcast, all-gather, barrier), each non-blocking with a Work handle that waits against a
// deadline. Implementations: MPICommunicator (CPU tensors), NCCLCommunicator (CUDA tensors),
// FakeCommunicator (ranks as threads of one process, with fault injection, for tests).
//
// Protocol for every implementation (as in MPI and c10d): all ranks issue the same
// collectives, with the same dtypes and sizes, in the same order on a given communicator.
// A communicator is not shared between threads that issue collectives concurrently; give each
// such thread its own duplicate() (the Reducer's communication thread does).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>

#include "distributed/deadline.h"

namespace lf::dist {

enum class ReduceOp { kSum, kMax, kMin };
std::string to_string(ReduceOp op);

class Work {
 public:
  Work(std::string what, std::string tag, Seconds default_timeout, PollPolicy poll);
  virtual ~Work() = default;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;

  // Drives progress once and says whether the operation has completed (its output tensor is
  // then final). Never blocks for long. Throws if the operation failed or the job was aborted.
  virtual bool test() = 0;

  // Blocks until completion; throws CollectiveTimeout naming the rank, what() and the time
  // waited when `deadline` passes first. The no-argument form uses the communicator's timeout
  // counted from when the operation was issued.
  void wait(Deadline deadline);
  void wait();

  const std::string& what() const { return what_; }
  const std::string& tag() const { return tag_; }  // the issuing communicator's tag()
  // Where a multi-phase operation stands ("at inter-host all_to_all, phase 2/4"); "" for a
  // single collective. Read by describe() for timeout and error messages.
  virtual std::string state() const { return ""; }
  // what(), with state() in parentheses when there is one.
  std::string describe() const;
  Clock::time_point issued_at() const { return issued_at_; }
  double seconds_since_issued() const;
  Seconds default_timeout() const { return default_timeout_; }

 private:
  std::string what_;
  std::string tag_;
  Clock::time_point issued_at_;
  Seconds default_timeout_;
  PollPolicy poll_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;  // "mpi", "nccl", "fake"
  virtual std::string host() const = 0;
  // "[rank r/N host]" with the rank and size of the job (for a sub-communicator too: messages
  // name the process, not its rank in a group).
  std::string tag() const;

  // Non-blocking collectives. Tensors must be contiguous, on this backend's device, and stay
  // untouched until the Work completes (the Work keeps them alive). `what` names the
  // operation in timeout and error messages ("all_reduce of bucket 3/7, 12.5 MB, step 41").
  // all_reduce: in place. broadcast: in place from `root`. all_gather: `out` has shape
  // [world_size, in.sizes()...] and in's dtype. all_to_all: `in` and `out` have the same
  // shape [world_size, ...] and dtype; in[j] of rank r arrives in out[r] of rank j (MPI's
  // Alltoall with equal blocks); a pure move of bytes, so any dtype. barrier: no data.
  virtual std::shared_ptr<Work> all_reduce_async(const torch::Tensor& tensor, ReduceOp op,
                                                 const std::string& what) = 0;
  virtual std::shared_ptr<Work> broadcast_async(const torch::Tensor& tensor, int root,
                                                const std::string& what) = 0;
  virtual std::shared_ptr<Work> all_gather_async(const torch::Tensor& in, const torch::Tensor& out,
                                                 const std::string& what) = 0;
  virtual std::shared_ptr<Work> all_to_all_async(const torch::Tensor& in, const torch::Tensor& out,
                                                 const std::string& what) = 0;
  virtual std::shared_ptr<Work> barrier_async(const std::string& what) = 0;

  // A new communicator over the same ranks whose collectives never match this one's.
  // Collective and blocking: every rank calls it at the same point.
  virtual std::unique_ptr<Communicator> duplicate() = 0;

  // Sub-communicators (MPI_Comm_split): the ranks that pass the same `color` (>= 0) form one
  // communicator, ranked by (key, rank here). Its collectives never match this one's; its
  // tag() still names the job's rank. Collective over this communicator and blocking.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  // The ranks of this rank's host, ranked as here. The default groups ranks by host();
  // MPI asks for the shared-memory domain (MPI_COMM_TYPE_SHARED). Collective, blocking.
  virtual std::unique_ptr<Communicator> split_host();

  // Ends the whole job with `message` (logged with this rank's tag). MPI: MPI_Abort. The fake:
  // wakes every rank's waits with JobAborted, then throws JobAborted here.
  [[noreturn]] virtual void abort(const std::string& message) = 0;

  // Blocking forms: issue, then wait until the deadline (default: now + timeout()).
  void all_reduce(const torch::Tensor& tensor, ReduceOp op = ReduceOp::kSum,
                  const std::string& what = "all_reduce");
  void broadcast(const torch::Tensor& tensor, int root = 0, const std::string& what = "broadcast");
  torch::Tensor all_gather(const torch::Tensor& in, const std::string& what = "all_gather");
  void barrier(const std::string& what = "barrier");
  // Caller-given deadlines, for waits known to be long yet healthy (rank 0 writing a
  // checkpoint while the others wait at the barrier after it).
  void barrier(Deadline deadline, const std::string& what);
  void broadcast(const torch::Tensor& tensor, int root, Deadline deadline, const std::string& what);

  // The default deadline of blocking forms and Work::wait(), counted from issue (300 s).
  void set_timeout(Seconds timeout) { timeout_ = timeout; }
  Seconds timeout() const { return timeout_; }
  void set_poll_policy(const PollPolicy& poll) { poll_ = poll; }
  const PollPolicy& poll_policy() const { return poll_; }

 protected:
  // TORCH_CHECKs shared by implementations: defined, contiguous, root in range, out's shape.
  void check_collective_tensor(const torch::Tensor& tensor, const char* op) const;
  void check_all_gather_out(const torch::Tensor& in, const torch::Tensor& out) const;
  void check_all_to_all(const torch::Tensor& in, const torch::Tensor& out) const;
  void check_root(int root, const char* op) const;
  void check_color(int color) const;
  // Timeout, poll policy and the job identity of tag() (a split() result keeps its parent's).
  void copy_settings_to(Communicator& other) const;

 private:
  Seconds timeout_{300.0};
  PollPolicy poll_;
  int tag_rank_ = -1;   // the job's rank and size for tag(); -1: this communicator's own
  int tag_world_ = -1;
};

}  // namespace lf::dist
