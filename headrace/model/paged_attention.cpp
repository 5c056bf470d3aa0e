// Decode attention over the paged KV cache, reading each sequence's blocks in place.
//
// For every decoding sequence: write its new key and value to their slot, then attend with its
// query heads over the positions it has filled. Plain C++ with OpenMP, no torch headers, so it
// builds in about a second (headrace/model/native.py builds and loads it).
//
// Layouts (elements, row-major): q [n, H, D] and k, v [n, Hkv, D] with `*_row` elements between
// tokens; caches [num_blocks, S, Hkv, D]; block_tables [n, B]; lengths [n] positions filled,
// the new one included; out [n, H, D]. The G = H / Hkv query heads of a kv head share its keys.

#include "bfloat16.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using headrace::load;
using headrace::store;

template <typename T>
void decode_attention(const T* q, int64_t q_row, const T* k, int64_t k_row, const T* v,
                      int64_t v_row, T* k_cache, T* v_cache, const int64_t* slots,
                      const int64_t* block_tables, const int64_t* lengths, T* out, int64_t n,
                      int64_t width, int64_t block_size, int64_t heads, int64_t kv_heads,
                      int64_t dim, float scale) {
  const int64_t group = heads / kv_heads;
  const int64_t slot_size = kv_heads * dim;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(k_cache + slots[i] * slot_size, k + i * k_row, slot_size * sizeof(T));
      std::memcpy(v_cache + slots[i] * slot_size, v + i * v_row, slot_size * sizeof(T));
    }
    // The implied barrier: every new key is written before any is read.
    std::vector<float> query, scores, acc, row(dim);
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < kv_heads; ++h) {
        const int64_t length = lengths[i];
        const int64_t* table = block_tables + i * width;
        query.assign(group * dim, 0.0f);
        scores.assign(group * length, 0.0f);
        acc.assign(group * dim, 0.0f);
        for (int64_t g = 0; g < group; ++g) {
          const T* q_row_g = q + i * q_row + (h * group + g) * dim;
          for (int64_t d = 0; d < dim; ++d) query[g * dim + d] = load(q_row_g[d]) * scale;
        }
        for (int64_t p = 0; p < length; ++p) {
          const int64_t slot = table[p / block_size] * block_size + p % block_size;
          const T* key = k_cache + slot * slot_size + h * dim;
          for (int64_t d = 0; d < dim; ++d) row[d] = load(key[d]);
          for (int64_t g = 0; g < group; ++g) {
            const float* qg = query.data() + g * dim;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t d = 0; d < dim; ++d) dot += qg[d] * row[d];
            scores[g * length + p] = dot;
          }
        }
        for (int64_t g = 0; g < group; ++g) {
          float* s = scores.data() + g * length;
          float top = s[0];
          for (int64_t p = 1; p < length; ++p) top = s[p] > top ? s[p] : top;
          float total = 0.0f;
#pragma omp simd reduction(+ : total)
          for (int64_t p = 0; p < length; ++p) {
            s[p] = std::exp(s[p] - top);
            total += s[p];
          }
          for (int64_t p = 0; p < length; ++p) s[p] /= total;
        }
        for (int64_t p = 0; p < length; ++p) {
          const int64_t slot = table[p / block_size] * block_size + p % block_size;
          const T* value = v_cache + slot * slot_size + h * dim;
          for (int64_t d = 0; d < dim; ++d) row[d] = load(value[d]);
          for (int64_t g = 0; g < group; ++g) {
            const float weight = scores[g * length + p];
            float* a = acc.data() + g * dim;
#pragma omp simd
            for (int64_t d = 0; d < dim; ++d) a[d] += weight * row[d];
          }
        }
        for (int64_t g = 0; g < group; ++g) {
          T* out_row = out + (i * heads + h * group + g) * dim;
          for (int64_t d = 0; d < dim; ++d) store(acc[g * dim + d], out_row + d);
        }
      }
    }
  }
}

}  // namespace

#define HEADRACE_DECODE_ATTENTION(NAME, T)                                                      \
  extern "C" void NAME(const T* q, int64_t q_row, const T* k, int64_t k_row, const T* v,      \
                       int64_t v_row, T* k_cache, T* v_cache, const int64_t* slots,           \
                       const int64_t* block_tables, const int64_t* lengths, T* out, int64_t n, \
                       int64_t width, int64_t block_size, int64_t heads, int64_t kv_heads,    \
                       int64_t dim, float scale) {                                            \
    decode_attention<T>(q, q_row, k, k_row, v, v_row, k_cache, v_cache, slots, block_tables,  \
                        lengths, out, n, width, block_size, heads, kv_heads, dim, scale);     \
  }

HEADRACE_DECODE_ATTENTION(decode_attention_float32, float)
HEADRACE_DECODE_ATTENTION(decode_attention_bfloat16, uint16_t)
