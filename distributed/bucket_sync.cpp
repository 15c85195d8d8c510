// BucketSync: flat and hierarchical bucket all-reduce, f32 or bf16 on the wire (see
// bucket_sync.h). One scheme covers both: L ranks per group ("local" level) and H groups
// (host level); flat is L = W, H = 1, hierarchical is L = ranks per host, H = hosts.
#include "distributed/bucket_sync.h"

#include <stdexcept>

#include "core/util/strings.h"

namespace lf::dist {
namespace {

// out = blocks[0] + blocks[1] + ... + blocks[n-1], left to right, in out's dtype (each term is
// widened exactly: bf16 -> f32, f32 -> f64): a fixed order, so the same inputs give the same
// bits on every run.
void ordered_sum(const torch::Tensor& blocks, const torch::Tensor& out) {
  torch::NoGradGuard no_grad;
  out.copy_(blocks[0]);
  for (int64_t i = 1; i < blocks.size(0); ++i) out.add_(blocks[i]);
}

}  // namespace

WireBytes& WireBytes::operator+=(const WireBytes& o) {
  within_host += o.within_host;
  between_hosts += o.between_hosts;
  unplaced += o.unplaced;
  return *this;
}

// Per bucket: the buffer and the scratch of each level. Tensors of a skipped level alias the
// level's input, so the next level reads it directly.
struct BucketSync::Scratch {
  std::string label;
  torch::Tensor buffer;  // [P]
  int64_t numel = 0;
  int64_t block = 0;     // C = P / W: one rank's shard
  int64_t offset = 0;    // of this rank's shard
  torch::Tensor local_send;      // [L, M] bf16, when the local level carries bf16 (also reused
                                 // for the all-gather's result)
  torch::Tensor local_recv;      // [L, M] in the local level's wire dtype (with `release_recv`:
                                 // allocated for each reduce-scatter, freed once summed)
  torch::TensorOptions recv_options;
  bool release_recv = false;
  torch::Tensor partial;         // [M]: this group's sum of block l (M = H C)
  torch::Tensor local_wire;      // [M] bf16: partial's rounded copy for the local all-gather
  torch::Tensor host_send;       // [H, C] bf16 when the host level carries bf16 (also reused)
  torch::Tensor host_recv;       // [H, C] in the host level's wire dtype
  torch::Tensor shard;           // [C]: the sum over all ranks of this rank's shard
  torch::Tensor shard_wire;      // [C] bf16
  torch::Tensor host_part;       // [M]: every host's shard of block l
};

BucketSync::BucketSync(Communicator& comm, AllReduceAlgorithm requested, GradWire wire, bool pieces)
    : comm_(comm), wire_(wire), pieces_requested_(pieces) {
  const int world = comm.world_size();
  topology_.ranks_per_host = {world};
  topology_.host_of_rank.assign(world, 0);
  topology_.local_rank = comm.rank();
  topology_.local_size = world;
  if (requested != AllReduceAlgorithm::kFlat) {
    groups_ = std::make_unique<HostGroups>(comm);
    topology_ = groups_->topology();
  }
  algorithm_ = resolve_algorithm(requested, topology_);
  if (algorithm_ == AllReduceAlgorithm::kHierarchical) {
    hosts_ = topology_.hosts;
    local_size_ = topology_.local_size;
  } else {
    hosts_ = 1;
    local_size_ = world;
  }
  if (!sharded() && !pieces) return;
  const bool flat = algorithm_ == AllReduceAlgorithm::kFlat;
  auto local_comm = [&]() { return flat ? comm.duplicate() : groups_->intra().duplicate(); };
  const std::string local_name = flat ? "all ranks" : "intra-host";
  if (local_size_ > 1) {
    rs_local_ = std::make_unique<Lane>(local_comm(), local_name);
    ag_local_ = std::make_unique<Lane>(local_comm(), local_name);
  }
  if (hosts_ > 1) {
    rs_hosts_ = std::make_unique<Lane>(groups_->inter().duplicate(), "inter-host");
    ag_hosts_ = std::make_unique<Lane>(groups_->inter().duplicate(), "inter-host");
  }
}

BucketSync::~BucketSync() = default;

bool BucketSync::sharded() const {
  return algorithm_ != AllReduceAlgorithm::kFlat || wire_ != GradWire::kF32;
}

std::string BucketSync::name() const {
  return lf::str(to_string(algorithm_), " all_reduce", wire_ == GradWire::kBF16 ? " (bf16 wire)" : "");
}

std::string BucketSync::describe(AllReduceAlgorithm requested) const {
  std::string how;
  if (algorithm_ == AllReduceAlgorithm::kHierarchical) {
    how = lf::str("hierarchical all-reduce over ", topology_.describe(), " (reduce-scatter within each host, ",
                  "then between hosts; all-gather back), ",
                  wire_ == GradWire::kBF16 ? "bf16 between hosts with f32 sums" : "full precision");
  } else {
    how = lf::str("flat all-reduce over ", comm_.world_size(), " ranks",
                  groups_ ? lf::str(" on ", topology_.describe()) : std::string(), ", ",
                  wire_ == GradWire::kBF16 ? "bf16 on the wire with f32 sums" : "full precision");
  }
  return lf::str("gradient sync: ", how, " (dist.allreduce = ", to_string(requested),
                 ", dist.grad_wire = ", to_string(wire_), ")");
}

int64_t BucketSync::padded_numel(int64_t numel) const {
  if (!rs_local_ && !rs_hosts_) return numel;
  const int64_t w = comm_.world_size();
  return (numel + w - 1) / w * w;
}

void BucketSync::add_bucket(const torch::Tensor& buffer, int64_t numel, const std::string& label) {
  auto s = std::make_unique<Scratch>();
  s->label = label;
  s->buffer = buffer;
  s->numel = numel;
  TORCH_CHECK(buffer.dim() == 1 && buffer.is_contiguous() && buffer.numel() == padded_numel(numel),
              comm_.tag(), " ", name(), ": ", label, " must be a contiguous 1-D buffer of ", padded_numel(numel),
              " elements, got ", buffer.sizes());
  const bool pieces = rs_local_ || rs_hosts_;
  if (pieces && buffer.scalar_type() != torch::kFloat && buffer.scalar_type() != torch::kDouble)
    throw std::invalid_argument(lf::str(comm_.tag(), " ", name(), ": ", label, " holds ", buffer.scalar_type(),
                                        " gradients; this algorithm sums float or double gradients only "
                                        "(use dist.allreduce = flat with dist.grad_wire = f32)"));
  const int64_t world = comm_.world_size();
  const int64_t L = local_size_, H = hosts_;
  s->block = buffer.numel() / world;
  const int64_t C = s->block, M = H * C;
  const int local_rank = algorithm_ == AllReduceAlgorithm::kHierarchical ? topology_.local_rank : comm_.rank();
  const int host = algorithm_ == AllReduceAlgorithm::kHierarchical ? topology_.host : 0;
  s->offset = (static_cast<int64_t>(local_rank) * H + host) * C;
  const bool flat = algorithm_ == AllReduceAlgorithm::kFlat;
  const bool bf16 = wire_ == GradWire::kBF16;
  const auto acc = buffer.options();
  const auto half = buffer.options().dtype(torch::kBFloat16);
  if (pieces) {
    if (L > 1) {
      const bool local_bf16 = flat && bf16;
      if (local_bf16) {
        s->local_send = torch::empty({L, M}, half);
        s->local_wire = torch::empty({M}, half);
      }
      s->recv_options = local_bf16 ? half : acc;
      // For the sharded optimizer (pieces), the receive buffer — as large as the bucket — lives only
      // while a reduce-scatter is in flight: otherwise every rank would keep a second copy of all
      // gradients, more than sharding the optimizer state saves at W = 2.
      s->release_recv = pieces_requested_;
      if (!s->release_recv) s->local_recv = torch::empty({L, M}, s->recv_options);
      s->partial = torch::empty({M}, acc);
    } else {
      s->partial = buffer;
    }
    if (H > 1) {
      if (bf16) {
        s->host_send = torch::empty({H, C}, half);
        s->shard_wire = torch::empty({C}, half);
      }
      s->host_recv = torch::empty({H, C}, bf16 ? half : acc);
      s->shard = torch::empty({C}, acc);
      s->host_part = L > 1 ? torch::empty({M}, acc) : buffer;
    } else {
      s->shard = s->partial;
      s->host_part = s->shard;
    }
  } else if (world == 1) {
    s->shard = buffer;  // one rank: the bucket is its own sum and shard
  }
  buckets_.push_back(std::move(s));
}

void BucketSync::add_reduce_scatter(std::vector<Phase>& phases, Scratch& s) {
  const int64_t L = local_size_, H = hosts_, C = s.block, M = H * C;
  const bool flat = algorithm_ == AllReduceAlgorithm::kFlat;
  const std::string wire_note = wire_ == GradWire::kBF16 ? ", bf16" : "";
  if (L > 1) {
    Scratch* p = &s;
    const bool bf16 = s.local_send.defined();
    phases.push_back(Phase{
        lf::str(flat ? "" : "intra-host ", "reduce-scatter (all_to_all over ", L, " ranks", bf16 ? ", bf16" : "", ")"),
        rs_local_.get(),
        [p, L, M, bf16](Communicator& c, const std::string& what) {
          const torch::Tensor src = p->buffer.view({L, M});
          if (!p->local_recv.defined()) p->local_recv = torch::empty({L, M}, p->recv_options);
          if (!bf16) return c.all_to_all_async(src, p->local_recv, what);
          p->local_send.copy_(src);  // round to nearest even
          return c.all_to_all_async(p->local_send, p->local_recv, what);
        },
        [p] {
          ordered_sum(p->local_recv, p->partial);
          if (p->release_recv) p->local_recv = torch::Tensor();
        }});
  }
  if (H > 1) {
    Scratch* p = &s;
    const bool bf16 = s.host_send.defined();
    phases.push_back(Phase{
        lf::str("inter-host reduce-scatter (all_to_all over ", H, " hosts", wire_note, ")"), rs_hosts_.get(),
        [p, H, C, bf16](Communicator& c, const std::string& what) {
          const torch::Tensor src = p->partial.view({H, C});
          if (!bf16) return c.all_to_all_async(src, p->host_recv, what);
          p->host_send.copy_(src);
          return c.all_to_all_async(p->host_send, p->host_recv, what);
        },
        [p] { ordered_sum(p->host_recv, p->shard); }});
  }
}

void BucketSync::add_all_gather(std::vector<Phase>& phases, Scratch& s, const torch::Tensor& target) {
  const int64_t L = local_size_, H = hosts_, C = s.block, M = H * C;
  const bool flat = algorithm_ == AllReduceAlgorithm::kFlat;
  const std::string wire_note = wire_ == GradWire::kBF16 ? ", bf16" : "";
  // Where the gathered bucket goes; with one rank per host the inter-host level writes it directly.
  const bool own_target = target.data_ptr() != s.buffer.data_ptr();
  const torch::Tensor host_part = L > 1 || !own_target ? s.host_part : target;
  if (H > 1) {
    Scratch* p = &s;
    const bool bf16 = s.shard_wire.defined();
    phases.push_back(Phase{
        lf::str("inter-host all-gather (over ", H, " hosts", wire_note, ")"), ag_hosts_.get(),
        [p, H, C, bf16, host_part](Communicator& c, const std::string& what) {
          if (!bf16) return c.all_gather_async(p->shard, host_part.view({H, C}), what);
          p->shard_wire.copy_(p->shard);
          return c.all_gather_async(p->shard_wire, p->host_send, what);  // host_send is free again
        },
        [p, H, C, bf16, host_part] {
          torch::NoGradGuard no_grad;
          if (bf16) host_part.view({H, C}).copy_(p->host_send);
        }});
  }
  if (L > 1) {
    Scratch* p = &s;
    const bool bf16 = s.local_wire.defined();
    phases.push_back(Phase{
        lf::str(flat ? "" : "intra-host ", "all-gather (over ", L, " ranks", bf16 ? ", bf16" : "", ")"),
        ag_local_.get(),
        [p, L, M, bf16, target](Communicator& c, const std::string& what) {
          if (!bf16) return c.all_gather_async(p->host_part, target.view({L, M}), what);
          p->local_wire.copy_(p->host_part);
          return c.all_gather_async(p->local_wire, p->local_send, what);  // local_send is free again
        },
        [p, L, M, bf16, target] {
          torch::NoGradGuard no_grad;
          if (bf16) target.view({L, M}).copy_(p->local_send);
        }});
  }
}

std::shared_ptr<Work> BucketSync::start(std::vector<Phase> phases, const std::string& what) {
  return std::make_shared<PhasedWork>(what, comm_, pipeline_, std::move(phases));
}

std::shared_ptr<Work> BucketSync::all_reduce(size_t bucket, const std::string& what) {
  Scratch& s = *buckets_.at(bucket);
  if (!sharded()) return comm_.all_reduce_async(s.buffer.narrow(0, 0, s.numel), ReduceOp::kSum, what);
  std::vector<Phase> phases;
  add_reduce_scatter(phases, s);
  add_all_gather(phases, s, s.buffer);
  return start(std::move(phases), what);
}

std::shared_ptr<Work> BucketSync::reduce_scatter(size_t bucket, const std::string& what) {
  Scratch& s = *buckets_.at(bucket);
  TORCH_CHECK(rs_local_ || rs_hosts_ || comm_.world_size() == 1, comm_.tag(), " ", name(),
              ": reduce_scatter of ", s.label, " needs a BucketSync made with pieces = true");
  std::vector<Phase> phases;
  add_reduce_scatter(phases, s);
  return start(std::move(phases), what);
}

std::shared_ptr<Work> BucketSync::all_gather(size_t bucket, const std::string& what, const torch::Tensor* target) {
  Scratch& s = *buckets_.at(bucket);
  TORCH_CHECK(rs_local_ || rs_hosts_ || comm_.world_size() == 1, comm_.tag(), " ", name(),
              ": all_gather of ", s.label, " needs a BucketSync made with pieces = true");
  if (target)
    TORCH_CHECK(target->dim() == 1 && target->is_contiguous() && target->numel() == s.buffer.numel() &&
                    target->scalar_type() == s.buffer.scalar_type() && target->device() == s.buffer.device(),
                comm_.tag(), " ", name(), ": the all_gather target of ", s.label, " must be like its buffer");
  std::vector<Phase> phases;
  add_all_gather(phases, s, target ? *target : s.buffer);
  return start(std::move(phases), what);
}

const torch::Tensor& BucketSync::shard(size_t bucket) const { return buckets_.at(bucket)->shard; }

int64_t BucketSync::shard_offset(size_t bucket) const { return buckets_.at(bucket)->offset; }

WireBytes BucketSync::wire_bytes(size_t bucket) const {
  const Scratch& s = *buckets_.at(bucket);
  WireBytes b;
  const int64_t e = s.buffer.element_size();
  const int64_t W = comm_.world_size();
  if (!sharded()) {
    b.unplaced = 2 * (W - 1) * s.numel * e / W;  // ring: reduce-scatter + all-gather
    return b;
  }
  const int64_t L = local_size_, H = hosts_, C = s.block, M = H * C;
  const bool flat = algorithm_ == AllReduceAlgorithm::kFlat;
  const int64_t local_e = flat && wire_ == GradWire::kBF16 ? 2 : e;
  const int64_t host_e = wire_ == GradWire::kBF16 ? 2 : e;
  const int64_t local = 2 * (L - 1) * M * local_e;  // all_to_all (L-1 blocks out) + all_gather
  const int64_t hosts = 2 * (H - 1) * C * host_e;
  (flat ? b.unplaced : b.within_host) = local;
  b.between_hosts = hosts;
  return b;
}

}  // namespace lf::dist
