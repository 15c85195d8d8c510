// The registry of config keys: every "section.key" a user can set in an INI file or as
// --section.key=value, bound to a typed field, with its default, allowed range and one-line
// doc. Parsing (Boost.Program_options) yields strings; this registry converts and validates
// them, so every error names the key, the value, where it came from and what is allowed.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/util/enum_table.h"

namespace lf::launch {

// A usage or config error: main() exits with code 2 for these (and for std::invalid_argument
// thrown while validating the config).
class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct KeyInfo {
  std::string key;      // "train.steps"
  std::string type;     // "int", "float", "bool", "string", "path", "choice", "int list"
  std::string range;    // "[1, 1000000000]", "linear|scaled_linear|cosine", ""
  std::string default_value;
  std::string doc;
};

class ConfigRegistry {
 public:
  // Typed bindings. The field's current value becomes the documented default.
  void add_int(const std::string& key, int64_t* field, int64_t lo, int64_t hi, const std::string& doc);
  void add_float(const std::string& key, double* field, double lo, double hi, const std::string& doc);
  void add_bool(const std::string& key, bool* field, const std::string& doc);
  void add_string(const std::string& key, std::string* field, const std::string& doc);
  void add_path(const std::string& key, std::string* field, const std::string& doc);
  void add_choice(const std::string& key, std::string* field, std::vector<std::string> choices,
                  const std::string& doc);
  void add_int_list(const std::string& key, std::vector<int64_t>* field, int64_t lo, int64_t hi,
                    size_t min_len, size_t max_len, const std::string& doc);
  // An enum, spelled as its table says (the table outlives the registry: tables are statics).
  template <class E>
  void add_enum(const std::string& key, E* field, const EnumTable<E>& table, const std::string& doc) {
    add_custom(key, "choice", join_choices(table.names()), table.name(*field), doc,
               [key, field, &table](const std::string& value) {
                 try {
                   *field = table.parse(value, key);
                 } catch (const std::invalid_argument& e) {
                   throw UsageError(e.what());
                 }
               },
               [field, &table]() { return table.name(*field); });
  }
  // The general form: set parses and stores (throws UsageError), get prints the value.
  void add_custom(const std::string& key, const std::string& type, const std::string& range,
                  const std::string& default_value, const std::string& doc,
                  std::function<void(const std::string&)> set, std::function<std::string()> get);

  bool has(const std::string& key) const { return entries_.count(key) > 0; }
  // Parses and stores one value; `origin` ("fmnist.ini", "command line") goes into errors.
  void set(const std::string& key, const std::string& value, const std::string& origin);
  std::string get(const std::string& key) const;
  // An error for an unknown key, with the closest valid key when there is one.
  std::string unknown_key_message(const std::string& key, const std::string& origin) const;

  std::vector<std::string> keys() const { return order_; }
  const KeyInfo& info(const std::string& key) const { return entries_.at(key).info; }
  // The resolved config as INI text (sections in registration order; only `keys` when given,
  // every key otherwise), loadable back with --config, and as JSON.
  std::string to_ini(const std::vector<std::string>& keys = {}) const;
  nlohmann::json to_json() const;

  static std::string join_choices(const std::vector<std::string>& names);

 private:
  struct Entry {
    KeyInfo info;
    std::function<void(const std::string&)> set;
    std::function<std::string()> get;
  };
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;
};

// Formats a float the way an INI file would hold it ("0.0001", "1e-06", "2").
std::string format_float(double v);

}  // namespace lf::launch
