// Overflow-checked arithmetic and integer parsing for sizes read from untrusted files (DESIGN
// invariant 5: parsers bound every size before allocating). Nothing here throws: callers turn
// a false result into an error that names their file and field.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lf {

// *out = a * b; false (and *out unspecified) when the product does not fit.
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }
inline bool checked_add(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }
inline bool checked_add(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }

// The product of `dims` when every entry is in [0, limit] and the product is <= limit, else
// false. limit <= INT64_MAX. Used for element and byte counts of shapes from a header.
bool bounded_product(const std::vector<int64_t>& dims, int64_t limit, int64_t* out);
bool bounded_product(const std::vector<uint64_t>& dims, uint64_t limit, uint64_t* out);

// Parses the whole of `text` as a decimal integer in [lo, hi] (an optional leading '-', then
// digits only: no spaces, no '+', no hex). False for anything else, including values that do
// not fit in int64 (where std::stoll would throw std::out_of_range).
bool parse_int64(const std::string& text, int64_t lo, int64_t hi, int64_t* out);

}  // namespace lf
