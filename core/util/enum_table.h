// One table per enum: the names a user writes and the values they stand for. Parsing, printing,
// the "expected one of" text of errors and the config registry all read the same table, so a
// new value is added in one place.
#pragma once
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/util/strings.h"

namespace lf {

// "KEY = 'VALUE': expected one of a, b, c (did you mean 'b'?)": the one wording of a bad choice.
std::string bad_choice_message(const std::string& key, const std::string& value, const std::vector<std::string>& names);

template <class E>
class EnumTable {
 public:
  EnumTable(std::initializer_list<std::pair<const char*, E>> entries) {
    for (const auto& [name, value] : entries) entries_.emplace_back(name, value);
  }

  const std::vector<std::pair<std::string, E>>& entries() const { return entries_; }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.first);
    return out;
  }

  // The name of `value`; a value outside the table is a programming error (std::logic_error).
  const std::string& name(E value) const {
    for (const auto& e : entries_)
      if (e.second == value) return e.first;
    throw std::logic_error("EnumTable: a value without a name");
  }

  bool contains(const std::string& text) const {
    for (const auto& e : entries_)
      if (e.first == text) return true;
    return false;
  }

  // The value named `text` (surrounding blanks ignored); throws std::invalid_argument with
  // bad_choice_message naming `what` (a config key, or "file: field") otherwise.
  E parse(const std::string& text, const std::string& what) const {
    const std::string t = trim(text);
    for (const auto& e : entries_)
      if (e.first == t) return e.second;
    throw std::invalid_argument(bad_choice_message(what, t, names()));
  }

 private:
  std::vector<std::pair<std::string, E>> entries_;
};

}  // namespace lf
