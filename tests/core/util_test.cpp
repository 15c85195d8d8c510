// Tests of core/util: the scalar Philox against Random123's known-answer vectors, SHA-256
// against FIPS 180-2 vectors, closest-key suggestions.
#include <gtest/gtest.h>

#include "core/util/philox.h"
#include "core/util/sha256.h"
#include "core/util/strings.h"

namespace lf {
namespace {

// Known-answer tests from Random123's kat_vectors (philox4x32_10).
TEST(Philox, MatchesRandom123KnownAnswers) {
  EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (Philox4{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                          {0xffffffffu, 0xffffffffu}),
            (Philox4{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                          {0xa4093822u, 0x299f31d0u}),
            (Philox4{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Sha256, MatchesFipsVectors) {
  EXPECT_EQ(sha256_hex(std::string("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Strings, ClosestMatchSuggestsNearestKey) {
  std::vector<std::string> keys = {"train.steps", "train.seed", "train.batch_size"};
  EXPECT_EQ(closest_match("train.stepz", keys), "train.steps");
  EXPECT_EQ(closest_match("train.batchsize", keys), "train.batch_size");
  EXPECT_EQ(closest_match("completely.unrelated.thing", keys), "");
}

}  // namespace
}  // namespace lf
