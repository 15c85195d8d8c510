// IEEE binary16 -> binary32 conversion for the loader's hot path (LibTorch 1.13's CPU
// Half->Float cast runs at a fraction of memory bandwidth). Uses the F16C instruction when the
// CPU has it, an exact scalar conversion otherwise; both give the same bits as torch's cast.
#pragma once
#include <cstdint>

namespace lf::data {

// dst[i] = float(src[i]) for i < n. Thread-safe.
void half_to_float(const uint16_t* src, float* dst, int64_t n);

// The portable scalar conversion (exposed for tests).
float half_to_float_scalar(uint16_t h);

}  // namespace lf::data
