// Philox4x32-10 with ATen integer ops (so CPU and CUDA draw identical bits) and the keyed
// layout, uniforms, normals, integers and coin flips built on it (layout: keyed_rng.h).
#include "core/keyed_rng.h"

#include <cmath>
#include <limits>

#include "core/util/strings.h"

namespace lf::core {
namespace {

constexpr int64_t kMask16 = 0xffff;
constexpr int64_t kMask32 = 0xffffffffLL;
constexpr int64_t kIndexLimit = int64_t{1} << 48;
constexpr int64_t kEpochLimit = int64_t{1} << 32;
constexpr int64_t kMaxNumbers = int64_t{1} << 34;
// Random123's philox4x32 multipliers and Weyl key increments.
constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
constexpr double kTwoPi = 6.283185307179586;  // 2 pi rounded to float64, as Python's 2 * math.pi

// Ten rounds on the state split in two: `a` = rows (c0, c2), the words that get multiplied,
// and `b` = rows (c3, c1), each row of `b` facing the row of `a` whose high product it meets
// in Random123's update (c0, c1, c2, c3) <- (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1,
// lo(M0 c0)). Both int64 [2, M] holding uint32 values; on return they hold the output in the
// same row order. The 32x32->64 products split the constant M = mh 2^16 + ml so that every
// intermediate stays below 2^49 (no signed overflow): p1 = a ml < 2^48, p2 = a mh < 2^48,
// t = p2 + (p1 >> 16), hi32 = t >> 16, lo32 = (t & 0xffff) << 16 | (p1 & 0xffff).
void philox_rounds(at::Tensor& a, at::Tensor& b, uint32_t key0, uint32_t key1) {
  auto constant = [&](uint32_t for_c0, uint32_t for_c2) {
    return at::tensor(std::vector<int64_t>{for_c0, for_c2}, a.options().device(at::kCPU))
        .view({2, 1})
        .to(a.device());
  };
  const auto m_lo = constant(kM0 & 0xffffu, kM1 & 0xffffu), m_hi = constant(kM0 >> 16, kM1 >> 16);
  at::Tensor p1 = at::empty_like(a), p2 = at::empty_like(a), tmp = at::empty_like(a);
  for (int round = 0; round < 10; ++round) {
    at::mul_out(p1, a, m_lo);
    at::mul_out(p2, a, m_hi);
    p2.add_(at::bitwise_right_shift_out(tmp, p1, 16));  // t
    at::bitwise_and_out(tmp, p2, kMask16).bitwise_left_shift_(16);
    p1.bitwise_and_(kMask16).bitwise_or_(tmp);  // lo rows: (lo(M0 c0), lo(M1 c2)) = (c3', c1')
    p2.bitwise_right_shift_(16).bitwise_xor_(b);  // (hi(M0 c0) ^ c3, hi(M1 c2) ^ c1)
    at::Tensor a0 = a.select(0, 0), a1 = a.select(0, 1);
    at::bitwise_xor_out(a0, p2.select(0, 1), static_cast<int64_t>(key0));  // c0'
    at::bitwise_xor_out(a1, p2.select(0, 0), static_cast<int64_t>(key1));  // c2'
    std::swap(b, p1);  // b <- (c3', c1'); the old b becomes scratch
    key0 += kW0;  // wraps mod 2^32 as in Random123
    key1 += kW1;
  }
}

void check_index_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, "keyed_rng: ", name, " must be int64, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1, "keyed_rng: ", name, " must be 1-D [N], got shape ", t.sizes());
}

// Checks shapes, dtypes, devices and value ranges (one read-back for both tensors).
void check_inputs(uint32_t stream, const at::Tensor& epochs, const at::Tensor& indices,
                  int64_t n) {
  check_index_tensor(epochs, "epochs");
  check_index_tensor(indices, "indices");
  TORCH_CHECK(epochs.size(0) == indices.size(0), "keyed_rng: epochs has ", epochs.size(0),
              " entries but indices has ", indices.size(0), "; give one epoch per sample");
  TORCH_CHECK(epochs.device() == indices.device(), "keyed_rng: epochs is on ", epochs.device(),
              " but indices is on ", indices.device());
  TORCH_CHECK(stream < (1u << 16), "keyed_rng: stream ", stream,
              " does not fit the 16 bits the layout gives it");
  TORCH_CHECK(n >= 0 && n < kMaxNumbers, "keyed_rng: numbers per sample n = ", n,
              " is outside [0, 2^34)");
  if (indices.numel() == 0) return;
  auto bad = at::stack({at::logical_or(indices < 0, indices >= kIndexLimit).any(),
                        at::logical_or(epochs < 0, epochs >= kEpochLimit).any()})
                 .cpu();
  auto* flags = bad.data_ptr<bool>();
  if (flags[0]) {
    TORCH_CHECK(false, "keyed_rng: indices must lie in [0, 2^48), found min ",
                indices.min().item<int64_t>(), " max ", indices.max().item<int64_t>());
  }
  if (flags[1]) {
    TORCH_CHECK(false, "keyed_rng: epochs must lie in [0, 2^32), found min ",
                epochs.min().item<int64_t>(), " max ", epochs.max().item<int64_t>());
  }
}

at::Tensor epochs_like(int64_t epoch, const at::Tensor& indices) {
  return at::full({indices.numel()}, epoch, indices.options().dtype(at::kLong));
}

int64_t checked_numel(at::IntArrayRef sample_shape) {
  int64_t n = 1;
  for (int64_t d : sample_shape) {
    TORCH_CHECK(d >= 0, "keyed_rng: sample_shape ", sample_shape, " has a negative size");
    n *= d;
  }
  return n;
}

std::vector<int64_t> result_shape(int64_t batch, at::IntArrayRef sample_shape) {
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  return shape;
}

// The Philox output for `blocks` = ceil(n / 4) counters per sample, as int64 [2, N, blocks]:
// a = words (c0, c2), b = words (c3, c1) of each block (the row order philox_rounds keeps).
struct Blocks {
  at::Tensor a, b;
};

Blocks keyed_blocks(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                    const at::Tensor& indices, int64_t n) {
  check_inputs(stream, epochs, indices, n);
  const int64_t batch = indices.size(0), blocks = (n + 3) / 4;
  auto opts = indices.options();
  // The counter of the layout in the header.
  at::Tensor a = at::empty({2, batch, blocks}, opts), b = at::empty({2, batch, blocks}, opts);
  a[0].copy_(at::arange(blocks, opts).unsqueeze(0).expand({batch, blocks}));
  a[1].copy_(epochs.unsqueeze(1).expand({batch, blocks}));
  b[1].copy_(at::bitwise_and(indices, kMask32).unsqueeze(1).expand({batch, blocks}));
  auto c3 = at::bitwise_right_shift(indices, 32)
                .bitwise_and_(kMask16)
                .bitwise_left_shift_(16)
                .bitwise_or_(static_cast<int64_t>(stream));
  b[0].copy_(c3.unsqueeze(1).expand({batch, blocks}));
  at::Tensor a_flat = a.view({2, batch * blocks}), b_flat = b.view({2, batch * blocks});
  philox_rounds(a_flat, b_flat, static_cast<uint32_t>(seed & kMask32),
                static_cast<uint32_t>(seed >> 32));
  return {a_flat.view({2, batch, blocks}), b_flat.view({2, batch, blocks})};
}

// float64 (bits + 0.5) * scale: uniforms for scale 2^-32, exact in float64.
at::Tensor to_unit(const at::Tensor& bits, double scale) {
  return bits.to(at::kDouble).add_(0.5).mul_(scale);
}

// float64 [N, n] uniforms in (0, 1): (bits + 0.5) * 2^-32, exact in float64.
at::Tensor uniform64(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                     const at::Tensor& indices, int64_t n) {
  return to_unit(keyed_bits(seed, stream, epochs, indices, n), std::ldexp(1.0, -32));
}

// Casts float64 values to opts' dtype/device; uniforms are kept below 1 after rounding.
at::Tensor finish(at::Tensor x, at::TensorOptions opts, bool keep_below_one) {
  auto dtype = opts.has_dtype() ? opts.dtype().toScalarType() : at::kDouble;
  TORCH_CHECK(at::isFloatingType(dtype), "keyed_rng: the requested dtype ", dtype,
              " is not a floating type");
  if (dtype != at::kDouble) {
    if (keep_below_one) {
      // 1 - eps/2 is the largest value below 1 in a binary float with machine epsilon eps;
      // clamping in float64 first works for every dtype since rounding is monotonic.
      double eps = dtype == at::kFloat      ? std::numeric_limits<float>::epsilon()
                   : dtype == at::kHalf     ? std::ldexp(1.0, -10)
                   : dtype == at::kBFloat16 ? std::ldexp(1.0, -7)
                                            : std::numeric_limits<double>::epsilon();
      x.clamp_max_(1.0 - eps / 2);
    }
    x = x.to(dtype);
  }
  if (opts.has_device() && opts.device() != x.device()) x = x.to(opts.device());
  return x;
}

}  // namespace

at::Tensor philox4x32_10_tensor(const at::Tensor& counter, uint32_t key0, uint32_t key1) {
  TORCH_CHECK(counter.scalar_type() == at::kLong && counter.dim() == 2 && counter.size(1) == 4,
              "philox4x32_10_tensor: counter must be int64 [M, 4], got ", counter.scalar_type(),
              " ", counter.sizes());
  TORCH_CHECK(counter.numel() == 0 || at::logical_and(counter >= 0, counter <= kMask32)
                                          .all()
                                          .item<bool>(),
              "philox4x32_10_tensor: counter words must lie in [0, 2^32)");
  auto t = counter.t();  // [4, M]: rows c0..c3
  at::Tensor a = at::stack({t[0], t[2]}), b = at::stack({t[3], t[1]});
  philox_rounds(a, b, key0, key1);
  return at::stack({a[0], b[1], a[1], b[0]}, 1);
}

at::Tensor keyed_bits(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                      const at::Tensor& indices, int64_t n) {
  auto blocks = keyed_blocks(seed, stream, epochs, indices, n);
  const int64_t batch = indices.size(0), words = blocks.a.size(2) * 4;
  // Words of block j in order (c0, c1, c2, c3) = (a0, b1, a1, b0).
  auto out = at::stack({blocks.a[0], blocks.b[1], blocks.a[1], blocks.b[0]}, 2).view({batch, words});
  return words == n ? out : out.narrow(1, 0, n).contiguous();
}

at::Tensor keyed_bits(uint64_t seed, uint32_t stream, int64_t epoch, const at::Tensor& indices,
                      int64_t n) {
  check_index_tensor(indices, "indices");
  return keyed_bits(seed, stream, epochs_like(epoch, indices), indices, n);
}

at::Tensor keyed_uniform(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                         const at::Tensor& indices, at::IntArrayRef sample_shape,
                         at::TensorOptions opts) {
  const int64_t n = checked_numel(sample_shape);
  auto u = uniform64(seed, stream, epochs, indices, n);
  return finish(u.view(result_shape(indices.size(0), sample_shape)), opts, true);
}

at::Tensor keyed_uniform(uint64_t seed, uint32_t stream, int64_t epoch, const at::Tensor& indices,
                         at::IntArrayRef sample_shape, at::TensorOptions opts) {
  check_index_tensor(indices, "indices");
  return keyed_uniform(seed, stream, epochs_like(epoch, indices), indices, sample_shape, opts);
}

at::Tensor keyed_normal(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                        const at::Tensor& indices, at::IntArrayRef sample_shape,
                        at::TensorOptions opts) {
  const int64_t n = checked_numel(sample_shape), batch = indices.size(0);
  auto dtype = opts.has_dtype() ? opts.dtype().toScalarType() : at::kDouble;
  TORCH_CHECK(at::isFloatingType(dtype), "keyed_normal: the requested dtype ", dtype,
              " is not a floating type");
  // Box & Muller (1958) on the pairs (u1, u2) = numbers (2i, 2i+1), i.e. words (c0, c1) and
  // (c2, c3) of each block: z = r (cos 2 pi u2, sin 2 pi u2), r = sqrt(-2 ln u1). Computed on
  // the Philox rows directly (u1 from a = (c0, c2), u2 from b = (c3, c1)) to avoid copies.
  auto blocks = keyed_blocks(seed, stream, epochs, indices, n + (n % 2));
  auto r = to_unit(blocks.a, std::ldexp(1.0, -32)).log_().mul_(-2.0).sqrt_();
  // (b + 0.5) (2 pi 2^-32) rounds exactly as ((b + 0.5) 2^-32) 2 pi: the scale is a power of 2.
  auto theta = to_unit(blocks.b, std::ldexp(kTwoPi, -32));
  auto cos_theta = theta.cos();
  auto& sin_theta = theta.sin_();
  const int64_t nb = blocks.a.size(2);
  // Products in float64, rounded once to the output dtype on store.
  auto z = at::empty({batch, nb, 4}, blocks.a.options().dtype(dtype));
  at::Tensor z0 = z.select(2, 0), z1 = z.select(2, 1), z2 = z.select(2, 2), z3 = z.select(2, 3);
  at::mul_out(z0, r[0], cos_theta[1]);
  at::mul_out(z1, r[0], sin_theta[1]);
  at::mul_out(z2, r[1], cos_theta[0]);
  at::mul_out(z3, r[1], sin_theta[0]);
  auto flat = z.view({batch, nb * 4});
  if (nb * 4 != n) flat = flat.narrow(1, 0, n).contiguous();
  return finish(flat.view(result_shape(batch, sample_shape)), opts, false);
}

at::Tensor keyed_normal(uint64_t seed, uint32_t stream, int64_t epoch, const at::Tensor& indices,
                        at::IntArrayRef sample_shape, at::TensorOptions opts) {
  check_index_tensor(indices, "indices");
  return keyed_normal(seed, stream, epochs_like(epoch, indices), indices, sample_shape, opts);
}

at::Tensor keyed_randint(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                         const at::Tensor& indices, int64_t low, int64_t high) {
  TORCH_CHECK(high > low, "keyed_randint: high (", high, ") must be greater than low (", low,
              ")");
  // high - low computed without signed overflow; it must fit in int64 for the modulo.
  const uint64_t range = static_cast<uint64_t>(high) - static_cast<uint64_t>(low);
  TORCH_CHECK(range <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
              "keyed_randint: the range [", low, ", ", high, ") is wider than 2^63 - 1");
  auto w = keyed_bits(seed, stream, epochs, indices, 2);
  auto x = at::bitwise_right_shift(w.select(1, 0), 1)
               .bitwise_left_shift_(32)
               .bitwise_or_(w.select(1, 1));  // 63 bits, < 2^63
  return x.remainder_(static_cast<int64_t>(range)).add_(low);
}

at::Tensor keyed_randint(uint64_t seed, uint32_t stream, int64_t epoch, const at::Tensor& indices,
                         int64_t low, int64_t high) {
  check_index_tensor(indices, "indices");
  return keyed_randint(seed, stream, epochs_like(epoch, indices), indices, low, high);
}

at::Tensor keyed_bernoulli(uint64_t seed, uint32_t stream, const at::Tensor& epochs,
                           const at::Tensor& indices, double p) {
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "keyed_bernoulli: p = ", p, " must lie in [0, 1]");
  return uniform64(seed, stream, epochs, indices, 1).select(1, 0) < p;
}

at::Tensor keyed_bernoulli(uint64_t seed, uint32_t stream, int64_t epoch,
                           const at::Tensor& indices, double p) {
  check_index_tensor(indices, "indices");
  return keyed_bernoulli(seed, stream, epochs_like(epoch, indices), indices, p);
}

}  // namespace lf::core
