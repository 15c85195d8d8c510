// A collective made of several collectives and local steps in sequence (a reduce-scatter by
// all-to-all then a local sum, an all-gather, ...), exposed as one Work that advances each
// time it is tested, so the Reducer's communication thread drives it like a single all-reduce.
//
// Order protocol: ranks must issue the collectives of a communicator in the same order, yet
// several such operations are in flight at once and their phases finish in a different
// order on each rank. So each phase runs on a Lane (a communicator of its own) and a lane
// issues strictly in the order the operations were created (the same on every rank: the
// Reducer creates them in bucket order): an operation whose phase is ready waits for its
// turn on that lane. Since an operation may wait for an earlier one, testing any operation of
// a Pipeline advances all of them, earliest first: waiting on the last bucket alone finishes.
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace lf::dist {

// A communicator whose collectives are issued in operation order (see above). Not
// thread-safe: one thread drives all the operations of its lanes.
class Lane {
 public:
  Lane(std::unique_ptr<Communicator> comm, std::string name);
  Communicator& comm() { return *comm_; }
  const std::string& name() const { return name_; }  // "inter-host", "intra-host", "all ranks"

  void enqueue(int64_t operation) { queue_.push_back(operation); }
  bool is_turn_of(int64_t operation) const { return !queue_.empty() && queue_.front() == operation; }
  void issued(int64_t operation);

 private:
  std::unique_ptr<Communicator> comm_;
  std::string name_;
  std::deque<int64_t> queue_;
};

class PhasedWork;

// The operations that share a set of lanes, in creation order. Not thread-safe: one thread
// creates and tests them all.
class Pipeline {
 public:
  int64_t next_sequence() { return next_sequence_++; }
  // Advances every live operation, earliest first (see PhasedWork::test).
  void progress();

 private:
  friend class PhasedWork;
  std::vector<PhasedWork*> live_;  // registered by PhasedWork's constructor, removed by its destructor
  int64_t next_sequence_ = 0;
};

struct Phase {
  std::string name;  // "inter-host reduce-scatter (all_to_all over 2 hosts, bf16)"
  Lane* lane = nullptr;
  // Issues the collective on lane->comm() (with `what` naming the operation and the phase).
  std::function<std::shared_ptr<Work>(Communicator& comm, const std::string& what)> issue;
  // Local work once the collective has completed (sums, conversions); may be empty.
  std::function<void()> after;
};

class PhasedWork final : public Work {
 public:
  // Registers the operation with `pipeline` and on the lanes of `phases` (in their order),
  // then issues what it may. `tag_of` supplies the tag, timeout and poll policy of the Work
  // (the Reducer's communicator). The pipeline and the lanes must outlive every test().
  PhasedWork(std::string what, const Communicator& tag_of, std::shared_ptr<Pipeline> pipeline,
             std::vector<Phase> phases);
  ~PhasedWork() override;

  // Advances every operation of the pipeline (this one's turn may wait on earlier ones): tests
  // the phase in flight; when it completes runs its local step and issues the next phase if it
  // is this operation's turn on that lane. A failure is rethrown naming the operation and the
  // phase (JobAborted as it is).
  bool test() override;
  std::string state() const override;

 private:
  friend class Pipeline;
  void advance();  // this operation only, as far as it can go
  bool step();

  std::shared_ptr<Pipeline> pipeline_;
  int64_t sequence_;
  std::vector<Phase> phases_;
  size_t current_ = 0;          // the phase in flight or waiting for its turn
  std::shared_ptr<Work> work_;  // the collective of phase current_, once issued
  bool waiting_turn_ = false;
  bool done_ = false;
};

}  // namespace lf::dist
