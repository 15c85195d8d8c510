// The transport of gradient buckets: how one flat bucket is summed across ranks, as one Work
// the Reducer's communication thread drives (see phased_work.h for the order protocol).
//
//   flat, f32 wire:  one all_reduce of the bucket on all ranks (MPI's or NCCL's algorithm;
//                    unchanged, so 2 ranks x B/2 stays 1 rank x B).
//   flat, bf16 wire: reduce-scatter (all_to_all of bf16 blocks, each rank sums its block in
//                    f32 in rank order), then all_gather of the bf16-rounded sums.
//   hierarchical:    reduce-scatter within the host (shared memory, full precision), then
//                    reduce-scatter between hosts over the ranks of the same local rank (bf16
//                    on this hop with the bf16 wire), then all-gather between hosts and
//                    within the host. Every host link carries 2(H-1)/H of the bucket, as
//                    NCCL's and Horovod's hierarchical all-reduce; a flat ring over W = L x H
//                    ranks carries up to 2(W-1)/W of it over each host's link, and more than
//                    once where the ring crosses hosts several times.
//
// Sums are formed by this code, never by an MPI reduction operator: every block is summed by
// its owner left to right in a fixed order (local ranks, then hosts), in f32 (f64 for f64
// buckets), and what every rank applies is the owner's result. So the same topology gives the
// same bits on every run, and every rank holds the same bits. (An MPI user op over bf16
// would round to bf16 at every hop of MPI's tree or ring instead.)
//
// Shards: the bucket is padded with zeros to a multiple of the world size W; with C = P / W,
// flat: rank r owns elements [r C, (r+1) C); hierarchical: the rank of local rank l on host h
// owns [(l H + h) C, (l H + h + 1) C). reduce_scatter() and all_gather() are the two halves
// of the sharded algorithms on their own, for optimizers that update only their shard.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "distributed/communicator.h"
#include "distributed/host_groups.h"
#include "distributed/phased_work.h"
#include "distributed/sync_options.h"

namespace lf::dist {

// Bytes a rank hands to its communicators per all-reduce (a model of the algorithm: the ring's
// 2(W-1)/W of the buffer for MPI's and NCCL's own all-reduce).
struct WireBytes {
  int64_t within_host = 0;    // to ranks of its own host (hierarchical)
  int64_t between_hosts = 0;  // to ranks of other hosts (hierarchical)
  int64_t unplaced = 0;       // flat: to ranks wherever they are
  int64_t total() const { return within_host + between_hosts + unplaced; }
  WireBytes& operator+=(const WireBytes& o);
};

class BucketSync {
 public:
  // Collective over `comm` and blocking: finds the hosts (HostGroups) unless flat was asked
  // for, resolves kAuto, and makes one communicator per phase. `pieces`: also prepare
  // reduce_scatter()/all_gather() for flat f32 (whose all_reduce needs none of it).
  // Throws std::invalid_argument for hierarchical on hosts with different rank counts.
  BucketSync(Communicator& comm, AllReduceAlgorithm requested, GradWire wire, bool pieces = false);
  ~BucketSync();

  AllReduceAlgorithm algorithm() const { return algorithm_; }  // resolved: kFlat or kHierarchical
  GradWire wire() const { return wire_; }
  // The hosts (only discovered when not asked for flat: then 1 host x W ranks is assumed).
  const HostTopology& topology() const { return topology_; }
  // "hierarchical all_reduce (bf16 wire)": how buckets are named in messages.
  std::string name() const;
  // One line for the log: "gradient sync: hierarchical all-reduce over 2 hosts x 2 ranks,
  // bf16 between hosts (dist.allreduce = auto, dist.grad_wire = bf16)".
  std::string describe(AllReduceAlgorithm requested) const;

  // The length a bucket of `numel` elements must have: a multiple of the world size for the
  // sharded algorithms (zeros after `numel`), `numel` for flat f32.
  int64_t padded_numel(int64_t numel) const;

  // Registers the next bucket: `buffer` is 1-D, contiguous, f32 or f64 (any dtype for flat
  // f32), padded_numel(numel) long, and stays alive and in place. Allocates its scratch.
  void add_bucket(const torch::Tensor& buffer, int64_t numel, const std::string& label);

  // The sum over ranks, in the buffer, identical on every rank. The Work is driven by test()
  // (or wait()), which advances every operation in flight; start the operations of all
  // buckets in the same order on every rank, all from one thread, while this object lives.
  std::shared_ptr<Work> all_reduce(size_t bucket, const std::string& what);
  // The first half: this rank's shard of the sum, in shard(bucket) (f32/f64, before any bf16
  // rounding of the all-gather). The buffer's contents are undefined until all_gather().
  std::shared_ptr<Work> reduce_scatter(size_t bucket, const std::string& what);
  // The second half: every rank's shard(bucket) into the buffer (bf16-rounded with bf16 wire), or
  // into `target` (1-D, contiguous, the buffer's length and dtype) when given.
  std::shared_ptr<Work> all_gather(size_t bucket, const std::string& what, const torch::Tensor* target = nullptr);
  const torch::Tensor& shard(size_t bucket) const;
  int64_t shard_offset(size_t bucket) const;  // in elements of the padded bucket

  WireBytes wire_bytes(size_t bucket) const;

 private:
  struct Scratch;
  void add_reduce_scatter(std::vector<Phase>& phases, Scratch& s);
  void add_all_gather(std::vector<Phase>& phases, Scratch& s, const torch::Tensor& target);
  std::shared_ptr<Work> start(std::vector<Phase> phases, const std::string& what);
  bool sharded() const;  // anything but flat f32's own all_reduce

  Communicator& comm_;
  AllReduceAlgorithm algorithm_ = AllReduceAlgorithm::kFlat;
  GradWire wire_ = GradWire::kF32;
  bool pieces_requested_ = false;  // for a sharded optimizer: receive buffers only while in use
  HostTopology topology_;
  std::unique_ptr<HostGroups> groups_;
  int hosts_ = 1;        // H of the scheme (1 for flat)
  int local_size_ = 1;   // L of the scheme (W for flat)
  // Lanes: one communicator per phase (phased_work.h). Flat: reduce-scatter, all-gather over
  // all ranks. Hierarchical: within the host and between hosts, for each half.
  std::unique_ptr<Lane> rs_local_, rs_hosts_, ag_hosts_, ag_local_;
  std::vector<std::unique_ptr<Scratch>> buckets_;
  std::shared_ptr<Pipeline> pipeline_ = std::make_shared<Pipeline>();
};

}  // namespace lf::dist
