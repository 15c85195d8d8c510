// Work's deadline wait and Communicator's blocking forms and shared argument checks.
#include "distributed/communicator.h"

#include <cstring>

#include "core/util/strings.h"
#include "distributed/rank_context.h"

namespace lf::dist {

std::string to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
  }
  return "?";
}

Work::Work(std::string what, std::string tag, Seconds default_timeout, PollPolicy poll)
    : what_(std::move(what)),
      tag_(std::move(tag)),
      issued_at_(Clock::now()),
      default_timeout_(default_timeout),
      poll_(poll) {}

std::string Work::describe() const {
  const std::string s = state();
  return s.empty() ? what_ : what_ + " (" + s + ")";
}

double Work::seconds_since_issued() const {
  return std::chrono::duration_cast<Seconds>(Clock::now() - issued_at_).count();
}

void Work::wait(Deadline deadline) {
  if (poll_until([this] { return test(); }, deadline, poll_)) return;
  const double budget =
      deadline.is_never() ? -1.0
                          : std::chrono::duration_cast<Seconds>(deadline.at - issued_at_).count();
  throw CollectiveTimeout(timeout_message(tag_, describe(), seconds_since_issued(), budget));
}

void Work::wait() {
  if (Deadline::after(default_timeout_).is_never()) return wait(Deadline::never());
  wait(Deadline{issued_at_ + std::chrono::duration_cast<Clock::duration>(default_timeout_)});
}

std::string Communicator::tag() const {
  return tag_rank_ >= 0 ? rank_tag(tag_rank_, tag_world_, host()) : rank_tag(rank(), world_size(), host());
}

std::unique_ptr<Communicator> Communicator::split_host() {
  // Host names travel as fixed 256-byte records (longer names are cut: still distinct in
  // practice, and every rank cuts the same way).
  constexpr int64_t kWidth = 256;
  torch::Tensor mine = torch::zeros({kWidth}, torch::kByte);
  const std::string name = host().substr(0, kWidth - 1);
  std::memcpy(mine.data_ptr(), name.data(), name.size());
  const torch::Tensor all = all_gather(mine, "all_gather of the host names (split_host)");
  int color = rank();
  for (int r = 0; r < world_size(); ++r) {
    if (torch::equal(all[r], mine)) {
      color = r;  // the lowest rank on this host names the group
      break;
    }
  }
  return split(color, rank());
}

void Communicator::all_reduce(const torch::Tensor& tensor, ReduceOp op, const std::string& what) {
  all_reduce_async(tensor, op, what)->wait();
}

void Communicator::broadcast(const torch::Tensor& tensor, int root, const std::string& what) {
  broadcast_async(tensor, root, what)->wait();
}

void Communicator::broadcast(const torch::Tensor& tensor, int root, Deadline deadline,
                             const std::string& what) {
  broadcast_async(tensor, root, what)->wait(deadline);
}

torch::Tensor Communicator::all_gather(const torch::Tensor& in, const std::string& what) {
  std::vector<int64_t> shape{world_size()};
  shape.insert(shape.end(), in.sizes().begin(), in.sizes().end());
  torch::Tensor out = torch::empty(shape, in.options());
  all_gather_async(in.contiguous(), out, what)->wait();
  return out;
}

void Communicator::barrier(const std::string& what) { barrier_async(what)->wait(); }

void Communicator::barrier(Deadline deadline, const std::string& what) {
  barrier_async(what)->wait(deadline);
}

void Communicator::check_collective_tensor(const torch::Tensor& tensor, const char* op) const {
  TORCH_CHECK(tensor.defined(), tag(), " ", op, ": the tensor is undefined");
  TORCH_CHECK(tensor.is_contiguous(), tag(), " ", op, ": the tensor of shape ", tensor.sizes(),
              " is not contiguous; pass tensor.contiguous() and copy the result back");
  TORCH_CHECK(!tensor.is_sparse(), tag(), " ", op, ": sparse tensors are not supported");
}

void Communicator::check_all_gather_out(const torch::Tensor& in, const torch::Tensor& out) const {
  check_collective_tensor(in, "all_gather");
  check_collective_tensor(out, "all_gather");
  TORCH_CHECK(out.scalar_type() == in.scalar_type(), tag(), " all_gather: out has dtype ",
              out.scalar_type(), ", in has ", in.scalar_type());
  std::vector<int64_t> expected{world_size()};
  expected.insert(expected.end(), in.sizes().begin(), in.sizes().end());
  TORCH_CHECK(out.sizes() == torch::IntArrayRef(expected), tag(), " all_gather: out has shape ",
              out.sizes(), ", expected ", torch::IntArrayRef(expected), " ([world_size, in...])");
}

void Communicator::check_all_to_all(const torch::Tensor& in, const torch::Tensor& out) const {
  check_collective_tensor(in, "all_to_all");
  check_collective_tensor(out, "all_to_all");
  TORCH_CHECK(in.dim() >= 1 && in.size(0) == world_size(), tag(), " all_to_all: in has shape ",
              in.sizes(), ", expected [world_size = ", world_size(), ", ...] (one block per rank)");
  TORCH_CHECK(out.sizes() == in.sizes() && out.scalar_type() == in.scalar_type(), tag(),
              " all_to_all: out is ", out.scalar_type(), " ", out.sizes(), ", expected in's ",
              in.scalar_type(), " ", in.sizes());
  TORCH_CHECK(out.data_ptr() != in.data_ptr() || in.numel() == 0, tag(),
              " all_to_all: in and out must be different tensors");
}

void Communicator::check_color(int color) const {
  TORCH_CHECK(color >= 0, tag(), " split: color ", color, " must be >= 0");
}

void Communicator::check_root(int root, const char* op) const {
  TORCH_CHECK(root >= 0 && root < world_size(), tag(), " ", op, ": root ", root,
              " is not a rank of a world of size ", world_size());
}

void Communicator::copy_settings_to(Communicator& other) const {
  other.timeout_ = timeout_;
  other.poll_ = poll_;
  other.tag_rank_ = tag_rank_ >= 0 ? tag_rank_ : rank();
  other.tag_world_ = tag_rank_ >= 0 ? tag_world_ : world_size();
}

}  // namespace lf::dist
