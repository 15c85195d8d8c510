// The structure of a checkpoint's state.json (see checkpoint_state.h).
#include "launch/checkpoint_state.h"

#include <cctype>
#include <map>
#include <stdexcept>

#include "core/util/strings.h"

namespace lf::launch {

namespace {

enum class JType { kObject, kString, kNumber, kInteger, kUnsigned, kIntegerArray, kStringArray };

const char* name_of(JType t) {
  switch (t) {
    case JType::kObject: return "an object";
    case JType::kString: return "a string";
    case JType::kNumber: return "a number";
    case JType::kInteger: return "an integer";
    case JType::kUnsigned: return "a non-negative integer";
    case JType::kIntegerArray: return "an array of integers";
    case JType::kStringArray: return "an array of strings";
  }
  return "?";
}

bool has_type(const nlohmann::json& v, JType t) {
  auto all = [&](bool (nlohmann::json::*is)() const noexcept) {
    if (!v.is_array()) return false;
    for (const auto& e : v)
      if (!(e.*is)()) return false;
    return true;
  };
  switch (t) {
    case JType::kObject: return v.is_object();
    case JType::kString: return v.is_string();
    case JType::kNumber: return v.is_number();
    case JType::kInteger: return v.is_number_integer();
    case JType::kUnsigned: return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
    case JType::kIntegerArray: return all(&nlohmann::json::is_number_integer);
    case JType::kStringArray: return all(&nlohmann::json::is_string);
  }
  return false;
}

// Fields that are optional, but when present are read by resume (train_loop.cpp,
// ldm_trainer.cpp), `sample` (checkpoint_model.cpp) or `inspect` with this type.
struct Field {
  const char* pointer;
  JType type;
};
const std::vector<Field> kTypedIfPresent = {
    {"/config", JType::kObject},          {"/train_seconds", JType::kNumber},
    {"/bad_steps", JType::kInteger},      {"/epoch", JType::kNumber},
    {"/samples_seen", JType::kInteger},   {"/seed", JType::kInteger},
    {"/world_size", JType::kInteger},     {"/model", JType::kObject},
    {"/diffusion", JType::kObject},       {"/cache", JType::kObject},
    {"/cache/dir", JType::kString},       {"/cache/vae_sha256", JType::kString},
    {"/cache/scale_factor", JType::kNumber}, {"/cache/num_samples", JType::kInteger},
    {"/cache/latent_shape", JType::kIntegerArray}, {"/cache/image_shape", JType::kIntegerArray},
    {"/cache/label_names", JType::kStringArray}, {"/vae", JType::kObject},
    {"/vae/kind", JType::kString},        {"/vae/weights", JType::kString},
    {"/vae/sha256", JType::kString},      {"/vae_config", JType::kObject},
};

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw std::runtime_error(str(where, ": ", what, " (a damaged or hand-edited state.json: this checkpoint is invalid)"));
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// A listed name must be a plain file of the checkpoint folder: never a path that leaves it
// (absolute, "..", a sub-path), so that verification hashes only the checkpoint's own files.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

void check_files(const nlohmann::json& files, const nlohmann::json& state, const std::string& kind,
                 const std::string& where) {
  if (files.empty()) fail(where, "'files' lists no file");
  for (const auto& [name, info] : files.items()) {
    if (!is_plain_file_name(name))
      fail(where, str("'files' names '", excerpt(name), "', which is not a file of the checkpoint folder (expected a plain "
                      "file name, no '/' or '..')"));
    if (!info.is_object() || !info.contains("sha256") || !info["sha256"].is_string() ||
        !is_hex64(info["sha256"].get<std::string>()))
      fail(where, str("files/", excerpt(name), " has no sha256 of 64 hex digits"));
    if (!info.contains("bytes") || !has_type(info["bytes"], JType::kUnsigned))
      fail(where, str("files/", excerpt(name), " has no byte count (a non-negative integer)"));
  }
  const nlohmann::json no_shards = nlohmann::json::object();
  const nlohmann::json& shards = state.contains("shards") ? state["shards"] : no_shards;
  if (!shards.is_object()) fail(where, "'shards' is not an object");
  for (const auto& [stem, list] : shards.items()) {
    if (!has_type(list, JType::kStringArray) || list.empty())
      fail(where, str("shards/", excerpt(stem), " is not a non-empty array of file names"));
    for (const auto& f : list)
      if (!files.contains(f.get<std::string>()))
        fail(where, str("shards/", excerpt(stem), " names ", excerpt(f.get<std::string>()),
                        ", which 'files' does not list"));
  }
  for (const auto& required : required_checkpoint_files(kind)) {
    const std::string stem = required.substr(0, required.size() - std::string(".safetensors").size());
    if (!files.contains(required) && !shards.contains(stem))
      fail(where, str("'files' does not list ", required, " (nor 'shards' a sharded ", stem, "), which every '", kind,
                      "' checkpoint has"));
  }
}

}  // namespace

const std::vector<std::string>& required_checkpoint_files(const std::string& kind) {
  // What TrainingLoop::save writes for the model (train_loop.cpp); a discriminator's files
  // (vae train) are optional.
  static const std::map<std::string, std::vector<std::string>> table = {
      {"ldm", {"model.safetensors", "optimizer.safetensors", "ema.safetensors"}},
      {"vae", {"model.safetensors", "optimizer.safetensors", "ema.safetensors"}},
  };
  static const std::vector<std::string> none;
  auto it = table.find(kind);
  return it == table.end() ? none : it->second;
}

std::optional<int64_t> step_of_checkpoint_name(const std::string& folder_name) {
  std::string s = folder_name;
  const bool internal = s.rfind(".tmp-", 0) == 0 || s.rfind(".old-", 0) == 0;
  if (internal) {
    s = s.substr(5);
    const size_t dash = s.rfind('-');
    if (dash == std::string::npos || dash <= 5) return std::nullopt;
    s.resize(dash);
  }
  if (s.rfind("step-", 0) != 0 || s.size() == 5 || s.size() > 5 + 18) return std::nullopt;
  int64_t step = 0;
  for (size_t i = 5; i < s.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return std::nullopt;
    step = step * 10 + (s[i] - '0');
  }
  return step;
}

void check_state_structure(const nlohmann::json& state, int64_t step, const std::string& where) {
  if (!state.is_object()) fail(where, "not a JSON object");
  if (!state.contains("format_version") || !state["format_version"].is_number_integer())
    fail(where, "no integer 'format_version'");
  const int64_t version = state["format_version"].get<int64_t>();
  if (version < kOldestCheckpointFormatVersion || version > kCheckpointFormatVersion)
    fail(where, str("format_version ", state["format_version"].dump(), ", this latentforge reads versions ",
                    kOldestCheckpointFormatVersion, " to ", kCheckpointFormatVersion));
  if (version < 2 && state.contains("shards")) fail(where, "'shards' in a format_version 1 checkpoint");
  if (!state.contains("kind") || !state["kind"].is_string()) fail(where, "no string 'kind'");
  const std::string kind = state["kind"].get<std::string>();
  if (required_checkpoint_files(kind).empty())
    fail(where, str("kind '", excerpt(kind), "' is neither 'ldm' nor 'vae'"));
  if (!state.contains("step") || !has_type(state["step"], JType::kUnsigned))
    fail(where, "no 'step' (a non-negative integer)");
  if (state["step"].get<int64_t>() != step)
    fail(where, str("step ", state["step"].get<int64_t>(), " but the folder is the checkpoint of step ", step));
  if (!state.contains("files") || !state["files"].is_object()) fail(where, "missing the 'files' table of checksums");
  check_files(state["files"], state, kind, where);
  for (const Field& f : kTypedIfPresent) {
    const nlohmann::json::json_pointer p(f.pointer);
    if (!state.contains(p)) continue;
    if (!has_type(state.at(p), f.type))
      fail(where, str(std::string(f.pointer).substr(1), " is ", state.at(p).type_name(), ", expected ", name_of(f.type)));
  }
}

}  // namespace lf::launch
