// A checkpoint part read whole or in segments (launch/checkpoint_tensors.h): ranges of any tensor
// come back from whichever shard files hold them, both layouts consolidate to the same tensors, and
// shard sets that do not add up (a gap, an overlap, a segment without its shape, a missing file)
// are errors naming the tensor and the file.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/safetensors.h"
#include "launch/checkpoint_tensors.h"
#include "launch/train_parts.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace lf::launch {
namespace {

using lf::testing::contains;

// Writes "w" [3, 4] (0..11) and "b" [5] (100..104) as `cuts` of their flattened elements spread
// over shard files (segment i goes to file i % files), plus the whole 0-dim "step" in file 0.
nlohmann::json write_sharded(const std::string& dir, const std::vector<std::pair<int64_t, int64_t>>& w_cuts,
                             int files, bool with_shapes = true) {
  at::Tensor w = at::arange(12, at::kDouble).view({3, 4}), b = at::arange(100, 105, at::kFloat);
  std::vector<core::TensorMap> content(files);
  for (size_t i = 0; i < w_cuts.size(); ++i)
    content[i % files][segment_key("w", w_cuts[i].first)] = w.view({-1}).narrow(0, w_cuts[i].first, w_cuts[i].second);
  content[files - 1][segment_key("b", 0)] = b.narrow(0, 0, 2);
  content[0][segment_key("b", 2)] = b.narrow(0, 2, 3);
  content[0]["step"] = at::scalar_tensor(7, at::kLong);
  nlohmann::json state;
  for (int f = 0; f < files; ++f) {
    const std::string name = "part-" + std::to_string(f) + ".safetensors";
    core::TensorMetadata meta;
    if (with_shapes) meta = {{segment_shape_key("w"), "3,4"}, {segment_shape_key("b"), "5"}};
    core::save_safetensors(dir + "/" + name, content[f], meta);
    state["shards"]["part"].push_back(name);
  }
  return state;
}

TEST(CheckpointTensors, RangesComeFromWhicheverShardsHoldThem) {
  const std::string dir = lf::testing::fresh_dir("ckpt_tensors_ranges");
  const nlohmann::json state = write_sharded(dir, {{0, 5}, {5, 2}, {7, 5}}, 2);
  CheckpointPart part(dir, state, "part");
  EXPECT_EQ(part.names(), (std::vector<std::string>{"b", "step", "w"}));
  EXPECT_EQ(part.shape("w"), (std::vector<int64_t>{3, 4}));
  // A range across three pieces in two files.
  EXPECT_TRUE(part.read("w", 3, 6).equal(at::arange(3, 9, at::kDouble)));
  EXPECT_TRUE(part.read("w").equal(at::arange(12, at::kDouble).view({3, 4})));
  EXPECT_TRUE(part.read("b").equal(at::arange(100, 105, at::kFloat)));
  EXPECT_EQ(part.read("step").item<int64_t>(), 7);
  // read_like: segments by their key and length, whole tensors by name.
  core::TensorMap like = part.read_like({{segment_key("w", 10), at::empty({2})}, {"step", at::empty({})}});
  EXPECT_TRUE(like.at("w@10").equal(at::tensor({10.0, 11.0}, at::kDouble)));
  EXPECT_EQ(like.at("step").item<int64_t>(), 7);
  // The same tensors written whole read back identically (the unsharded layout).
  const std::string whole = lf::testing::fresh_dir("ckpt_tensors_whole");
  core::save_safetensors(whole + "/part.safetensors", part.consolidate());
  CheckpointPart again(whole, nlohmann::json::object(), "part");
  for (const auto& [name, t] : part.consolidate()) EXPECT_TRUE(again.read(name).equal(t)) << name;
  EXPECT_TRUE(again.read("w", 3, 6).equal(at::arange(3, 9, at::kDouble)));
  // A range outside the tensor (a checkpoint of another model).
  const std::string msg = lf::testing::error_of<std::runtime_error>([&] { part.read("w", 10, 3); });
  EXPECT_TRUE(contains(msg, "elements [10, 13) of part tensor w asked for, it has 12")) << msg;
  EXPECT_TRUE(contains(lf::testing::error_of<std::runtime_error>([&] { part.read("nope"); }), "has no tensor nope"));
}

TEST(CheckpointTensors, ShardSetsThatDoNotAddUpAreNamed) {
  auto error = [](const std::vector<std::pair<int64_t, int64_t>>& cuts, int files, bool shapes = true) {
    const std::string dir = lf::testing::fresh_dir("ckpt_tensors_bad");
    const nlohmann::json state = write_sharded(dir, cuts, files, shapes);
    return lf::testing::error_of<std::runtime_error>([&] { CheckpointPart(dir, state, "part"); });
  };
  std::string msg = error({{0, 5}, {6, 6}}, 2);
  EXPECT_TRUE(contains(msg, "part tensor w misses elements at element 5")) << msg;
  msg = error({{0, 6}, {5, 7}}, 2);
  EXPECT_TRUE(contains(msg, "part tensor w has overlapping pieces at element 5")) << msg;
  msg = error({{0, 6}}, 1);
  EXPECT_TRUE(contains(msg, "part tensor w holds 6 of its 12 elements")) << msg;
  msg = error({{0, 12}}, 1, /*shapes=*/false);
  EXPECT_TRUE(contains(msg, "part-0.safetensors: segment b@0 has no 'shape:b' in the metadata")) << msg;
  // A shard file state.json names but that is gone.
  const std::string dir = lf::testing::fresh_dir("ckpt_tensors_gone");
  const nlohmann::json state = write_sharded(dir, {{0, 6}, {6, 6}}, 2);
  fs::remove(dir + "/part-1.safetensors");
  msg = lf::testing::error_of<std::exception>([&] { CheckpointPart(dir, state, "part"); });
  EXPECT_TRUE(contains(msg, "part-1.safetensors")) << msg;
}

TEST(CheckpointTensors, SegmentKeys) {
  std::string name;
  int64_t offset = -1;
  EXPECT_TRUE(split_segment_key("exp_avg.down.0.weight@1234", name, offset));
  EXPECT_EQ(name, "exp_avg.down.0.weight");
  EXPECT_EQ(offset, 1234);
  EXPECT_FALSE(split_segment_key("step", name, offset));
  EXPECT_FALSE(split_segment_key("w@", name, offset));
  EXPECT_FALSE(split_segment_key("@3", name, offset));
  EXPECT_FALSE(split_segment_key("w@1x", name, offset));
  EXPECT_EQ(segment_key("w", 0), "w@0");
}

}  // namespace
}  // namespace lf::launch
