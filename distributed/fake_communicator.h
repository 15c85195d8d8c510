// An in-process world for tests: each rank is a thread holding a FakeCommunicator, and
// collectives meet in shared memory. Ranks may be placed on simulated hosts (host() and
// split_host() follow them), and split() makes sub-communicators. Faults can be injected per
// rank and operation: a rank that throws, one that never arrives (its peers' deadlines fire),
// one that is slow. abort() plays MPI_Abort: every rank's pending and later waits, on every
// communicator of the world, end with JobAborted.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "distributed/communicator.h"

namespace lf::dist {

struct FakeFault {
  enum class Kind {
    kThrow,   // the issuing call throws std::runtime_error on that rank
    kAbsent,  // the rank never contributes: the operation never completes anywhere
    kDelay,   // the issuing call sleeps delay_s first (a slow but healthy rank)
  };
  int rank = 0;                // the rank in the world (also on a sub-communicator)
  std::string what_contains;  // matches operations whose `what` contains this ("" = any)
  int occurrence = 1;         // the n-th matching operation on that rank (from 1)
  Kind kind = Kind::kThrow;
  double delay_s = 0.0;
};

class FakeWorld : public std::enable_shared_from_this<FakeWorld> {
 public:
  static std::shared_ptr<FakeWorld> create(int world_size);
  // Ranks placed on hosts: hosts[r] is rank r's host() ("fake" for every rank without).
  static std::shared_ptr<FakeWorld> create(int world_size, std::vector<std::string> hosts);

  int world_size() const { return world_size_; }
  const std::string& host_of(int rank) const { return hosts_.at(rank); }
  // Rank `rank`'s communicator on the world's first channel. Each rank takes one.
  std::unique_ptr<Communicator> communicator(int rank);
  // Call before the ranks start issuing collectives.
  void inject(const FakeFault& fault);

  // Ends the job: pending and future waits on every rank throw JobAborted carrying the first
  // aborting rank's tag and message. Thread-safe; later calls keep the first message.
  void abort(int rank, const std::string& message);
  bool aborted() const;
  std::string abort_message() const;

  // Runs body(rank's communicator) on one thread per rank and joins them. An exception on a
  // rank is caught and, as main()'s catch-all does with abort_job, aborts the job. Returns
  // each rank's error message ("" for a rank that returned normally). Blocks.
  std::vector<std::string> run(const std::function<void(Communicator&)>& body);

 private:
  explicit FakeWorld(int world_size);
  friend class FakeCommunicator;
  friend class FakeWork;

  struct Slot {
    bool open = false;
    std::string kind;
    std::string what;
    int first_rank = -1;
    torch::ScalarType dtype = torch::kFloat;
    std::vector<int64_t> shape;
    ReduceOp op = ReduceOp::kSum;
    int root = 0;
    std::vector<torch::Tensor> inputs;
    int arrived = 0;
    bool complete = false;
    torch::Tensor result;
    int taken = 0;
  };
  // A communicator: its ranks (world ranks, in its rank order) and the collectives in flight.
  struct Channel {
    std::vector<int> members;
    std::map<int64_t, Slot> slots;
    std::vector<int64_t> next_sequence;  // per member
  };

  // Faults matching (world rank, what); counts the occurrence. Caller holds mutex_.
  const FakeFault* match_fault_locked(int rank, const std::string& what);
  int channel_for_duplicate_locked(int rank, int parent);
  // The channel of `color`'s group in the k-th split of `parent` by world rank `rank`; made
  // by the first member to ask, with `members` (world ranks in the group's rank order).
  int channel_for_split_locked(int rank, int parent, int color, const std::vector<int>& members);
  int add_channel_locked(std::vector<int> members);

  int world_size_;
  std::vector<std::string> hosts_;
  mutable std::mutex mutex_;
  std::vector<Channel> channels_;
  std::map<std::pair<int, int>, int> duplicates_;        // (parent, k-th dup) -> channel
  std::map<std::pair<int, int>, int> duplicate_counts_;  // (rank, parent) -> dups so far
  std::map<std::tuple<int, int, int>, int> splits_;      // (parent, k-th split, color) -> channel
  std::map<std::pair<int, int>, int> split_counts_;      // (rank, parent) -> splits so far
  std::vector<FakeFault> faults_;
  std::vector<std::vector<int>> fault_counts_;           // [fault][rank] matches so far
  bool aborted_ = false;
  std::string abort_message_;
};

class FakeCommunicator final : public Communicator {
 public:
  // World rank `world_rank`'s end of `channel`.
  FakeCommunicator(std::shared_ptr<FakeWorld> world, int world_rank, int channel);

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string backend() const override { return "fake"; }
  std::string host() const override { return world_->host_of(world_rank_); }

  std::shared_ptr<Work> all_reduce_async(const torch::Tensor& tensor, ReduceOp op,
                                         const std::string& what) override;
  std::shared_ptr<Work> broadcast_async(const torch::Tensor& tensor, int root,
                                        const std::string& what) override;
  std::shared_ptr<Work> all_gather_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override;
  std::shared_ptr<Work> all_to_all_async(const torch::Tensor& in, const torch::Tensor& out,
                                         const std::string& what) override;
  std::shared_ptr<Work> barrier_async(const std::string& what) override;
  std::unique_ptr<Communicator> duplicate() override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  [[noreturn]] void abort(const std::string& message) override;

 private:
  std::shared_ptr<Work> issue(const std::string& kind, const torch::Tensor& input,
                              const torch::Tensor& output, ReduceOp op, int root,
                              const std::string& what);

  std::shared_ptr<FakeWorld> world_;
  int world_rank_;
  int channel_;
  int rank_ = 0;  // in the channel's group
  int size_ = 1;
};

}  // namespace lf::dist
