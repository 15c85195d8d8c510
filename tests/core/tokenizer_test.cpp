// The byte tokenizer: captions frame as begin, UTF-8 bytes, end, padding; long ones are cut at a
// character boundary and counted; decoding gives the caption back.
#include "core/util/tokenizer.h"

#include <gtest/gtest.h>

namespace lf::core {
namespace {

using T = ByteTokenizer;

TEST(ByteTokenizer, FramesBytesAndPads) {
  T tok(8);
  const auto e = tok.encode("cat");
  EXPECT_FALSE(e.truncated);
  EXPECT_EQ(e.tokens, (std::vector<int32_t>{T::kBegin, 'c', 'a', 't', T::kEnd, T::kPad, T::kPad, T::kPad}));
  EXPECT_EQ(T::decode(e.tokens), "cat");
  const auto empty = tok.encode("");
  EXPECT_EQ(empty.tokens[0], T::kBegin);
  EXPECT_EQ(empty.tokens[1], T::kEnd);
}

TEST(ByteTokenizer, TruncatesAtACharacterBoundaryAndCounts) {
  // "é" is 2 bytes (C3 A9): room for 5 bytes keeps "caf" + not half of "é"... "cafés" = 6 bytes.
  T tok(7);  // 5 bytes of room
  const auto e = tok.encode("caf\xC3\xA9s");
  EXPECT_TRUE(e.truncated);
  EXPECT_EQ(T::decode(e.tokens), "caf\xC3\xA9");
  T small(6);  // 4 bytes of room: the cut would fall inside "é", so it backs off to "caf"
  const auto s = small.encode("caf\xC3\xA9s");
  EXPECT_TRUE(s.truncated);
  EXPECT_EQ(T::decode(s.tokens), "caf");
  EXPECT_EQ(s.tokens[4], T::kEnd);
  EXPECT_EQ(s.tokens[5], T::kPad);
}

TEST(ByteTokenizer, BatchesWithMaskAndTruncationCount) {
  T tok(5);
  const auto b = tok.encode(std::vector<std::string>{"ab", "abcdef", ""});
  EXPECT_EQ(b.tokens.sizes(), (at::IntArrayRef{3, 5}));
  EXPECT_EQ(b.truncated, 1);
  EXPECT_EQ(b.mask.sum().item<int64_t>(), 4 + 5 + 2);
  EXPECT_THROW(T(2), std::invalid_argument);
}

}  // namespace
}  // namespace lf::core
