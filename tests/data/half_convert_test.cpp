// Tests of the f16 -> f32 conversion used by the loader: all 65536 bit patterns against
// LibTorch's cast (the reference the rest of the project uses), through both the dispatching
// (F16C where available) and the scalar path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "data/half_convert.h"

namespace lf::data {
namespace {

TEST(HalfConvert, AllBitPatternsMatchTorch) {
  std::vector<uint16_t> bits(65536);
  for (int i = 0; i < 65536; ++i) bits[i] = static_cast<uint16_t>(i);
  at::Tensor h = at::from_blob(bits.data(), {65536}, at::kShort).view(at::kHalf);
  at::Tensor want = h.to(at::kFloat);
  std::vector<float> got(65536 + 3);
  half_to_float(bits.data(), got.data(), 65536);
  half_to_float(bits.data() + 5, got.data() + 65536, 3);  // an unaligned tail
  int bad = 0;
  for (int i = 0; i < 65536; ++i) {
    float w = want.data_ptr<float>()[i], fast = got[i], slow = half_to_float_scalar(bits[i]);
    bool ok = std::isnan(w) ? (std::isnan(fast) && std::isnan(slow))
                            : (std::memcmp(&w, &fast, 4) == 0 && std::memcmp(&w, &slow, 4) == 0);
    if (!ok && bad++ < 5)
      ADD_FAILURE() << "bits 0x" << std::hex << i << ": torch " << w << ", half_to_float "
                    << fast << ", scalar " << slow;
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(got[65536], want[5].item<float>());
  EXPECT_EQ(half_to_float_scalar(0x3C00), 1.0f);
  EXPECT_EQ(half_to_float_scalar(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(half_to_float_scalar(0xFBFF), -65504.0f);
}

}  // namespace
}  // namespace lf::data
