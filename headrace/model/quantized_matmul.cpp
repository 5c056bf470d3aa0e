// Matmuls over block-quantized weights, as llama.cpp computes them: the activations are
// quantized to int8 per block of 32, each block's dot product is taken in integers, and the
// block scales are applied in float. Plain C++ with OpenMP and no torch headers (built and
// loaded by headrace/model/native.py); AVX2 intrinsics where the compiler targets AVX2, with
// VNNI's one-instruction dot product where it targets AVX512-VNNI or AVX-VNNI, else plain loops.
//
// Layouts (row-major; x and out in float32 or bfloat16, chosen by the entry point's suffix):
//   x [T, K] activations; out [T, ldo], of which columns [0, N) are written.
//   The activations quantized (per call, in a buffer of the calling thread): xq int8 [T, K];
//     xd float [K/32, S] the block scales, token by token (S: T rounded up to 4, zeros
//     beyond T, so that 4 tokens' scales load as one vector); xs float [K/32, S] each block's
//     scale times the sum of its int8 values.
//   4-bit weights (GGUF Q4_0, Q4_1, Q4_K): packed uint8 [N, K/2], byte j of a block of 32 holds
//     element j in its low nibble and element j + 16 in its high one (ggml's order); scale and
//     min float [N, K/32]: w = scale * q + min.
//   8-bit weights (GGUF Q8_0, Q6_K): q int8 [N, K]; scale float [N, K/G], G = 32 or 16:
//     w = scale * q.
//   16-bit weights (GGUF F16 and BF16, 16-bit checkpoints under float32 activations): w
//     uint16 [N, K], IEEE half or bfloat16 bits. These multiply the activations as they are,
//     in float32, each weight widened as it is loaded (F16C's vcvtph2ps, or a shift).

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
// A tile's shape: weight rows x tokens.
template <int R, int C>
struct Shape {
  static constexpr int rows = R;
  static constexpr int tokens = C;
};

using headrace::load;
using headrace::store;

// Weight rows are read once a call, from memory rather than cache, and the hardware's
// prefetchers fall behind a decode step's tiles: each tile asks for the rows kPrefetchRows
// below its own, one cache line at a time (a one-token step of SmolLM2-135M's Q4_1 weights
// took 6.9 ms without, 4.0 ms with 8 rows, on 2 Sapphire Rapids cores held to AVX2).
constexpr int64_t kPrefetchRows = 8;
constexpr int64_t kLine = 64;

// Ask for the cache line holding address p, ahead of its use. A prefetch never faults, so p
// may lie past the end of the weights.
inline void prefetch(uintptr_t p) { __builtin_prefetch(reinterpret_cast<const void*>(p), 0, 3); }

// At each cache line's start (`offset` bytes into its row), the same place kPrefetchRows rows
// of `row_length` elements further on.
template <typename T>
inline void prefetch_row_ahead(const T* at, int64_t row_length, int64_t offset) {
  if (offset % kLine == 0)
    prefetch(reinterpret_cast<uintptr_t>(at) + kPrefetchRows * row_length * sizeof(T));
}

// Tokens a tile of several takes at once, and the padding of the activations' scales.
constexpr int64_t kTokens = 4;

template <typename T>
void quantize_activations(const T* x, int64_t tokens, int64_t k, int8_t* xq, float* xd,
                          float* xs, int64_t stride) {
  const int64_t per_token = k / kBlock;
  const int64_t blocks = tokens * per_token;
  // A decode step's few blocks take less than waking the other threads would.
#pragma omp parallel for schedule(static) if (blocks >= 256)
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
    const int64_t at = (b % per_token) * stride + b / per_token;
    xd[at] = d;
    xs[at] = d * static_cast<float>(sum);
  }
}

// The two 16-bit formats of a weight.
enum class Half { ieee, brain };

template <Half H>
inline float widen(uint16_t bits) {
  if constexpr (H == Half::brain) return load(bits);
  // IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1Fu, mantissa = bits & 0x3FFu;
  uint32_t wide;
  if (exponent == 0x1F) {
    wide = sign | 0x7F800000u | mantissa << 13;  // infinity, NaN
  } else if (exponent != 0) {
    wide = sign | (exponent + 112) << 23 | mantissa << 13;  // rebiased to 127
  } else {
    const float tiny = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
    return sign ? -tiny : tiny;
  }
  float x;
  std::memcpy(&x, &wide, sizeof x);
  return x;
}

// The activations in float32, as the 16-bit weights' tiles read them: x itself, or widened
// into a buffer of the calling thread.
inline const float* as_float32(const float* x, int64_t, std::vector<float>&) { return x; }

inline const float* as_float32(const uint16_t* x, int64_t count, std::vector<float>& buffer) {
  buffer.resize(count);
  for (int64_t i = 0; i < count; ++i) buffer[i] = load(x[i]);
  return buffer.data();
}

#ifdef HEADRACE_AVX2
// 8 16-bit weights, widened to float32.
template <Half H>
inline __m256 widen8(const uint16_t* w) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  if constexpr (H == Half::ieee) return _mm256_cvtph_ps(bits);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

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

// Activation block `at` (-1: none, zeros) of the quantized activations.
inline __m256i activation_block(const int8_t* xq, int64_t at) {
  if (at < 0) return _mm256_setzero_si256();
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + at * kBlock));
}

// A weight block's dot products with 4 tokens' activation blocks (signed as the weight's
// operand needs): lanes 0-3 hold tokens 0-3 over the block's bytes 0-15, lanes 4-7 over 16-31.
inline __m256i dots4(__m256i w, const __m256i x[kTokens]) {
  const __m256i first = _mm256_hadd_epi32(dot_u8_s8(w, x[0]), dot_u8_s8(w, x[1]));
  const __m256i second = _mm256_hadd_epi32(dot_u8_s8(w, x[2]), dot_u8_s8(w, x[3]));
  return _mm256_hadd_epi32(first, second);
}

// `low` in lanes 0-3, `high` in 4-7.
inline __m256 halves(__m128 low, __m128 high) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(low), high, 1);
}

// acc's two halves added (4 tokens' sums) plus `offset`, into dots[0..count).
inline void store4(__m256 acc, __m128 offset, int64_t count, float* dots) {
  float sums[kTokens];
  _mm_storeu_ps(sums, _mm_add_ps(_mm_add_ps(_mm256_castps256_ps128(acc),
                                            _mm256_extractf128_ps(acc, 1)), offset));
  for (int64_t t = 0; t < count; ++t) dots[t] = sums[t];
}

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// A tile of `rows` (<= R) weight rows against `count` (<= C) tokens: dots[r * C + t]. Each
// weight block is unpacked once for the tile's tokens, each activation block loaded once for
// its rows, and the sums stay in registers: one token's per row, or (C = 4, AVX2) 4 tokens' in
// one register per row, so that one multiply applies the block's scales to all of them.
// xq: the first token's quantized row; xd, xs: its scales, `stride` apart from block to block.
// The 4-bit format:
template <int R, int C>
void q4_tile(const uint8_t* packed, const float* scale, const float* min, int64_t rows,
             const int8_t* xq, const float* xd, const float* xs, int64_t stride, int64_t k,
             int64_t count, float* dots) {
  const int64_t blocks = k / kBlock;
#ifdef HEADRACE_AVX2
  if constexpr (C == kTokens) {
    __m256 acc[R];
    __m128 offset[R];  // the mins' term: each block's min times its scaled sum of activations
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps(), offset[r] = _mm_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m256i x[C];
      for (int t = 0; t < C; ++t) x[t] = activation_block(xq, t < count ? t * blocks + b : -1);
      const __m128 d = _mm_loadu_ps(xd + b * stride), sums = _mm_loadu_ps(xs + b * stride);
      const __m256 d8 = halves(d, d);
      for (int r = 0; r < R; ++r) {
        if (r >= rows) break;
        const __m256i w = unpack_q4(packed + r * (k / 2) + b * 16);
        prefetch_row_ahead(packed + r * (k / 2) + b * 16, k / 2, b * 16);
        prefetch_row_ahead(scale + r * blocks + b, blocks, b * sizeof(float));
        prefetch_row_ahead(min + r * blocks + b, blocks, b * sizeof(float));
        const __m256 step = _mm256_mul_ps(_mm256_set1_ps(scale[r * blocks + b]), d8);
        acc[r] = _mm256_fmadd_ps(step, _mm256_cvtepi32_ps(dots4(w, x)), acc[r]);
        offset[r] = _mm_fmadd_ps(_mm_set1_ps(min[r * blocks + b]), sums, offset[r]);
      }
    }
    for (int64_t r = 0; r < rows; ++r) store4(acc[r], offset[r], count, dots + r * C);
    return;
  }
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < C; ++t) acc[r][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i x[C];
    for (int t = 0; t < C; ++t) x[t] = activation_block(xq, t < count ? t * blocks + b : -1);
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      const __m256i w = unpack_q4(packed + r * (k / 2) + b * 16);
      const float s = scale[r * blocks + b];
      prefetch_row_ahead(packed + r * (k / 2) + b * 16, k / 2, b * 16);
      prefetch_row_ahead(scale + r * blocks + b, blocks, b * sizeof(float));
      prefetch_row_ahead(min + r * blocks + b, blocks, b * sizeof(float));
      for (int t = 0; t < C; ++t) {
        if (t >= count) break;
        const __m256 products = _mm256_cvtepi32_ps(dot_u8_s8(w, x[t]));
        acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(s * xd[b * stride + t]), products, acc[r][t]);
      }
    }
  }
#else
  float acc[R][C] = {};
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* w = packed + r * (k / 2) + b * 16;
      for (int64_t t = 0; t < count; ++t) {
        const int8_t* x = xq + (t * blocks + b) * kBlock;
        int dot = 0;
        for (int64_t j = 0; j < kBlock / 2; ++j) dot += (w[j] & 0x0F) * x[j] + (w[j] >> 4) * x[j + 16];
        acc[r][t] += scale[r * blocks + b] * xd[b * stride + t] * static_cast<float>(dot);
      }
    }
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < count; ++t) {
      // The mins' term: each block's min times the block's scaled sum of activations.
      float offset = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) offset += min[r * blocks + b] * xs[b * stride + t];
#ifdef HEADRACE_AVX2
      dots[r * C + t] = horizontal_sum(acc[r][t]) + offset;
#else
      dots[r * C + t] = acc[r][t] + offset;
#endif
    }
  }
}

// The 8-bit format, `group` values to a scale:
template <int R, int C>
void q8_tile(const int8_t* q, const float* scale, int64_t group, int64_t rows, const int8_t* xq,
             const float* xd, int64_t stride, int64_t k, int64_t count, float* dots) {
  const int64_t blocks = k / kBlock;
  const int64_t per_block = kBlock / group;  // weight scales per activation block: 1 or 2
  const int64_t scales_per_row = k / group;
#ifdef HEADRACE_AVX2
  if constexpr (C == kTokens) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      __m256i x[C];
      for (int t = 0; t < C; ++t) x[t] = activation_block(xq, t < count ? t * blocks + b : -1);
      const __m128 d = _mm_loadu_ps(xd + b * stride);
      for (int r = 0; r < R; ++r) {
        if (r >= rows) break;
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + r * k + b * kBlock));
        const float* s = scale + r * scales_per_row + b * per_block;
        prefetch_row_ahead(q + r * k + b * kBlock, k, b * kBlock);
        prefetch_row_ahead(s, scales_per_row, b * per_block * sizeof(float));
        // |w| * (x with w's sign) = w * x, with the unsigned operand the instruction wants.
        __m256i signed_x[C];
        for (int t = 0; t < C; ++t) signed_x[t] = _mm256_sign_epi8(x[t], w);
        const __m256 step = halves(_mm_mul_ps(_mm_set1_ps(s[0]), d),
                                   _mm_mul_ps(_mm_set1_ps(s[per_block - 1]), d));
        const __m256 products = _mm256_cvtepi32_ps(dots4(_mm256_sign_epi8(w, w), signed_x));
        acc[r] = _mm256_fmadd_ps(step, products, acc[r]);
      }
    }
    for (int64_t r = 0; r < rows; ++r) store4(acc[r], _mm_setzero_ps(), count, dots + r * C);
    return;
  }
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < C; ++t) acc[r][t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i x[C];
    for (int t = 0; t < C; ++t) x[t] = activation_block(xq, t < count ? t * blocks + b : -1);
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + r * k + b * kBlock));
      const __m256i magnitude = _mm256_sign_epi8(w, w);
      const float* s = scale + r * scales_per_row + b * per_block;
      prefetch_row_ahead(q + r * k + b * kBlock, k, b * kBlock);
      prefetch_row_ahead(s, scales_per_row, b * per_block * sizeof(float));
      const __m256 scales = halves(_mm_set1_ps(s[0]), _mm_set1_ps(s[per_block - 1]));
      for (int t = 0; t < C; ++t) {
        if (t >= count) break;
        const __m256 products =
            _mm256_cvtepi32_ps(dot_u8_s8(magnitude, _mm256_sign_epi8(x[t], w)));
        const __m256 step = _mm256_mul_ps(scales, _mm256_set1_ps(xd[b * stride + t]));
        acc[r][t] = _mm256_fmadd_ps(step, products, acc[r][t]);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < count; ++t) dots[r * C + t] = horizontal_sum(acc[r][t]);
#else
  float acc[R][C] = {};
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t t = 0; t < count; ++t) {
        const int8_t* x = xq + (t * blocks + b) * kBlock;
        for (int64_t g = 0; g < per_block; ++g) {
          int dot = 0;
          for (int64_t j = g * group; j < (g + 1) * group; ++j) dot += q[r * k + b * kBlock + j] * x[j];
          acc[r][t] += scale[r * scales_per_row + b * per_block + g] * xd[b * stride + t] *
                       static_cast<float>(dot);
        }
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < count; ++t) dots[r * C + t] = acc[r][t];
#endif
}

// The 16-bit formats, against float32 activations x [C, K]:
template <Half H, int R, int C>
void h16_tile(const uint16_t* w, int64_t rows, const float* x, int64_t k, int64_t count,
              float* dots) {
#ifdef HEADRACE_AVX2
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < C; ++t) acc[r][t] = _mm256_setzero_ps();
  for (int64_t j = 0; j < k; j += 8) {
    __m256 xs[C];
    for (int t = 0; t < C; ++t) xs[t] = t < count ? _mm256_loadu_ps(x + t * k + j) : _mm256_setzero_ps();
    for (int r = 0; r < R; ++r) {
      if (r >= rows) break;
      const __m256 weights = widen8<H>(w + r * k + j);
      prefetch_row_ahead(w + r * k + j, k, j * sizeof(uint16_t));
      for (int t = 0; t < C; ++t) {
        if (t >= count) break;
        acc[r][t] = _mm256_fmadd_ps(weights, xs[t], acc[r][t]);
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < count; ++t) dots[r * C + t] = horizontal_sum(acc[r][t]);
#else
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < count; ++t) {
      float sum = 0.0f;
      for (int64_t j = 0; j < k; ++j) sum += widen<H>(w[r * k + j]) * x[t * k + j];
      dots[r * C + t] = sum;
    }
  }
#endif
}

// out[t, i] for every token and weight row, in tiles of R rows x C tokens: tile(first row,
// rows, first token, tokens, dots).
template <int R, int C, typename T, typename Tile>
void matmul(int64_t tokens, int64_t n, T* out, int64_t ldo, Tile tile) {
  const int64_t groups = (n + R - 1) / R;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t i = g * R;
    const int64_t rows = n - i < R ? n - i : R;
    for (int64_t t0 = 0; t0 < tokens; t0 += C) {
      const int64_t count = tokens - t0 < C ? tokens - t0 : C;
      float dots[R * C];
      tile(i, rows, t0, count, dots);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t t = 0; t < count; ++t) store(dots[r * C + t], out + (t0 + t) * ldo + i + r);
    }
  }
}

// matmul in the tiles that suit the tokens: a single token's rows go 4 at a time, several
// tokens' 2 rows x 4 tokens. tile(shape, first row, rows, first token, tokens, dots).
template <typename T, typename Tile>
void in_tiles(int64_t tokens, int64_t n, T* out, int64_t ldo, Tile tile) {
  if (tokens == 1) {
    matmul<4, 1>(tokens, n, out, ldo, [&](auto... args) { tile(Shape<4, 1>{}, args...); });
  } else {
    matmul<2, kTokens>(tokens, n, out, ldo,
                       [&](auto... args) { tile(Shape<2, kTokens>{}, args...); });
  }
}

// The activations' int8 blocks, kept per calling thread and reused from call to call.
struct QuantizedActivations {
  std::vector<int8_t> q;
  std::vector<float> d, s;
  int64_t stride = 0;  // of d and s: the tokens rounded up to a tile's

  template <typename T>
  QuantizedActivations& of(const T* x, int64_t tokens, int64_t k) {
    stride = (tokens + kTokens - 1) / kTokens * kTokens;
    q.resize(tokens * k);
    d.assign(stride * (k / kBlock), 0.0f);
    s.assign(stride * (k / kBlock), 0.0f);
    quantize_activations(x, tokens, k, q.data(), d.data(), s.data(), stride);
    return *this;
  }
};

thread_local QuantizedActivations activations;

template <typename T>
void q4_linear(const T* x, int64_t tokens, int64_t k, const uint8_t* packed, const float* scale,
               const float* min, int64_t n, T* out, int64_t ldo) {
  const QuantizedActivations& a = activations.of(x, tokens, k);
  const int64_t blocks = k / kBlock;
  auto tile = [&](auto shape, int64_t i, int64_t rows, int64_t t0, int64_t count, float* dots) {
    q4_tile<decltype(shape)::rows, decltype(shape)::tokens>(
        packed + i * (k / 2), scale + i * blocks, min + i * blocks, rows, a.q.data() + t0 * k,
        a.d.data() + t0, a.s.data() + t0, a.stride, k, count, dots);
  };
  in_tiles(tokens, n, out, ldo, tile);
}

template <typename T>
void q8_linear(const T* x, int64_t tokens, int64_t k, const int8_t* q, const float* scale,
               int64_t group, int64_t n, T* out, int64_t ldo) {
  const QuantizedActivations& a = activations.of(x, tokens, k);
  auto tile = [&](auto shape, int64_t i, int64_t rows, int64_t t0, int64_t count, float* dots) {
    q8_tile<decltype(shape)::rows, decltype(shape)::tokens>(
        q + i * k, scale + i * (k / group), group, rows, a.q.data() + t0 * k, a.d.data() + t0,
        a.stride, k, count, dots);
  };
  in_tiles(tokens, n, out, ldo, tile);
}

// Widened activations, per calling thread (unused for float32 ones).
thread_local std::vector<float> widened;

template <Half H, typename T>
void h16_linear(const T* x, int64_t tokens, int64_t k, const uint16_t* w, int64_t n, T* out,
                int64_t ldo) {
  const float* xf = as_float32(x, tokens * k, widened);
  auto tile = [&](auto shape, int64_t i, int64_t rows, int64_t t0, int64_t count, float* dots) {
    h16_tile<H, decltype(shape)::rows, decltype(shape)::tokens>(w + i * k, rows, xf + t0 * k, k,
                                                                 count, dots);
  };
  in_tiles(tokens, n, out, ldo, tile);
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
  extern "C" void f16_linear_##SUFFIX(const T* x, int64_t tokens, int64_t k, const uint16_t* w, \
                                      int64_t n, T* out, int64_t ldo) {                       \
    h16_linear<Half::ieee, T>(x, tokens, k, w, n, out, ldo);                                   \
  }                                                                                            \
  extern "C" void bf16_linear_##SUFFIX(const T* x, int64_t tokens, int64_t k,                  \
                                       const uint16_t* w, int64_t n, T* out, int64_t ldo) {   \
    h16_linear<Half::brain, T>(x, tokens, k, w, n, out, ldo);                                  \
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
