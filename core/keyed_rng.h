// The keyed counter-based generator: every random draw about a sample comes from
// Philox4x32-10 keyed by (seed, stream, epoch, global sample index), computed with tensor ops.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace lf::core {

// Which purpose a draw serves. The values are part of the layout below (a stream is 16 bits):
// never renumber one; add new streams with new values. Dropout layer l uses kDropoutBase + l.
enum class Stream : uint32_t {
  kOrder = 1,
  kTimestep = 2,
  kNoise = 3,
  kLabelDrop = 4,
  kPosterior = 5,
  kFlip = 6,
  kSampleInit = 7,
  kSampleStep = 8,
  kOffsetNoise = 9,
  kValidation = 10,
  kFlowTime = 11,  // flow matching's t per sample (core/flow.h)
  kDropoutBase = 4096,
};

constexpr uint32_t stream_id(Stream s) { return static_cast<uint32_t>(s); }

// ---- The layout (a contract like a file format; tools/golden_rng.py re-implements it) ------
// Philox4x32-10 as in Random123 (core/util/philox.h is the scalar reference) with
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (c0 = block j within the sample,
//              c1 = index & 0xffffffff,
//              c2 = epoch,
//              c3 = stream | ((index >> 32) & 0xffff) << 16)
// Each block gives 4 uint32 words; a sample's k-th number is word (k % 4) of block (k / 4).
// Ranges: 0 <= index < 2^48, 0 <= epoch < 2^32, stream < 2^16, numbers per sample < 2^34.
// A draw of n numbers for a sample is a prefix of any longer draw for that sample.
//
// Conversions (all in float64, then cast to the requested dtype):
//   uniform u = (bits + 0.5) * 2^-32, in (0, 1). After a cast to a narrower float the value is
//     clamped to the largest value below 1 of that dtype, so the open interval survives.
//   normal: Box-Muller on consecutive pairs (u1 = number 2i, u2 = number 2i+1):
//     z_2i = r cos(2 pi u2), z_2i+1 = r sin(2 pi u2), r = sqrt(-2 ln u1) (Box & Muller 1958);
//     an odd count draws one more uniform and drops the last normal.
//   randint in [low, high): x = ((w0 >> 1) << 32) | w1 (63 bits from words 0 and 1),
//     low + x mod (high - low); the bias is below (high - low) / 2^63.
//   bernoulli(p): uniform from word 0 < p (exactly p = 0 -> never, p = 1 -> always).
//
// Arguments: `epochs` and `indices` are int64 tensors [N] on one device (epochs may differ per
// sample: a batch may span an epoch boundary); the result is on that device, [N, ...]. The
// same (seed, stream, epoch, index) yields the same bits, uniforms, integers and coin flips on
// CPU and CUDA, in any batch layout. Normals also do not depend on the batch layout; between
// CPU and CUDA they can differ in the last float64 ulp (log/cos/sin are the devices' own), which
// almost never survives the cast to float32.
// Every function validates the value ranges, which reads the tensors back (one device sync on
// CUDA). Functions block only as the tensor ops they launch do. Thread-safe (no state).

// Raw words: int64 [N, n] holding uint32 values.
at::Tensor keyed_bits(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                      const at::Tensor& indices, int64_t n);
at::Tensor keyed_bits(uint64_t seed, uint32_t stream, int64_t epoch, const at::Tensor& indices,
                      int64_t n);

// Uniform in (0, 1), shape [N, sample_shape...], dtype from `opts` (float64 when unset; the
// device is that of `indices`, moved to opts' device when opts names one).
at::Tensor keyed_uniform(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                         const at::Tensor& indices, at::IntArrayRef sample_shape,
                         at::TensorOptions opts = {});
at::Tensor keyed_uniform(uint64_t seed, uint32_t stream, int64_t epoch, const at::Tensor& indices,
                         at::IntArrayRef sample_shape, at::TensorOptions opts = {});

// Standard normal, shape [N, sample_shape...], same dtype/device rules as keyed_uniform.
at::Tensor keyed_normal(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                        const at::Tensor& indices, at::IntArrayRef sample_shape,
                        at::TensorOptions opts = {});
at::Tensor keyed_normal(uint64_t seed, uint32_t stream, int64_t epoch, const at::Tensor& indices,
                        at::IntArrayRef sample_shape, at::TensorOptions opts = {});

// One integer per sample in [low, high): int64 [N]. Requires high > low.
at::Tensor keyed_randint(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                         const at::Tensor& indices, int64_t low, int64_t high);
at::Tensor keyed_randint(uint64_t seed, uint32_t stream, int64_t epoch, const at::Tensor& indices,
                         int64_t low, int64_t high);

// One Bernoulli(p) per sample: bool [N]. Requires 0 <= p <= 1.
at::Tensor keyed_bernoulli(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                           const at::Tensor& indices, double p);
at::Tensor keyed_bernoulli(uint64_t seed, uint32_t stream, int64_t epoch,
                           const at::Tensor& indices, double p);

// Philox4x32-10 on tensors: `counter` int64 [M, 4] holding uint32 values, any device; returns
// int64 [M, 4]. Equals lf::philox4x32_10 word for word. Exposed for tests and for data/.
at::Tensor philox4x32_10_tensor(const at::Tensor& counter, uint32_t key0, uint32_t key1);

}  // namespace lf::core
