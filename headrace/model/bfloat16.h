// float32 <-> bfloat16 for headrace's C++ kernels, with torch's rounding.
#pragma once

#include <cstdint>
#include <cstring>

namespace headrace {

inline float load(float x) { return x; }

inline float load(uint16_t bf16) {
  uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

inline void store(float x, float* out) { *out = x; }

inline void store(float x, uint16_t* out) {
  // Round to nearest even, as torch does (no NaN can reach here).
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  *out = static_cast<uint16_t>(bits >> 16);
}

}  // namespace headrace
