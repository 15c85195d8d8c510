// The one precompiled header shared by every LatentForge target (see CMakeLists.txt):
// torch's full C++ API and the standard headers most files use.
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>
