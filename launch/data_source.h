// The image source a config names ([data] keys -> data::SourceOptions), with data.limit
// applied as a prefix of the dataset (so a subset's indices are the full set's first ones).
#pragma once
#include <memory>

#include "data/source.h"
#include "launch/config.h"

namespace lf::launch {

data::SourceOptions source_options(const DataConfig& d);

// Opens the configured source; `split` overrides data.split when not empty.
std::unique_ptr<data::Source> open_configured_source(const DataConfig& d, const std::string& split = "");

}  // namespace lf::launch
