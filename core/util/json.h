// JSON from untrusted files: one bounded parse (size, nesting depth, duplicate keys) that every
// JSON reader uses, typed field access whose errors name the file, the field and the expected
// type, and short excerpts of values for messages. docs/fuzzing.md states the policy.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lf {

// Which exception a reader's errors are: std::invalid_argument (bad input, exit 2) or
// std::runtime_error (a damaged file of the environment, exit 1). Readers keep the kind they
// documented before; the messages are the same either way.
enum class ErrorKind { kBadInput, kEnvironment };
[[noreturn]] void throw_error(ErrorKind kind, const std::string& message);

struct JsonLimits {
  size_t max_bytes = size_t{256} << 20;
  // Deeper documents are refused before they are built: the parsed value is copied, compared
  // and dumped by recursive code, which a document nested 100,000 levels deep overflows.
  int max_depth = 64;
  ErrorKind error = ErrorKind::kBadInput;
};

// Parses `text` as one JSON document. Throws (limits.error) "<source>: ..." for invalid JSON
// (the parser's reason, shortened), a document larger than max_bytes or nested deeper than
// max_depth, and an object that names a key twice (JSON leaves that undefined; nlohmann keeps the
// last, so a second "weight" would silently win).
nlohmann::json parse_json(const std::string& text, const std::string& source,
                          const JsonLimits& limits = {});

// `v` as compact JSON, shortened to about max_chars for a message.
std::string json_excerpt(const nlohmann::json& v, size_t max_chars = 80);

// `v` with every invalid UTF-8 sequence in its strings and keys replaced by U+FFFD. JSON holds
// UTF-8 only (nlohmann's dump throws on anything else), but paths are arbitrary bytes.
nlohmann::json valid_utf8(const nlohmann::json& v);

// "a string", "an integer", "an array"... for messages.
std::string json_type_phrase(const nlohmann::json& v);

// Typed access to the fields of one JSON object read from `source`. Every accessor checks
// presence, type and range and throws (kind) "<source>: field '<path>' is <found>, expected
// <what>", where <path> is the dotted path from the document's root ("vae.sha256",
// "shards[3].count"). Holds references: `object` must outlive this.
class JsonFields {
 public:
  // Throws when `object` is not an object (naming `path`, or "the document" when empty).
  JsonFields(const nlohmann::json& object, std::string source, std::string path = "",
             ErrorKind kind = ErrorKind::kBadInput);

  bool has(const std::string& key) const { return object_.contains(key); }
  // Any type, but present.
  const nlohmann::json& value(const std::string& key) const;
  std::string string(const std::string& key, size_t max_len = 4096) const;
  int64_t integer(const std::string& key, int64_t lo = std::numeric_limits<int64_t>::min(),
                  int64_t hi = std::numeric_limits<int64_t>::max()) const;
  double number(const std::string& key) const;  // finite
  bool boolean(const std::string& key) const;
  std::vector<int64_t> integers(const std::string& key, size_t max_count, int64_t lo,
                                int64_t hi) const;
  std::vector<double> numbers(const std::string& key, size_t max_count) const;
  std::vector<std::string> strings(const std::string& key, size_t max_count,
                                   size_t max_len = 4096) const;
  const nlohmann::json& array(const std::string& key, size_t max_count) const;
  JsonFields object(const std::string& key) const;
  // Element i of array field `key` as an object ("shards[3]").
  JsonFields element(const std::string& key, size_t i) const;

  // The dotted path of `key` below this object.
  std::string path_of(const std::string& key) const;
  const std::string& source() const { return source_; }
  ErrorKind kind() const { return kind_; }
  // Throws "<source>: field '<path of key>' <what>".
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;

 private:
  [[noreturn]] void wrong(const std::string& key, const nlohmann::json& v,
                          const std::string& expected) const;
  const nlohmann::json& object_;
  std::string source_, path_;
  ErrorKind kind_;
};

}  // namespace lf
