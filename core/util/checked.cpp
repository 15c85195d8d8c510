// Checked arithmetic and integer parsing (see checked.h).
#include "core/util/checked.h"

namespace lf {

bool bounded_product(const std::vector<int64_t>& dims, int64_t limit, int64_t* out) {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0 || d > limit || !checked_mul(n, d, &n) || n > limit) return false;
  }
  *out = n;
  return true;
}

bool bounded_product(const std::vector<uint64_t>& dims, uint64_t limit, uint64_t* out) {
  uint64_t n = 1;
  for (uint64_t d : dims) {
    if (d > limit || !checked_mul(n, d, &n) || n > limit) return false;
  }
  *out = n;
  return true;
}

bool parse_int64(const std::string& text, int64_t lo, int64_t hi, int64_t* out) {
  size_t i = 0;
  const bool negative = !text.empty() && text[0] == '-';
  if (negative) i = 1;
  if (i == text.size()) return false;
  // Accumulate as a negative number: its range includes INT64_MIN.
  int64_t v = 0;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c < '0' || c > '9') return false;
    if (!checked_mul(v, int64_t{10}, &v) || !checked_add(v, -int64_t(c - '0'), &v)) return false;
  }
  if (!negative) {
    if (v == INT64_MIN) return false;
    v = -v;
  }
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

}  // namespace lf
