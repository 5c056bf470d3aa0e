// Matmuls over block-quantized weights, as llama.cpp computes them: the activations are
// quantized to int8 per block of 32, each block's dot product is taken in integers, and the
// block scales are applied in float. Plain C++ with OpenMP and no torch headers (built and
// loaded by headrace/model/native.py); AVX2 intrinsics where the compiler targets AVX2, with
// VNNI's one-instruction dot product where it targets AVX512-VNNI or AVX-VNNI, else plain loops.
//
// Layouts (row-major; x and out in float32 or bfloat16, chosen by the entry point's suffix):
//   x [T, K] activations; out [T, ldo], of which columns [0, N) are written.
//   The activations quantized (per call, in a buffer of the calling thread): xq int8 [T, K];
//     xd float [T, K/32] the block scales; xs float [T, K/32] each block's scale times the sum
//     of its int8 values.
//   4-bit weights (GGUF Q4_0, Q4_1, Q4_K): packed uint8 [N, K/2], byte j of a block of 32 holds
//     element j in its low nibble and element j + 16 in its high one (ggml's order); scale and
//     min float [N, K/32]: w = scale * q + min.
//   8-bit weights (GGUF Q8_0, Q6_K): q int8 [N, K]; scale float [N, K/G], G = 32 or 16:
//     w = scale * q.

#include "bfloat16.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HEADRACE_AVX2 1
#endif

namespace {

constexpr int64_t kBlock = 32;
// Tokens whose dot products share one unpacking of a weight block.
constexpr int64_t kTile = 4;

using headrace::load;
using headrace::store;

template <typename T>
void quantize_activations(const T* x, int64_t tokens, int64_t k, int8_t* xq, float* xd,
                          float* xs) {
  const int64_t blocks = tokens * (k / kBlock);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const T* in = x + b * kBlock;
    float values[kBlock];
    float amax = 0.0f;
    for (int64_t j = 0; j < kBlock; ++j) {
      values[j] = load(in[j]);
      amax = std::fmax(amax, std::fabs(values[j]));
    }
    const float d = amax / 127.0f;
    const float inverse = d > 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int64_t j = 0; j < kBlock; ++j) {
      const int q = static_cast<int>(std::nearbyint(values[j] * inverse));
      xq[b * kBlock + j] = static_cast<int8_t>(q);
      sum += q;
    }
    xd[b] = d;
    xs[b] = d * static_cast<float>(sum);
  }
}

#ifdef HEADRACE_AVX2
// Sums of 4 adjacent products of unsigned a and signed b bytes, in 8 int32 lanes: lanes 0-3
// cover bytes 0-15, lanes 4-7 bytes 16-31.
inline __m256i dot_u8_s8(__m256i a, __m256i b) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b);
#else
  // a <= 128 and |b| <= 127 here, so no pair of products saturates int16.
  return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
#endif
}

// A 4-bit block's 16 bytes -> its 32 values in order, one a byte.
inline __m256i unpack_q4(const uint8_t* bytes16) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes16));
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(bytes),
                                               _mm_srli_epi16(bytes, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

inline void store8(__m256 v, float* out) { _mm256_storeu_ps(out, v); }

inline void store8(__m256 v, uint16_t* out) {
  // Round to nearest even, as store() does, 8 at a time.
  __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  bits = _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), odd));
  bits = _mm256_srli_epi32(bits, 16);
  const __m128i halves = _mm_packus_epi32(_mm256_castsi256_si128(bits),
                                          _mm256_extracti128_si256(bits, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), halves);
}

// A block's 32 values, one a byte (unsigned or signed), written as scale * q + min: elements
// 0-15 with `first`, 16-31 with `second`.
template <bool kSigned, typename T>
inline void store_block(__m256i values, float first, float second, float min, T* out) {
  const __m128i halves[2] = {_mm256_castsi256_si128(values), _mm256_extracti128_si256(values, 1)};
  const __m256 offset = _mm256_set1_ps(min);
  for (int i = 0; i < 4; ++i) {
    const __m128i eight = i % 2 ? _mm_srli_si128(halves[i / 2], 8) : halves[i / 2];
    const __m256i wide = kSigned ? _mm256_cvtepi8_epi32(eight) : _mm256_cvtepu8_epi32(eight);
    const __m256 scale = _mm256_set1_ps(i < 2 ? first : second);
    store8(_mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(wide), offset), out + 8 * i);
  }
}

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// One weight row against a tile of `count` (<= kTile) tokens: the 4-bit format.
void q4_row(const uint8_t* packed, const float* scale, const float* min, const int8_t* xq,
            const float* xd, const float* xs, int64_t k, int64_t count, float* dots) {
  const int64_t blocks = k / kBlock;
  float offsets[kTile] = {0.0f, 0.0f, 0.0f, 0.0f};
#ifdef HEADRACE_AVX2
  __m256 acc[kTile] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                       _mm256_setzero_ps()};
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256i w = unpack_q4(packed + b * 16);
    for (int64_t t = 0; t < count; ++t) {
      const int64_t at = t * blocks + b;
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + at * kBlock));
      const __m256 products = _mm256_cvtepi32_ps(dot_u8_s8(w, x));
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(scale[b] * xd[at]), products, acc[t]);
      offsets[t] += min[b] * xs[at];
    }
  }
  for (int64_t t = 0; t < count; ++t) dots[t] = horizontal_sum(acc[t]) + offsets[t];
#else
  float acc[kTile] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t t = 0; t < count; ++t) {
      const int64_t at = t * blocks + b;
      const int8_t* x = xq + at * kBlock;
      int dot = 0;
      for (int64_t j = 0; j < kBlock / 2; ++j) {
        dot += (packed[b * 16 + j] & 0x0F) * x[j] + (packed[b * 16 + j] >> 4) * x[j + 16];
      }
      acc[t] += scale[b] * xd[at] * static_cast<float>(dot);
      offsets[t] += min[b] * xs[at];
    }
  }
  for (int64_t t = 0; t < count; ++t) dots[t] = acc[t] + offsets[t];
#endif
}

// One weight row against a tile of `count` (<= kTile) tokens: the 8-bit format.
void q8_row(const int8_t* q, const float* scale, int64_t group, const int8_t* xq, const float* xd,
            int64_t k, int64_t count, float* dots) {
  const int64_t blocks = k / kBlock;
  const int64_t per_block = kBlock / group;  // weight scales per activation block: 1 or 2
#ifdef HEADRACE_AVX2
  __m256 acc[kTile] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                       _mm256_setzero_ps()};
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * kBlock));
    const __m256i magnitude = _mm256_sign_epi8(w, w);
    const float first = scale[b * per_block], second = scale[b * per_block + per_block - 1];
    const __m256 scales = _mm256_setr_ps(first, first, first, first, second, second, second,
                                         second);
    for (int64_t t = 0; t < count; ++t) {
      const int64_t at = t * blocks + b;
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + at * kBlock));
      // |w| * (x with w's sign) = w * x, with the unsigned operand the instruction wants.
      const __m256 products = _mm256_cvtepi32_ps(dot_u8_s8(magnitude, _mm256_sign_epi8(x, w)));
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(scales, _mm256_set1_ps(xd[at])), products, acc[t]);
    }
  }
  for (int64_t t = 0; t < count; ++t) dots[t] = horizontal_sum(acc[t]);
#else
  float acc[kTile] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t t = 0; t < count; ++t) {
      const int64_t at = t * blocks + b;
      const int8_t* x = xq + at * kBlock;
      for (int64_t g = 0; g < per_block; ++g) {
        int dot = 0;
        for (int64_t j = g * group; j < (g + 1) * group; ++j) dot += q[b * kBlock + j] * x[j];
        acc[t] += scale[b * per_block + g] * xd[at] * static_cast<float>(dot);
      }
    }
  }
  for (int64_t t = 0; t < count; ++t) dots[t] = acc[t];
#endif
}

// out[t, n] for every token and weight row; `row` computes one row against a tile of tokens.
template <typename T, typename Row>
void matmul(int64_t tokens, int64_t k, int64_t n, T* out, int64_t ldo, Row row) {
  const int64_t blocks = k / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t0 = 0; t0 < tokens; t0 += kTile) {
      const int64_t count = tokens - t0 < kTile ? tokens - t0 : kTile;
      float dots[kTile];
      row(i, t0 * blocks, count, dots);
      for (int64_t t = 0; t < count; ++t) store(dots[t], out + (t0 + t) * ldo + i);
    }
  }
}

// The activations' int8 blocks, kept per calling thread and reused from call to call.
struct QuantizedActivations {
  std::vector<int8_t> q;
  std::vector<float> d, s;

  template <typename T>
  QuantizedActivations& of(const T* x, int64_t tokens, int64_t k) {
    q.resize(tokens * k);
    d.resize(tokens * (k / kBlock));
    s.resize(tokens * (k / kBlock));
    quantize_activations(x, tokens, k, q.data(), d.data(), s.data());
    return *this;
  }
};

thread_local QuantizedActivations activations;

template <typename T>
void q4_linear(const T* x, int64_t tokens, int64_t k, const uint8_t* packed, const float* scale,
               const float* min, int64_t n, T* out, int64_t ldo) {
  const QuantizedActivations& a = activations.of(x, tokens, k);
  const int64_t blocks = k / kBlock;
  matmul(tokens, k, n, out, ldo, [&](int64_t i, int64_t first, int64_t count, float* dots) {
    q4_row(packed + i * (k / 2), scale + i * blocks, min + i * blocks, a.q.data() + first * kBlock,
           a.d.data() + first, a.s.data() + first, k, count, dots);
  });
}

template <typename T>
void q8_linear(const T* x, int64_t tokens, int64_t k, const int8_t* q, const float* scale,
               int64_t group, int64_t n, T* out, int64_t ldo) {
  const QuantizedActivations& a = activations.of(x, tokens, k);
  matmul(tokens, k, n, out, ldo, [&](int64_t i, int64_t first, int64_t count, float* dots) {
    q8_row(q + i * k, scale + i * (k / group), group, a.q.data() + first * kBlock,
           a.d.data() + first, k, count, dots);
  });
}

template <typename T>
void q4_dequantize(const uint8_t* packed, const float* scale, const float* min, int64_t n,
                   int64_t k, T* out) {
  const int64_t blocks = n * (k / kBlock);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
#ifdef HEADRACE_AVX2
    store_block<false>(unpack_q4(packed + b * 16), scale[b], scale[b], min[b], out + b * kBlock);
#else
    const uint8_t* bytes = packed + b * 16;
    T* row = out + b * kBlock;
    for (int64_t j = 0; j < kBlock / 2; ++j) {
      store(scale[b] * static_cast<float>(bytes[j] & 0x0F) + min[b], row + j);
      store(scale[b] * static_cast<float>(bytes[j] >> 4) + min[b], row + j + 16);
    }
#endif
  }
}

template <typename T>
void q8_dequantize(const int8_t* q, const float* scale, int64_t group, int64_t n, int64_t k,
                   T* out) {
  const int64_t blocks = n * (k / kBlock);
  const int64_t per_block = kBlock / group;  // scales per block of 32: 1 or 2
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const float first = scale[b * per_block], second = scale[b * per_block + per_block - 1];
#ifdef HEADRACE_AVX2
    const __m256i values = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + b * kBlock));
    store_block<true>(values, first, second, 0.0f, out + b * kBlock);
#else
    for (int64_t j = 0; j < kBlock; ++j) {
      const float s = j < kBlock / 2 ? first : second;
      store(s * static_cast<float>(q[b * kBlock + j]), out + b * kBlock + j);
    }
#endif
  }
}

}  // namespace

#define HEADRACE_QUANTIZED(SUFFIX, T)                                                           \
  extern "C" void q4_linear_##SUFFIX(const T* x, int64_t tokens, int64_t k,                    \
                                     const uint8_t* packed, const float* scale,                \
                                     const float* min, int64_t n, T* out, int64_t ldo) {       \
    q4_linear<T>(x, tokens, k, packed, scale, min, n, out, ldo);                               \
  }                                                                                            \
  extern "C" void q8_linear_##SUFFIX(const T* x, int64_t tokens, int64_t k, const int8_t* q,  \
                                     const float* scale, int64_t group, int64_t n, T* out,     \
                                     int64_t ldo) {                                            \
    q8_linear<T>(x, tokens, k, q, scale, group, n, out, ldo);                                  \
  }                                                                                            \
  extern "C" void q4_dequantize_##SUFFIX(const uint8_t* packed, const float* scale,           \
                                         const float* min, int64_t n, int64_t k, T* out) {     \
    q4_dequantize<T>(packed, scale, min, n, k, out);                                           \
  }                                                                                            \
  extern "C" void q8_dequantize_##SUFFIX(const int8_t* q, const float* scale, int64_t group,  \
                                         int64_t n, int64_t k, T* out) {                       \
    q8_dequantize<T>(q, scale, group, n, k, out);                                              \
  }

HEADRACE_QUANTIZED(float32, float)
HEADRACE_QUANTIZED(bfloat16, uint16_t)
