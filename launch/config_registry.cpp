// Config key registry: typed conversion and range checks with messages that name the key,
// the value, its origin and the allowed range (see config_registry.h).
#include "launch/config_registry.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/util/strings.h"

namespace lf::launch {

namespace {

std::string where(const std::string& origin) { return origin.empty() ? "" : str(" (from ", origin, ")"); }

bool parse_int(const std::string& s, int64_t* out) {
  std::string t = trim(s);
  if (t.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(t.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') {
    // Accept integral scientific notation such as 1e6.
    errno = 0;
    double d = std::strtod(t.c_str(), &end);
    if (errno != 0 || *end != '\0' || d != std::floor(d) || std::fabs(d) > 9.2e18) return false;
    *out = static_cast<int64_t>(d);
    return true;
  }
  *out = v;
  return true;
}

bool parse_double(const std::string& s, double* out) {
  std::string t = trim(s);
  if (t.empty()) return false;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(t.c_str(), &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

}  // namespace

std::string format_float(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string ConfigRegistry::join_choices(const std::vector<std::string>& names) {
  return join(names, "|");
}

void ConfigRegistry::add_custom(const std::string& key, const std::string& type,
                                const std::string& range, const std::string& default_value,
                                const std::string& doc, std::function<void(const std::string&)> set,
                                std::function<std::string()> get) {
  if (entries_.count(key)) throw std::logic_error("config key registered twice: " + key);
  entries_[key] = Entry{KeyInfo{key, type, range, default_value, doc}, std::move(set), std::move(get)};
  order_.push_back(key);
}

void ConfigRegistry::add_int(const std::string& key, int64_t* field, int64_t lo, int64_t hi,
                             const std::string& doc) {
  std::string range = str("[", lo, ", ", hi, "]");
  add_custom(key, "int", range, std::to_string(*field), doc,
             [=](const std::string& value) {
               int64_t v;
               if (!parse_int(value, &v)) throw UsageError(str(key, " = '", value, "': expected an integer in ", range));
               if (v < lo || v > hi)
                 throw UsageError(str(key, " = ", v, ": out of range; allowed ", range));
               *field = v;
             },
             [field]() { return std::to_string(*field); });
}

void ConfigRegistry::add_float(const std::string& key, double* field, double lo, double hi,
                               const std::string& doc) {
  std::string range = str("[", format_float(lo), ", ", format_float(hi), "]");
  add_custom(key, "float", range, format_float(*field), doc,
             [=](const std::string& value) {
               double v;
               if (!parse_double(value, &v))
                 throw UsageError(str(key, " = '", value, "': expected a number in ", range));
               if (v < lo || v > hi)
                 throw UsageError(str(key, " = ", value, ": out of range; allowed ", range));
               *field = v;
             },
             [field]() { return format_float(*field); });
}

void ConfigRegistry::add_bool(const std::string& key, bool* field, const std::string& doc) {
  add_custom(key, "bool", "true|false", *field ? "true" : "false", doc,
             [=](const std::string& value) {
               std::string v = trim(value);
               if (v == "true" || v == "1" || v == "yes" || v == "on") {
                 *field = true;
               } else if (v == "false" || v == "0" || v == "no" || v == "off") {
                 *field = false;
               } else {
                 throw UsageError(str(key, " = '", value, "': expected true or false"));
               }
             },
             [field]() { return std::string(*field ? "true" : "false"); });
}

void ConfigRegistry::add_string(const std::string& key, std::string* field, const std::string& doc) {
  add_custom(key, "string", "", *field, doc, [field](const std::string& v) { *field = trim(v); },
             [field]() { return *field; });
}

void ConfigRegistry::add_path(const std::string& key, std::string* field, const std::string& doc) {
  add_custom(key, "path", "", *field, doc, [field](const std::string& v) { *field = trim(v); },
             [field]() { return *field; });
}

void ConfigRegistry::add_choice(const std::string& key, std::string* field,
                                std::vector<std::string> choices, const std::string& doc) {
  add_custom(key, "choice", join_choices(choices), *field, doc,
             [=](const std::string& value) {
               std::string v = trim(value);
               for (const auto& c : choices)
                 if (c == v) {
                   *field = v;
                   return;
                 }
               throw UsageError(bad_choice_message(key, v, choices));
             },
             [field]() { return *field; });
}

void ConfigRegistry::add_int_list(const std::string& key, std::vector<int64_t>* field, int64_t lo,
                                  int64_t hi, size_t min_len, size_t max_len, const std::string& doc) {
  std::vector<std::string> parts;
  for (auto v : *field) parts.push_back(std::to_string(v));
  std::string range = str(min_len, "..", max_len, " comma-separated integers in [", lo, ", ", hi, "]");
  add_custom(key, "int list", range, join(parts, ","), doc,
             [=](const std::string& value) {
               std::vector<int64_t> out;
               std::string t = trim(value);
               if (!t.empty()) {
                 for (const auto& p : split(t, ',')) {
                   int64_t v;
                   if (!parse_int(p, &v))
                     throw UsageError(str(key, " = '", value, "': '", trim(p), "' is not an integer; expected ", range));
                   if (v < lo || v > hi)
                     throw UsageError(str(key, " = '", value, "': ", v, " is out of range; expected ", range));
                   out.push_back(v);
                 }
               }
               if (out.size() < min_len || out.size() > max_len)
                 throw UsageError(str(key, " = '", value, "': ", out.size(), " values; expected ", range));
               *field = out;
             },
             [field]() {
               std::vector<std::string> ps;
               for (auto v : *field) ps.push_back(std::to_string(v));
               return join(ps, ",");
             });
}

void ConfigRegistry::set(const std::string& key, const std::string& value, const std::string& origin) {
  auto it = entries_.find(key);
  if (it == entries_.end()) throw UsageError(unknown_key_message(key, origin));
  try {
    it->second.set(value);
  } catch (const UsageError& e) {
    throw UsageError(str(e.what(), where(origin)));
  }
}

std::string ConfigRegistry::get(const std::string& key) const {
  auto it = entries_.find(key);
  if (it == entries_.end()) throw std::logic_error("unregistered config key " + key);
  return it->second.get();
}

std::string ConfigRegistry::unknown_key_message(const std::string& key, const std::string& origin) const {
  std::string hint = closest_match(key, order_);
  return str("unknown config key '", key, "'", where(origin),
             hint.empty() ? "; see `latentforge <subcommand> --help` for the keys"
                          : str("; did you mean '", hint, "'?"));
}

std::string ConfigRegistry::to_ini(const std::vector<std::string>& keys) const {
  std::string out, current;
  for (const auto& key : order_) {
    auto dot = key.find('.');
    std::string section = key.substr(0, dot);
    if (!keys.empty() && std::find(keys.begin(), keys.end(), key) == keys.end()) continue;
    if (section != current) {
      out += str(out.empty() ? "" : "\n", "[", section, "]\n");
      current = section;
    }
    out += str(key.substr(dot + 1), " = ", entries_.at(key).get(), "\n");
  }
  return out;
}

nlohmann::json ConfigRegistry::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& key : order_) j[key] = entries_.at(key).get();
  return j;
}

}  // namespace lf::launch
