// Decode attention over the paged KV cache, reading each sequence's blocks in place.
//
// For every decoding sequence: write its new key and value to their slot, then attend with its
// query heads over the positions it has filled. The work goes to threads in spans of a
// sequence's positions: a whole sequence, unless the sequences are too few to keep the threads
// busy, when each is split and its spans' softmax parts merged (flash-decoding). A span reads
// the rows of keys, then of values, whole (every kv head) and block after block, prefetching the
// next block's row a block ahead: 32 sequences of 256 positions went from 1.09 to 0.43 ms a
// layer (bfloat16, 2 threads), one from 31 to 18 us. Plain C++ with OpenMP, no torch headers,
// so it builds in about a second (headrace/model/native.py builds and loads it).
//
// Layouts (elements, row-major): q [n, H, D] and k, v [n, Hkv, D] with `*_row` elements between
// tokens; caches [num_blocks, S, Hkv, D]; block_tables [n, B]; lengths [n] positions filled,
// the new one included; out [n, H, D]. The G = H / Hkv query heads of a kv head share its keys.

#include "bfloat16.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

using headrace::load;
using headrace::store;

// Positions per task at least, so that a task's work outweighs its scheduling and merging.
constexpr int64_t kMinSpan = 64;

// Where a task's results go: per query head, the running max and sum of exponentials of its
// scores and the exponential-weighted sum of values, [group][2 + dim].
struct Partial {
  float* data;
  int64_t dim;
  float& top(int64_t g) const { return data[g * (2 + dim)]; }
  float& total(int64_t g) const { return data[g * (2 + dim) + 1]; }
  float* acc(int64_t g) const { return data + g * (2 + dim) + 2; }
};

template <int64_t kDim>
inline float dot(const float* a, const float* b, int64_t dim) {
  const int64_t d_end = kDim ? kDim : dim;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < d_end; ++d) sum += a[d] * b[d];
  return sum;
}

// A row of the cache as float: the row itself for float32, else widened into `buffer`.
template <typename T>
inline const float* as_float(const T* row, float* buffer, int64_t size) {
  if constexpr (std::is_same_v<T, float>) {
    return row;
  } else {
#pragma omp simd
    for (int64_t d = 0; d < size; ++d) buffer[d] = load(row[d]);
    return buffer;
  }
}

// How far ahead a span reads: the same position of the next block, whose rows are elsewhere.
template <typename T>
inline void prefetch_row(const T* row, int64_t elements) {
  const char* bytes = reinterpret_cast<const char*>(row);
  for (int64_t at = 0; at < elements * static_cast<int64_t>(sizeof(T)); at += 64) {
    __builtin_prefetch(bytes + at);
  }
}

// A sequence's query heads over its positions [begin, end). `query` [heads][dim] is scaled;
// `scores` holds heads * (end - begin) floats, `row` slot_size. Each position's row of keys
// (then of values) is read whole, all kv heads, as it lies in the cache.
template <typename T, int64_t kDim>
void attend_span(const float* query, int64_t heads, int64_t kv_heads, int64_t dim,
                 const T* k_cache, const T* v_cache, const int64_t* table, int64_t begin,
                 int64_t end, int64_t block_size, float* scores, float* row,
                 const Partial& partial) {
  const int64_t span = end - begin, group = heads / kv_heads, slot_size = kv_heads * dim;
  // Block by block, so a position's slot costs no division.
  auto each_row = [&](const T* cache, auto&& use) {
    for (int64_t p = begin; p < end;) {
      const int64_t block = p / block_size, stop = std::min(end, (block + 1) * block_size);
      const int64_t offset = p % block_size;
      const T* at = cache + (table[block] * block_size + offset) * slot_size;
      const T* ahead = stop < end ? cache + table[block + 1] * block_size * slot_size : nullptr;
      for (int64_t o = offset; p < stop; ++p, ++o, at += slot_size) {
        if (ahead != nullptr) prefetch_row(ahead + o * slot_size, slot_size);
        use(p - begin, as_float(at, row, slot_size));
      }
    }
  };
  each_row(k_cache, [&](int64_t i, const float* keys) {
    for (int64_t h = 0; h < heads; ++h) {
      scores[h * span + i] = dot<kDim>(query + h * dim, keys + (h / group) * dim, dim);
    }
  });
  for (int64_t h = 0; h < heads; ++h) {
    float* s = scores + h * span;
    float top = s[0];
    for (int64_t i = 1; i < span; ++i) top = std::max(top, s[i]);
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t i = 0; i < span; ++i) {
      s[i] = std::exp(s[i] - top);
      total += s[i];
    }
    partial.top(h) = top;
    partial.total(h) = total;
    std::fill_n(partial.acc(h), dim, 0.0f);
  }
  each_row(v_cache, [&](int64_t i, const float* values) {
    const int64_t d_end = kDim ? kDim : dim;
    for (int64_t h = 0; h < heads; ++h) {
      const float weight = scores[h * span + i];
      const float* value = values + (h / group) * dim;
      float* a = partial.acc(h);
#pragma omp simd
      for (int64_t d = 0; d < d_end; ++d) a[d] += weight * value[d];
    }
  });
}

template <typename T, int64_t kDim>
void decode_attention(const T* q, int64_t q_row, const T* k, int64_t k_row, const T* v,
                      int64_t v_row, T* k_cache, T* v_cache, const int64_t* slots,
                      const int64_t* block_tables, const int64_t* lengths, T* out, int64_t n,
                      int64_t width, int64_t block_size, int64_t heads, int64_t kv_heads,
                      int64_t dim, float scale) {
  const int64_t slot_size = kv_heads * dim;
  // Tasks: a span of a sequence's positions. A sequence is split into spans only where the
  // tasks would otherwise be too few to keep every thread busy (a few long sequences); the
  // spans then merge as flash-decoding's do.
  int64_t positions = 0;
  for (int64_t i = 0; i < n; ++i) positions += lengths[i];
  const int64_t wanted = 4 * static_cast<int64_t>(omp_get_max_threads());
  const int64_t span = std::max(kMinSpan, positions / wanted);
  std::vector<int64_t> first_span(n + 1, 0);  // sequence i's: [first_span[i], first_span[i+1])
  for (int64_t i = 0; i < n; ++i) {
    first_span[i + 1] = first_span[i] + (lengths[i] + span - 1) / span;
  }
  const int64_t spans = first_span[n];
  std::vector<int64_t> owner(spans);
  for (int64_t i = 0; i < n; ++i) {
    std::fill(owner.begin() + first_span[i], owner.begin() + first_span[i + 1], i);
  }
  const int64_t stride = heads * (2 + dim);
  std::vector<float> partials(spans * stride);
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(k_cache + slots[i] * slot_size, k + i * k_row, slot_size * sizeof(T));
      std::memcpy(v_cache + slots[i] * slot_size, v + i * v_row, slot_size * sizeof(T));
    }
    // The implied barrier: every new key is written before any is read.
    std::vector<float> query(heads * dim), scores(heads * span), row(slot_size);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < spans; ++t) {
      const int64_t i = owner[t];
      const int64_t begin = (t - first_span[i]) * span;
      const int64_t end = std::min(lengths[i], begin + span);
      for (int64_t h = 0; h < heads; ++h) {
        const T* q_row_h = q + i * q_row + h * dim;
        for (int64_t d = 0; d < dim; ++d) query[h * dim + d] = load(q_row_h[d]) * scale;
      }
      attend_span<T, kDim>(query.data(), heads, kv_heads, dim, k_cache, v_cache,
                           block_tables + i * width, begin, end, block_size, scores.data(),
                           row.data(), Partial{partials.data() + t * stride, dim});
    }
    // Each query head's spans merged:
    // out = sum(acc * e^(top - max)) / sum(total * e^(top - max)).
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        float top = -INFINITY;
        for (int64_t t = first_span[i]; t < first_span[i + 1]; ++t) {
          top = std::max(top, Partial{partials.data() + t * stride, dim}.top(h));
        }
        float total = 0.0f;
        float* acc = row.data();
        std::fill_n(acc, dim, 0.0f);
        for (int64_t t = first_span[i]; t < first_span[i + 1]; ++t) {
          const Partial partial{partials.data() + t * stride, dim};
          const float weight = std::exp(partial.top(h) - top);
          total += partial.total(h) * weight;
          const float* a = partial.acc(h);
#pragma omp simd
          for (int64_t d = 0; d < dim; ++d) acc[d] += weight * a[d];
        }
        T* out_row = out + (i * heads + h) * dim;
        for (int64_t d = 0; d < dim; ++d) store(acc[d] / total, out_row + d);
      }
    }
  }
}

template <typename T>
void decode_attention_any(const T* q, int64_t q_row, const T* k, int64_t k_row, const T* v,
                          int64_t v_row, T* k_cache, T* v_cache, const int64_t* slots,
                          const int64_t* block_tables, const int64_t* lengths, T* out,
                          int64_t n, int64_t width, int64_t block_size, int64_t heads,
                          int64_t kv_heads, int64_t dim, float scale) {
  // The common head sizes get loops of a known length.
  auto run = [&](auto kernel) {
    kernel(q, q_row, k, k_row, v, v_row, k_cache, v_cache, slots, block_tables, lengths, out, n,
           width, block_size, heads, kv_heads, dim, scale);
  };
  switch (dim) {
    case 64: return run(decode_attention<T, 64>);
    case 128: return run(decode_attention<T, 128>);
    default: return run(decode_attention<T, 0>);
  }
}

}  // namespace

#define HEADRACE_DECODE_ATTENTION(NAME, T)                                                      \
  extern "C" void NAME(const T* q, int64_t q_row, const T* k, int64_t k_row, const T* v,      \
                       int64_t v_row, T* k_cache, T* v_cache, const int64_t* slots,           \
                       const int64_t* block_tables, const int64_t* lengths, T* out, int64_t n, \
                       int64_t width, int64_t block_size, int64_t heads, int64_t kv_heads,    \
                       int64_t dim, float scale) {                                            \
    decode_attention_any<T>(q, q_row, k, k_row, v, v_row, k_cache, v_cache, slots,           \
                            block_tables, lengths, out, n, width, block_size, heads, kv_heads, \
                            dim, scale);                                                      \
  }

HEADRACE_DECODE_ATTENTION(decode_attention_float32, float)
HEADRACE_DECODE_ATTENTION(decode_attention_bfloat16, uint16_t)
