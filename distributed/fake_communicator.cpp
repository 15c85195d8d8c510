// FakeWorld / FakeCommunicator: collectives that meet in shared memory, with fault injection.
#include "distributed/fake_communicator.h"

#include <algorithm>
#include <thread>

#include "core/util/strings.h"
#include "distributed/rank_context.h"

namespace lf::dist {

// The k-th collective a rank issues on a channel meets every other member's k-th in one Slot;
// the last to arrive computes the result, each rank copies it out in test() (all_to_all: the
// result holds every rank's part, [destination, source, ...], and each takes its own).
class FakeWork final : public Work {
 public:
  FakeWork(std::shared_ptr<FakeWorld> world, int channel, int64_t sequence, torch::Tensor output,
           bool absent, const std::string& what, const Communicator& comm)
      : Work(what, comm.tag(), comm.timeout(), comm.poll_policy()),
        world_(std::move(world)),
        channel_(channel),
        sequence_(sequence),
        output_(std::move(output)),
        absent_(absent),
        rank_(comm.rank()) {}

  bool test() override {
    if (done_) return true;
    std::lock_guard<std::mutex> lock(world_->mutex_);
    if (world_->aborted_) throw JobAborted(world_->abort_message_);
    if (absent_) return false;
    auto& slots = world_->channels_[channel_].slots;
    auto it = slots.find(sequence_);
    if (it == slots.end() || !it->second.complete) return false;
    FakeWorld::Slot& slot = it->second;
    if (output_.defined() && slot.result.defined()) {
      torch::NoGradGuard no_grad;
      const torch::Tensor mine = slot.kind == "all_to_all" ? slot.result[rank_] : slot.result;
      output_.copy_(mine.view(output_.sizes()));
    }
    if (++slot.taken == static_cast<int>(world_->channels_[channel_].members.size())) slots.erase(it);
    done_ = true;
    return true;
  }

 private:
  std::shared_ptr<FakeWorld> world_;
  int channel_;
  int64_t sequence_;
  torch::Tensor output_;
  bool absent_;
  int rank_;
  bool done_ = false;
};

std::shared_ptr<FakeWorld> FakeWorld::create(int world_size) { return create(world_size, {}); }

std::shared_ptr<FakeWorld> FakeWorld::create(int world_size, std::vector<std::string> hosts) {
  if (world_size < 1)
    throw std::invalid_argument(lf::str("FakeWorld: world size ", world_size, " must be >= 1"));
  if (!hosts.empty() && static_cast<int>(hosts.size()) != world_size)
    throw std::invalid_argument(lf::str("FakeWorld: ", hosts.size(), " host names for ", world_size, " ranks"));
  if (hosts.empty()) hosts.assign(world_size, "fake");
  auto world = std::shared_ptr<FakeWorld>(new FakeWorld(world_size));
  world->hosts_ = std::move(hosts);
  return world;
}

FakeWorld::FakeWorld(int world_size) : world_size_(world_size) {
  std::vector<int> everyone(world_size);
  for (int r = 0; r < world_size; ++r) everyone[r] = r;
  add_channel_locked(std::move(everyone));
}

int FakeWorld::add_channel_locked(std::vector<int> members) {
  const size_t n = members.size();
  channels_.push_back(Channel{std::move(members), {}, std::vector<int64_t>(n, 0)});
  return static_cast<int>(channels_.size()) - 1;
}

std::unique_ptr<Communicator> FakeWorld::communicator(int rank) {
  if (rank < 0 || rank >= world_size_)
    throw std::invalid_argument(lf::str("FakeWorld: rank ", rank, " is not in [0, ", world_size_, ")"));
  return std::make_unique<FakeCommunicator>(shared_from_this(), rank, 0);
}

void FakeWorld::inject(const FakeFault& fault) {
  std::lock_guard<std::mutex> lock(mutex_);
  faults_.push_back(fault);
  fault_counts_.emplace_back(world_size_, 0);
}

void FakeWorld::abort(int rank, const std::string& message) {
  // Waiters poll (as MPI waits do), so they see the flag at their next test().
  std::lock_guard<std::mutex> lock(mutex_);
  if (aborted_) return;
  aborted_ = true;
  abort_message_ = lf::str("job aborted by ", rank_tag(rank, world_size_, hosts_.at(rank)), ": ", message);
}

bool FakeWorld::aborted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return aborted_;
}

std::string FakeWorld::abort_message() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return abort_message_;
}

std::vector<std::string> FakeWorld::run(const std::function<void(Communicator&)>& body) {
  std::vector<std::string> errors(world_size_);
  std::vector<std::thread> threads;
  for (int r = 0; r < world_size_; ++r) {
    threads.emplace_back([this, r, &body, &errors] {
      std::unique_ptr<Communicator> comm = communicator(r);
      try {
        body(*comm);
      } catch (const std::exception& e) {
        errors[r] = e.what();
        abort(r, e.what());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return errors;
}

const FakeFault* FakeWorld::match_fault_locked(int rank, const std::string& what) {
  for (size_t i = 0; i < faults_.size(); ++i) {
    const FakeFault& f = faults_[i];
    if (f.rank != rank || what.find(f.what_contains) == std::string::npos) continue;
    if (++fault_counts_[i][rank] == f.occurrence) return &f;
  }
  return nullptr;
}

int FakeWorld::channel_for_duplicate_locked(int rank, int parent) {
  const int k = duplicate_counts_[{rank, parent}]++;
  auto it = duplicates_.find({parent, k});
  if (it != duplicates_.end()) return it->second;
  const int id = add_channel_locked(channels_[parent].members);
  duplicates_[{parent, k}] = id;
  return id;
}

int FakeWorld::channel_for_split_locked(int rank, int parent, int color,
                                        const std::vector<int>& members) {
  const int k = split_counts_[{rank, parent}]++;
  auto it = splits_.find({parent, k, color});
  if (it != splits_.end()) return it->second;
  const int id = add_channel_locked(members);
  splits_[{parent, k, color}] = id;
  return id;
}

FakeCommunicator::FakeCommunicator(std::shared_ptr<FakeWorld> world, int world_rank, int channel)
    : world_(std::move(world)), world_rank_(world_rank), channel_(channel) {
  std::lock_guard<std::mutex> lock(world_->mutex_);
  const std::vector<int>& members = world_->channels_.at(channel_).members;
  const auto it = std::find(members.begin(), members.end(), world_rank_);
  if (it == members.end())
    throw std::logic_error(lf::str("FakeCommunicator: rank ", world_rank_, " is not a member of channel ", channel_));
  rank_ = static_cast<int>(it - members.begin());
  size_ = static_cast<int>(members.size());
}

std::shared_ptr<Work> FakeCommunicator::issue(const std::string& kind, const torch::Tensor& input,
                                              const torch::Tensor& output, ReduceOp op, int root,
                                              const std::string& what) {
  FakeFault fault;
  bool faulted = false;
  {
    std::lock_guard<std::mutex> lock(world_->mutex_);
    if (world_->aborted_) throw JobAborted(world_->abort_message_);
    if (const FakeFault* f = world_->match_fault_locked(world_rank_, what)) {
      fault = *f;
      faulted = true;
    }
  }
  if (faulted && fault.kind == FakeFault::Kind::kThrow)
    throw std::runtime_error(lf::str(tag(), " injected fault: ", kind, " '", what, "' failed"));
  if (faulted && fault.kind == FakeFault::Kind::kDelay)
    std::this_thread::sleep_for(Seconds(fault.delay_s));
  const bool absent = faulted && fault.kind == FakeFault::Kind::kAbsent;

  std::unique_lock<std::mutex> lock(world_->mutex_);
  FakeWorld::Channel& channel = world_->channels_[channel_];
  const int64_t sequence = channel.next_sequence[rank_]++;
  if (absent) {
    return std::make_shared<FakeWork>(world_, channel_, sequence, torch::Tensor(), true, what,
                                      *this);
  }
  FakeWorld::Slot& slot = channel.slots[sequence];
  const std::vector<int64_t> shape =
      input.defined() ? input.sizes().vec() : std::vector<int64_t>{};
  const torch::ScalarType dtype = input.defined() ? input.scalar_type() : torch::kByte;
  if (!slot.open) {
    slot.open = true;
    slot.kind = kind;
    slot.what = what;
    slot.first_rank = world_rank_;
    slot.dtype = dtype;
    slot.shape = shape;
    slot.op = op;
    slot.root = root;
    slot.inputs.resize(size_);
  } else if (slot.kind != kind || slot.dtype != dtype || slot.shape != shape || slot.op != op ||
             slot.root != root) {
    // Real MPI would hang or corrupt memory here; the fake names both sides instead.
    throw std::invalid_argument(lf::str(
        tag(), " collective #", sequence, " does not match across ranks: rank ", slot.first_rank,
        " issued ", slot.kind, " '", slot.what, "' (", slot.dtype, " ",
        torch::IntArrayRef(slot.shape), ", op ", to_string(slot.op), ", root ", slot.root,
        ") but rank ", world_rank_, " issued ", kind, " '", what, "' (", dtype, " ",
        torch::IntArrayRef(shape), ", op ", to_string(op), ", root ", root, ")"));
  }
  if (input.defined() && (kind != "broadcast" || rank_ == root))
    slot.inputs[rank_] = input.detach().clone();
  if (++slot.arrived == size_) {
    if (kind == "all_reduce") {
      torch::Tensor sum = slot.inputs[0].clone();
      for (int r = 1; r < size_; ++r) {
        if (op == ReduceOp::kSum) sum.add_(slot.inputs[r]);
        if (op == ReduceOp::kMax) sum = torch::maximum(sum, slot.inputs[r]);
        if (op == ReduceOp::kMin) sum = torch::minimum(sum, slot.inputs[r]);
      }
      slot.result = sum;
    } else if (kind == "all_gather") {
      slot.result = torch::stack(slot.inputs);
    } else if (kind == "all_to_all") {
      slot.result = torch::stack(slot.inputs, 1);  // [destination, source, ...]
    } else if (kind == "broadcast") {
      slot.result = slot.inputs[root];
    }
    slot.complete = true;
    slot.inputs.clear();
  }
  return std::make_shared<FakeWork>(world_, channel_, sequence, output, false, what, *this);
}

std::shared_ptr<Work> FakeCommunicator::all_reduce_async(const torch::Tensor& tensor, ReduceOp op,
                                                         const std::string& what) {
  check_collective_tensor(tensor, "all_reduce");
  TORCH_CHECK(!(tensor.scalar_type() == torch::kBool && op == ReduceOp::kSum), tag(),
              " all_reduce: sum of a bool tensor is not defined; use kMax or kMin");
  return issue("all_reduce", tensor, tensor, op, 0, what);
}

std::shared_ptr<Work> FakeCommunicator::broadcast_async(const torch::Tensor& tensor, int root,
                                                        const std::string& what) {
  check_collective_tensor(tensor, "broadcast");
  check_root(root, "broadcast");
  return issue("broadcast", tensor, tensor, ReduceOp::kSum, root, what);
}

std::shared_ptr<Work> FakeCommunicator::all_gather_async(const torch::Tensor& in,
                                                         const torch::Tensor& out,
                                                         const std::string& what) {
  check_all_gather_out(in, out);
  return issue("all_gather", in, out, ReduceOp::kSum, 0, what);
}

std::shared_ptr<Work> FakeCommunicator::all_to_all_async(const torch::Tensor& in,
                                                         const torch::Tensor& out,
                                                         const std::string& what) {
  check_all_to_all(in, out);
  return issue("all_to_all", in, out, ReduceOp::kSum, 0, what);
}

std::shared_ptr<Work> FakeCommunicator::barrier_async(const std::string& what) {
  return issue("barrier", torch::Tensor(), torch::Tensor(), ReduceOp::kSum, 0, what);
}

std::unique_ptr<Communicator> FakeCommunicator::duplicate() {
  int channel = 0;
  {
    std::lock_guard<std::mutex> lock(world_->mutex_);
    channel = world_->channel_for_duplicate_locked(world_rank_, channel_);
  }
  auto copy = std::make_unique<FakeCommunicator>(world_, world_rank_, channel);
  copy_settings_to(*copy);
  return copy;
}

std::unique_ptr<Communicator> FakeCommunicator::split(int color, int key) {
  check_color(color);
  // Every member learns every (color, key) first, as MPI_Comm_split does, so all members of a
  // group derive the same membership; the first to ask makes the channel.
  const torch::Tensor all =
      all_gather(torch::tensor({static_cast<int64_t>(color), static_cast<int64_t>(key)}, torch::kLong),
                 lf::str("all_gather of (color, key) for split"));
  std::vector<std::tuple<int64_t, int, int>> group;  // (key, rank here, world rank)
  std::vector<int> members_here;
  {
    std::lock_guard<std::mutex> lock(world_->mutex_);
    members_here = world_->channels_.at(channel_).members;
  }
  for (int r = 0; r < size_; ++r)
    if (all[r][0].item<int64_t>() == color) group.emplace_back(all[r][1].item<int64_t>(), r, members_here[r]);
  std::sort(group.begin(), group.end());
  std::vector<int> members;
  for (const auto& g : group) members.push_back(std::get<2>(g));
  int channel = 0;
  {
    std::lock_guard<std::mutex> lock(world_->mutex_);
    channel = world_->channel_for_split_locked(world_rank_, channel_, color, members);
  }
  auto part = std::make_unique<FakeCommunicator>(world_, world_rank_, channel);
  copy_settings_to(*part);
  return part;
}

void FakeCommunicator::abort(const std::string& message) {
  world_->abort(world_rank_, message);
  throw JobAborted(world_->abort_message());
}

}  // namespace lf::dist
