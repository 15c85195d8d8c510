// String helpers used by error messages everywhere: concatenation of anything streamable,
// short hex, human-readable sizes, the closest match among candidates (for "did you mean") and
// excerpts of untrusted text.
#pragma once
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace lf {

// str(a, b, c...) concatenates anything with operator<<.
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// Levenshtein distance; used to suggest the closest valid key or name.
size_t edit_distance(const std::string& a, const std::string& b);

// The candidate closest to `word`, or "" when none is reasonably close.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

// "12.3 MB", "512 B"...
std::string human_bytes(double bytes);

// "1h02m", "3m05s", "12s".
std::string human_duration(double seconds);

// Untrusted text (a value from a file, a key, a path) made safe to put in a message: control
// characters as \xNN, cut to about `max_chars` at a UTF-8 character boundary with a note of the
// full length. Every message that quotes input of unbounded size goes through this.
std::string excerpt(const std::string& s, size_t max_chars = 80);

// The longest prefix of UTF-8 text `s` of at most `max_bytes` bytes that ends on a character
// boundary (never inside a multi-byte character).
std::string utf8_prefix(const std::string& s, size_t max_bytes);

std::vector<std::string> split(const std::string& s, char sep);
std::string trim(const std::string& s);
std::string join(const std::vector<std::string>& parts, const std::string& sep);

}  // namespace lf
