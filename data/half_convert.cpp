// Half -> float conversion (see half_convert.h).
#include "data/half_convert.h"

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define LF_HAVE_X86 1
#endif

namespace lf::data {

float half_to_float_scalar(uint16_t h) {
  // IEEE 754-2008 binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    // Zero or subnormal: man * 2^-24, exact in float.
    float f = static_cast<float>(man) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (man << 13);  // inf, or NaN keeping its payload
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);  // rebias 15 -> 127
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

#ifdef LF_HAVE_X86
namespace {

__attribute__((target("avx,f16c"))) void half_to_float_f16c(const uint16_t* src, float* dst,
                                                            int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < n; ++i) dst[i] = half_to_float_scalar(src[i]);
}

// F16C (CPUID.1:ECX bit 29) plus AVX enabled by the OS (OSXSAVE and XCR0 saving YMM state).
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool f16c = c & (1u << 29), avx = c & (1u << 28), osxsave = c & (1u << 27);
  if (!(f16c && avx && osxsave)) return false;
  unsigned lo = 0, hi = 0;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 6u) == 6u;
}

}  // namespace
#endif

void half_to_float(const uint16_t* src, float* dst, int64_t n) {
#ifdef LF_HAVE_X86
  static const bool f16c = cpu_has_f16c();
  if (f16c) {
    half_to_float_f16c(src, dst, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float_scalar(src[i]);
}

}  // namespace lf::data
