// BucketSync on simulated hosts (the fake communicator with host names): host discovery, the
// choice of auto, and every algorithm x wire against sums formed by hand in the documented
// order (bitwise: the order is the contract that makes runs repeatable), with bf16 rounding
// implemented here independently of torch; reduce-scatter shards, operations completing out of
// order, and failures that name the algorithm, the bucket and the phase.
#include "tests/test_util.h"
#include "distributed/bucket_sync.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "distributed/fake_communicator.h"

namespace lf::dist {
namespace {

using lf::testing::contains;
using lf::testing::error_of;

void expect_all_ok(const std::vector<std::string>& errors) {
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

// Round to nearest even at 8 bits of mantissa (bfloat16), written out so the test does not
// rely on torch's conversion (which the code under test uses).
float bf16_round(float x) {
  uint32_t u = 0;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return x;
  u += 0x7FFFu + ((u >> 16) & 1u);
  u &= 0xFFFF0000u;
  float y = 0;
  std::memcpy(&y, &u, 4);
  return y;
}

// Rank r's contribution: values with every mantissa bit in play, different per rank.
torch::Tensor contribution(int rank, int64_t n, torch::ScalarType dtype) {
  torch::Tensor i = torch::arange(n, torch::kDouble);
  return (torch::sin(i * 0.7311 + rank * 1.37) * (1.0 + 0.173 * rank) * 3.3).to(dtype);
}

struct Layout {
  std::vector<std::string> hosts;
  std::string name;
};
const Layout kTwoByTwo{{"a", "a", "b", "b"}, "2x2"};
const Layout kInterleaved{{"a", "b", "a", "b"}, "2x2 interleaved"};
const Layout kOneHost{{"a", "a", "a", "a"}, "1x4"};
const Layout kFourHosts{{"a", "b", "c", "d"}, "4x1"};

// The expected sum of element i, formed as the documented order says: within each host by
// local rank, then over hosts in host order (flat: over ranks in rank order), in `acc`
// (float or double), with bf16 rounding where the wire carries bf16.
template <class Acc>
std::vector<Acc> expected_sum(const Layout& layout, AllReduceAlgorithm algorithm, GradWire wire,
                              const std::vector<std::vector<Acc>>& x) {
  const size_t n = x[0].size();
  const bool bf16 = wire == GradWire::kBF16;
  auto round = [bf16](Acc v) { return bf16 ? static_cast<Acc>(bf16_round(static_cast<float>(v))) : v; };
  // Host order: by lowest rank; local order: by rank.
  std::vector<std::string> host_names;
  for (const auto& h : layout.hosts)
    if (std::find(host_names.begin(), host_names.end(), h) == host_names.end()) host_names.push_back(h);
  // Hierarchical on one host has no link between hosts, so no bf16 hop.
  auto host_round = [&](Acc v) { return host_names.size() > 1 ? round(v) : v; };
  std::vector<Acc> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (algorithm == AllReduceAlgorithm::kFlat) {
      Acc s = round(x[0][i]);
      for (size_t r = 1; r < x.size(); ++r) s += round(x[r][i]);
      out[i] = round(s);
      continue;
    }
    Acc total = 0;
    for (size_t h = 0; h < host_names.size(); ++h) {
      bool first = true;
      Acc p = 0;
      for (size_t r = 0; r < x.size(); ++r) {
        if (layout.hosts[r] != host_names[h]) continue;
        p = first ? x[r][i] : p + x[r][i];  // within the host: full precision
        first = false;
      }
      total = h == 0 ? host_round(p) : total + host_round(p);
    }
    out[i] = host_round(total);
  }
  return out;
}

template <class Acc>
std::vector<Acc> to_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  return std::vector<Acc>(c.data_ptr<Acc>(), c.data_ptr<Acc>() + c.numel());
}

struct Case {
  AllReduceAlgorithm algorithm;
  GradWire wire;
  torch::ScalarType dtype;
};

// Every algorithm and wire on every layout: bitwise the sum formed in the documented order,
// and the same bits on every rank. 1001 elements: not a multiple of 4 (padding in play).
class BucketSyncSums : public ::testing::TestWithParam<std::tuple<int, int, int, int>> {};

TEST_P(BucketSyncSums, EqualTheOrderedSumBitwiseOnEveryRank) {
  const auto [layout_i, algo_i, wire_i, dtype_i] = GetParam();
  const Layout layout = std::vector<Layout>{kTwoByTwo, kInterleaved, kOneHost, kFourHosts}[layout_i];
  const AllReduceAlgorithm algorithm = algo_i == 0 ? AllReduceAlgorithm::kFlat : AllReduceAlgorithm::kHierarchical;
  const GradWire wire = wire_i == 0 ? GradWire::kF32 : GradWire::kBF16;
  const torch::ScalarType dtype = dtype_i == 0 ? torch::kFloat : torch::kDouble;
  constexpr int64_t n = 1001;
  std::vector<torch::Tensor> results(4);
  auto world = FakeWorld::create(4, layout.hosts);
  expect_all_ok(world->run([&](Communicator& comm) {
    BucketSync sync(comm, algorithm, wire);
    const int64_t padded = sync.padded_numel(n);
    torch::Tensor buffer = torch::zeros({padded}, dtype);
    buffer.narrow(0, 0, n).copy_(contribution(comm.rank(), n, dtype));
    sync.add_bucket(buffer, n, "bucket 1/1");
    sync.all_reduce(0, "all_reduce of bucket 1/1")->wait();
    results[comm.rank()] = buffer.narrow(0, 0, n).clone();
    EXPECT_TRUE(torch::all(buffer.narrow(0, n, padded - n) == 0).item<bool>()) << "padding";
  }));
  const std::string label = lf::str(layout.name, " ", to_string(algorithm), " ", to_string(wire), " ", dtype);
  for (int r = 1; r < 4; ++r) EXPECT_TRUE(torch::equal(results[r], results[0])) << label << ": rank " << r;
  if (algorithm == AllReduceAlgorithm::kFlat && wire == GradWire::kF32) {
    // The fake's own all_reduce (rank order), as MPI's is MPI's: equal to the ordered sum.
    torch::Tensor sum = contribution(0, n, dtype);
    for (int r = 1; r < 4; ++r) sum = sum + contribution(r, n, dtype);
    EXPECT_TRUE(torch::equal(results[0], sum)) << label;
    return;
  }
  torch::Tensor expected;
  if (dtype == torch::kFloat) {
    std::vector<std::vector<float>> x;
    for (int r = 0; r < 4; ++r) x.push_back(to_vector<float>(contribution(r, n, dtype)));
    expected = torch::tensor(expected_sum<float>(layout, algorithm, wire, x), torch::kFloat);
  } else {
    std::vector<std::vector<double>> x;
    for (int r = 0; r < 4; ++r) x.push_back(to_vector<double>(contribution(r, n, dtype)));
    expected = torch::tensor(expected_sum<double>(layout, algorithm, wire, x), torch::kDouble);
  }
  const double worst = (results[0] - expected).abs().max().item<double>();
  EXPECT_TRUE(torch::equal(results[0], expected)) << label << ": max abs difference " << worst;
}

std::string sums_case_name(const ::testing::TestParamInfo<std::tuple<int, int, int, int>>& info) {
  const std::vector<std::string> layouts = {"TwoByTwo", "Interleaved", "OneHost", "FourHosts"};
  return lf::str(layouts[std::get<0>(info.param)], std::get<1>(info.param) ? "Hierarchical" : "Flat",
                 std::get<2>(info.param) ? "BF16" : "F32", std::get<3>(info.param) ? "Double" : "Float");
}

INSTANTIATE_TEST_SUITE_P(AllLayouts, BucketSyncSums,
                         ::testing::Combine(::testing::Range(0, 4), ::testing::Range(0, 2), ::testing::Range(0, 2),
                                            ::testing::Range(0, 2)),
                         sums_case_name);

TEST(BucketSync, HierarchicalEqualsFlatToF64RoundingAndBF16StaysClose) {
  // What the training tests rely on: hierarchical f64 differs from flat only by the order of
  // the sum; bf16 is off by about 2^-8 relative per rounding.
  constexpr int64_t n = 4096;
  std::vector<torch::Tensor> flat(4), hier(4), bf16(4);
  auto world = FakeWorld::create(4, kTwoByTwo.hosts);
  expect_all_ok(world->run([&](Communicator& comm) {
    auto run = [&](AllReduceAlgorithm a, GradWire w, torch::ScalarType dtype) {
      BucketSync sync(comm, a, w);
      torch::Tensor buffer = torch::zeros({sync.padded_numel(n)}, dtype);
      buffer.narrow(0, 0, n).copy_(contribution(comm.rank(), n, dtype));
      sync.add_bucket(buffer, n, "bucket 1/1");
      sync.all_reduce(0, "x")->wait();
      return buffer.narrow(0, 0, n).to(torch::kDouble);
    };
    flat[comm.rank()] = run(AllReduceAlgorithm::kFlat, GradWire::kF32, torch::kDouble);
    hier[comm.rank()] = run(AllReduceAlgorithm::kHierarchical, GradWire::kF32, torch::kDouble);
    bf16[comm.rank()] = run(AllReduceAlgorithm::kHierarchical, GradWire::kBF16, torch::kFloat);
  }));
  const double f64_error = (hier[0] - flat[0]).abs().max().item<double>();
  EXPECT_LT(f64_error, 1e-12);
  // Each rounding to bf16 errs by at most 2^-9 of its value; the rounded values (host sums,
  // the total) are bounded by the sum of the terms' magnitudes.
  double scale = 0;
  for (int r = 0; r < 4; ++r) scale += contribution(r, n, torch::kDouble).abs().max().item<double>();
  const double bf16_error = (bf16[0] - flat[0]).abs().max().item<double>();
  EXPECT_GT(bf16_error, 0.0) << "bf16 gave the f64 result exactly: was bf16 on the wire at all?";
  EXPECT_LT(bf16_error, scale * std::ldexp(1.0, -8)) << "scale " << scale;
}

TEST(BucketSync, AutoPicksHierarchicalOnlyForSeveralHostsWithSeveralRanks) {
  struct Expect {
    std::vector<std::string> hosts;
    AllReduceAlgorithm resolved;
    std::string topology;
  };
  const std::vector<Expect> cases = {
      {{"a", "a", "b", "b"}, AllReduceAlgorithm::kHierarchical, "2 hosts x 2 ranks"},
      {{"a", "b", "a", "b"}, AllReduceAlgorithm::kHierarchical, "2 hosts x 2 ranks"},
      {{"a", "a", "a", "a"}, AllReduceAlgorithm::kFlat, "1 host x 4 ranks"},
      {{"a", "b", "c", "d"}, AllReduceAlgorithm::kFlat, "4 hosts x 1 rank"},
      {{"a", "a", "a", "b"}, AllReduceAlgorithm::kFlat, "2 hosts (3, 1 ranks)"},
  };
  for (const Expect& c : cases) {
    std::vector<AllReduceAlgorithm> got(4);
    std::vector<std::string> described(4);
    auto world = FakeWorld::create(4, c.hosts);
    expect_all_ok(world->run([&](Communicator& comm) {
      BucketSync sync(comm, AllReduceAlgorithm::kAuto, GradWire::kF32);
      got[comm.rank()] = sync.algorithm();
      described[comm.rank()] = sync.topology().describe();
    }));
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(got[r], c.resolved) << c.topology << " rank " << r;
      EXPECT_EQ(described[r], c.topology);
    }
  }
}

TEST(BucketSync, HostGroupsNumberHostsAndPairLocalRanks) {
  std::vector<HostTopology> topo(4);
  std::vector<std::vector<int64_t>> inter(4);
  auto world = FakeWorld::create(4, kInterleaved.hosts);
  expect_all_ok(world->run([&](Communicator& comm) {
    HostGroups groups(comm);
    topo[comm.rank()] = groups.topology();
    torch::Tensor who = groups.inter().all_gather(torch::tensor({static_cast<int64_t>(comm.rank())}), "who");
    for (int i = 0; i < 2; ++i) inter[comm.rank()].push_back(who[i][0].item<int64_t>());
  }));
  // Ranks 0, 2 on host a (host 0), 1, 3 on host b (host 1).
  EXPECT_EQ(topo[2].host, 0);
  EXPECT_EQ(topo[2].local_rank, 1);
  EXPECT_EQ(topo[3].host, 1);
  EXPECT_EQ(topo[3].local_rank, 1);
  EXPECT_EQ(topo[0].host_of_rank, (std::vector<int>{0, 1, 0, 1}));
  EXPECT_EQ(inter[2], (std::vector<int64_t>{2, 3}));  // local rank 1 of host 0, then of host 1
  EXPECT_EQ(inter[1], (std::vector<int64_t>{0, 1}));
}

TEST(BucketSync, HierarchicalOnUnevenHostsIsAUsageErrorNamingTheLayout) {
  auto world = FakeWorld::create(3, {"a", "a", "b"});
  const auto errors = world->run([&](Communicator& comm) {
    BucketSync sync(comm, AllReduceAlgorithm::kHierarchical, GradWire::kF32);
  });
  for (const std::string& e : errors)
    EXPECT_TRUE(contains(e, "dist.allreduce = hierarchical needs the same number of ranks on every host, but the "
                            "job runs on 2 hosts (2, 1 ranks)")) << e;
  HostTopology uneven;
  uneven.hosts = 2;
  uneven.ranks_per_host = {2, 1};
  EXPECT_THROW(resolve_algorithm(AllReduceAlgorithm::kHierarchical, uneven), std::invalid_argument);
  EXPECT_EQ(resolve_algorithm(AllReduceAlgorithm::kAuto, uneven), AllReduceAlgorithm::kFlat);
}

TEST(BucketSync, ReduceScatterLeavesEachRankItsShardAndAllGatherTheWhole) {
  constexpr int64_t n = 37;
  std::vector<torch::Tensor> shards(4), whole(4);
  std::vector<int64_t> offsets(4);
  auto world = FakeWorld::create(4, kTwoByTwo.hosts);
  expect_all_ok(world->run([&](Communicator& comm) {
    BucketSync sync(comm, AllReduceAlgorithm::kHierarchical, GradWire::kF32);
    torch::Tensor buffer = torch::zeros({sync.padded_numel(n)}, torch::kDouble);
    buffer.narrow(0, 0, n).copy_(contribution(comm.rank(), n, torch::kDouble));
    sync.add_bucket(buffer, n, "bucket 1/1");
    sync.reduce_scatter(0, "reduce_scatter")->wait();
    shards[comm.rank()] = sync.shard(0).clone();
    offsets[comm.rank()] = sync.shard_offset(0);
    sync.all_gather(0, "all_gather")->wait();
    whole[comm.rank()] = buffer.clone();
  }));
  torch::Tensor sum = torch::zeros({40}, torch::kDouble);
  for (int r = 0; r < 4; ++r) sum.narrow(0, 0, n).add_(contribution(r, n, torch::kDouble));
  // Shards of 10: rank (host h, local l) owns block l * 2 + h.
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 20, 10, 30}));
  for (int r = 0; r < 4; ++r) {
    EXPECT_TRUE(torch::allclose(shards[r], sum.narrow(0, offsets[r], 10), 0, 1e-12)) << "rank " << r;
    EXPECT_TRUE(torch::allclose(whole[r], sum, 0, 1e-12)) << "rank " << r;
  }
}

TEST(BucketSync, AllGatherIntoATargetLeavesTheBufferAlone) {
  // The sharded optimizer's use: the gradient bucket is reduce-scattered, the parameters (another
  // buffer with the same layout) are all-gathered; flat with pieces, and hierarchical on 2 x 2
  // (with one rank per host too: 2 hosts x 1, where the inter-host level writes the target).
  struct Case {
    AllReduceAlgorithm algorithm;
    std::vector<std::string> hosts;
  };
  for (const Case& c : {Case{AllReduceAlgorithm::kFlat, {"a", "a", "a"}}, Case{AllReduceAlgorithm::kHierarchical, kTwoByTwo.hosts},
                        Case{AllReduceAlgorithm::kHierarchical, {"a", "b"}}}) {
    constexpr int64_t n = 23;
    const int world_size = static_cast<int>(c.hosts.size());
    std::vector<torch::Tensor> targets(world_size), buffers(world_size);
    auto world = FakeWorld::create(world_size, c.hosts);
    expect_all_ok(world->run([&](Communicator& comm) {
      BucketSync sync(comm, c.algorithm, GradWire::kF32, /*pieces=*/true);
      torch::Tensor buffer = torch::full({sync.padded_numel(n)}, -1.0, torch::kDouble);
      sync.add_bucket(buffer, n, "bucket 1/1");
      torch::Tensor target = torch::zeros_like(buffer);
      // Each rank's shard holds its rank id; after the gather every target holds each block's owner.
      sync.shard(0).fill_(comm.rank());
      sync.all_gather(0, "all_gather", &target)->wait();
      targets[comm.rank()] = target;
      buffers[comm.rank()] = buffer;
    }));
    const int64_t block = targets[0].numel() / world_size;
    for (int r = 0; r < world_size; ++r) {
      EXPECT_TRUE(torch::equal(targets[r], targets[0])) << "rank " << r;
      EXPECT_TRUE(torch::equal(buffers[r], torch::full_like(buffers[r], -1.0))) << "the buffer was written, rank " << r;
    }
    std::vector<double> owners;
    for (int64_t k = 0; k < world_size; ++k) owners.push_back(targets[0][k * block].item<double>());
    std::sort(owners.begin(), owners.end());
    for (int r = 0; r < world_size; ++r) EXPECT_EQ(owners[r], r) << "every rank's shard arrived once";
  }
}

TEST(BucketSync, OperationsCompletingInAnyOrderKeepEveryLaneInStep) {
  // Three buckets in flight; rank 0 polls the last bucket first, the others in order. The
  // lanes make every rank issue each phase in bucket order all the same.
  constexpr int64_t n = 300;
  std::vector<std::vector<torch::Tensor>> results(4);
  auto world = FakeWorld::create(4, kTwoByTwo.hosts);
  expect_all_ok(world->run([&](Communicator& comm) {
    comm.set_timeout(Seconds(20));
    BucketSync sync(comm, AllReduceAlgorithm::kHierarchical, GradWire::kBF16);
    std::vector<torch::Tensor> buffers;
    std::vector<std::shared_ptr<Work>> works;
    for (int b = 0; b < 3; ++b) {
      buffers.push_back(torch::zeros({sync.padded_numel(n + b)}));
      buffers.back().narrow(0, 0, n + b).copy_(contribution(comm.rank() + b, n + b, torch::kFloat));
      sync.add_bucket(buffers.back(), n + b, lf::str("bucket ", b + 1, "/3"));
    }
    for (int b = 0; b < 3; ++b) works.push_back(sync.all_reduce(b, lf::str("bucket ", b + 1)));
    if (comm.rank() == 0) {
      for (int i = 0; i < 50; ++i) works[2]->test();  // cannot finish before the others issue
    }
    for (int b = 2; b >= 0; --b) works[b]->wait();
    for (const auto& buffer : buffers) results[comm.rank()].push_back(buffer.clone());
  }));
  for (int r = 1; r < 4; ++r)
    for (int b = 0; b < 3; ++b) EXPECT_TRUE(torch::equal(results[r][b], results[0][b])) << r << " " << b;
}

TEST(BucketSync, TimeoutAndFailureNameTheAlgorithmTheBucketAndThePhase) {
  {
    auto world = FakeWorld::create(4, kTwoByTwo.hosts);
    world->inject({3, "inter-host all-gather", 1, FakeFault::Kind::kAbsent});
    const auto errors = world->run([&](Communicator& comm) {
      comm.set_timeout(Seconds(comm.rank() == 0 ? 0.5 : 10.0));
      BucketSync sync(comm, AllReduceAlgorithm::kHierarchical, GradWire::kBF16);
      torch::Tensor buffer = torch::zeros({sync.padded_numel(8)});
      sync.add_bucket(buffer, 8, "bucket 1/1");
      sync.all_reduce(0, "hierarchical all_reduce (bf16 wire) of bucket 1/1, 32 B, step 5")->wait();
    });
    // Rank 0 waits on its partner on the other host (rank 2) in the inter-host all-gather,
    // which never completes for the pair of local rank 1 (ranks 1, 3): rank 0 times out in
    // the intra-host all-gather that rank 1 never reaches, or in its own inter-host phase.
    EXPECT_TRUE(contains(errors[0], "[rank 0/4 a] hierarchical all_reduce (bf16 wire) of bucket 1/1, 32 B, step 5 (at phase "))
        << errors[0];
    EXPECT_TRUE(contains(errors[0], "has not completed after 0.")) << errors[0];
  }
  {
    auto world = FakeWorld::create(4, kTwoByTwo.hosts);
    world->inject({2, "inter-host reduce-scatter", 1, FakeFault::Kind::kThrow});
    const auto errors = world->run([&](Communicator& comm) {
      comm.set_timeout(Seconds(10.0));
      BucketSync sync(comm, AllReduceAlgorithm::kHierarchical, GradWire::kBF16);
      torch::Tensor buffer = torch::zeros({sync.padded_numel(8)});
      sync.add_bucket(buffer, 8, "bucket 1/1");
      sync.all_reduce(0, "hierarchical all_reduce (bf16 wire) of bucket 1/1")->wait();
    });
    EXPECT_TRUE(contains(errors[2], "[rank 2/4 b] hierarchical all_reduce (bf16 wire) of bucket 1/1, at phase 2/4, "
                                    "inter-host reduce-scatter (all_to_all over 2 hosts, bf16)")) << errors[2];
    EXPECT_TRUE(contains(errors[2], "injected fault")) << errors[2];
    EXPECT_TRUE(contains(errors[0], "job aborted by [rank 2/4 b]")) << errors[0];
  }
}

TEST(BucketSync, ShardedAlgorithmsRefuseNonFloatBucketsNamingThem) {
  auto world = FakeWorld::create(2);
  const auto errors = world->run([&](Communicator& comm) {
    BucketSync sync(comm, AllReduceAlgorithm::kFlat, GradWire::kBF16);
    sync.add_bucket(torch::zeros({sync.padded_numel(6)}, torch::kHalf), 6, "bucket 2/3");
  });
  EXPECT_TRUE(contains(errors[0], "flat all_reduce (bf16 wire): bucket 2/3 holds Half gradients; this algorithm "
                                  "sums float or double gradients only")) << errors[0];
}

TEST(BucketSync, WireBytesModelTheAlgorithms) {
  // 4 ranks on 2 hosts, a bucket of 1000 f32: flat ring 2 (3/4) 4000 B; hierarchical: within
  // the host 2 (1/2) 4000, between hosts 2 (1/2) 2000 per rank (half the host's 4000 B, sent by
  // each of its two ranks); bf16 halves what crosses hosts.
  std::vector<WireBytes> flat(4), hier(4), bf16(4);
  auto world = FakeWorld::create(4, kTwoByTwo.hosts);
  expect_all_ok(world->run([&](Communicator& comm) {
    auto bytes = [&](AllReduceAlgorithm a, GradWire w) {
      BucketSync sync(comm, a, w);
      sync.add_bucket(torch::zeros({sync.padded_numel(1000)}), 1000, "bucket 1/1");
      return sync.wire_bytes(0);
    };
    flat[comm.rank()] = bytes(AllReduceAlgorithm::kFlat, GradWire::kF32);
    hier[comm.rank()] = bytes(AllReduceAlgorithm::kHierarchical, GradWire::kF32);
    bf16[comm.rank()] = bytes(AllReduceAlgorithm::kHierarchical, GradWire::kBF16);
  }));
  EXPECT_EQ(flat[0].unplaced, 6000);
  EXPECT_EQ(hier[0].within_host, 4000);
  EXPECT_EQ(hier[0].between_hosts, 2000);
  EXPECT_EQ(bf16[0].within_host, 4000);
  EXPECT_EQ(bf16[0].between_hosts, 1000);
}

}  // namespace
}  // namespace lf::dist
