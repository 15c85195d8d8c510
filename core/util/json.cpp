// Bounded JSON parsing and typed field access (see json.h).
#include "core/util/json.h"

#include <cmath>
#include <set>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf {

using nlohmann::json;

void throw_error(ErrorKind kind, const std::string& message) {
  if (kind == ErrorKind::kBadInput) throw std::invalid_argument(message);
  throw std::runtime_error(message);
}

json parse_json(const std::string& text, const std::string& source, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes)
    throw_error(limits.error, str(source, ": ", text.size(), " bytes of JSON, more than the limit of ",
                                  limits.max_bytes));
  // The callback parser reports every object and array as it opens, with its depth (the
  // parser itself keeps an explicit stack), so a deep document is refused at max_depth, before
  // any recursive code sees it. The keys seen in each open object detect duplicates.
  std::vector<std::set<std::string>> keys;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= limits.max_depth)
          throw_error(limits.error, str(source, ": JSON nested deeper than ", limits.max_depth,
                                        " levels; not a file this program wrote"));
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        keys.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!keys.empty() && !keys.back().insert(k).second)
          throw_error(limits.error, str(source, ": JSON object names the key \"", excerpt(k),
                                        "\" twice"));
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text, callback);
  } catch (const json::exception& e) {
    throw_error(limits.error, str(source, ": not valid JSON (", excerpt(e.what(), 200), ")"));
  }
}

std::string json_excerpt(const json& v, size_t max_chars) {
  return excerpt(v.dump(-1, ' ', false, json::error_handler_t::replace), max_chars);
}

json valid_utf8(const json& v) {
  return json::parse(v.dump(-1, ' ', false, json::error_handler_t::replace));
}

std::string json_type_phrase(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    default: return "a binary value";
  }
}

JsonFields::JsonFields(const json& object, std::string source, std::string path, ErrorKind kind)
    : object_(object), source_(std::move(source)), path_(std::move(path)), kind_(kind) {
  if (!object_.is_object())
    throw_error(kind_, str(source_, ": ", path_.empty() ? std::string("the document")
                                                        : "field '" + path_ + "'",
                           " is ", json_type_phrase(object_), " (", json_excerpt(object_),
                           "), expected an object"));
}

std::string JsonFields::path_of(const std::string& key) const {
  return path_.empty() ? excerpt(key) : path_ + "." + excerpt(key);
}

void JsonFields::fail(const std::string& key, const std::string& what) const {
  throw_error(kind_, str(source_, ": field '", path_of(key), "' ", what));
}

void JsonFields::wrong(const std::string& key, const json& v, const std::string& expected) const {
  fail(key, str("is ", json_type_phrase(v), " (", json_excerpt(v), "), expected ", expected));
}

const json& JsonFields::value(const std::string& key) const {
  auto it = object_.find(key);
  if (it == object_.end()) fail(key, "is missing");
  return *it;
}

std::string JsonFields::string(const std::string& key, size_t max_len) const {
  const json& v = value(key);
  if (!v.is_string()) wrong(key, v, "a string");
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() > max_len)
    fail(key, str("is a string of ", s.size(), " bytes, expected at most ", max_len));
  return s;
}

namespace {

// The integer in `v`, or false when it is not an integer that fits int64.
bool as_int64(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    *out = v.get<int64_t>();
    return true;
  }
  return false;
}

}  // namespace

int64_t JsonFields::integer(const std::string& key, int64_t lo, int64_t hi) const {
  const json& v = value(key);
  int64_t out = 0;
  if (!as_int64(v, &out)) wrong(key, v, str("an integer in [", lo, ", ", hi, "]"));
  if (out < lo || out > hi) fail(key, str("is ", out, ", expected an integer in [", lo, ", ", hi, "]"));
  return out;
}

double JsonFields::number(const std::string& key) const {
  const json& v = value(key);
  if (!v.is_number()) wrong(key, v, "a number");
  const double d = v.get<double>();
  if (!std::isfinite(d)) fail(key, str("is ", d, ", expected a finite number"));
  return d;
}

bool JsonFields::boolean(const std::string& key) const {
  const json& v = value(key);
  if (!v.is_boolean()) wrong(key, v, "true or false");
  return v.get<bool>();
}

const json& JsonFields::array(const std::string& key, size_t max_count) const {
  const json& v = value(key);
  if (!v.is_array()) wrong(key, v, str("an array of at most ", max_count, " entries"));
  if (v.size() > max_count)
    fail(key, str("has ", v.size(), " entries, expected at most ", max_count));
  return v;
}

std::vector<int64_t> JsonFields::integers(const std::string& key, size_t max_count, int64_t lo,
                                          int64_t hi) const {
  const json& a = array(key, max_count);
  std::vector<int64_t> out;
  for (size_t i = 0; i < a.size(); ++i) {
    int64_t x = 0;
    if (!as_int64(a[i], &x) || x < lo || x > hi)
      fail(key, str("has entry ", i, " = ", json_excerpt(a[i]), ", expected an integer in [", lo,
                    ", ", hi, "]"));
    out.push_back(x);
  }
  return out;
}

std::vector<double> JsonFields::numbers(const std::string& key, size_t max_count) const {
  const json& a = array(key, max_count);
  std::vector<double> out;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_number() || !std::isfinite(a[i].get<double>()))
      fail(key, str("has entry ", i, " = ", json_excerpt(a[i]), ", expected a finite number"));
    out.push_back(a[i].get<double>());
  }
  return out;
}

std::vector<std::string> JsonFields::strings(const std::string& key, size_t max_count,
                                             size_t max_len) const {
  const json& a = array(key, max_count);
  std::vector<std::string> out;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_string() || a[i].get_ref<const std::string&>().size() > max_len)
      fail(key, str("has entry ", i, " = ", json_excerpt(a[i]), ", expected a string of at most ",
                    max_len, " bytes"));
    out.push_back(a[i].get<std::string>());
  }
  return out;
}

JsonFields JsonFields::object(const std::string& key) const {
  return JsonFields(value(key), source_, path_of(key), kind_);
}

JsonFields JsonFields::element(const std::string& key, size_t i) const {
  const json& a = value(key);
  if (!a.is_array() || i >= a.size()) fail(key, str("has no entry ", i));
  return JsonFields(a[i], source_, str(path_of(key), "[", i, "]"), kind_);
}

}  // namespace lf
