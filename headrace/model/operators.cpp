// headrace's operators on CPU tensors, registered with torch's dispatcher.
//
// operators.py defines headrace::quantized_linear and headrace::decode_attention with Python
// implementations, which run on any device. For CPU tensors these C++ ones take their place: a
// call then costs a couple of microseconds of dispatch, where the Python one spent about 13 in
// the interpreter and ctypes, on each of the 151 calls of a decode step of SmolLM2-135M.
//
// They hold no kernels of their own. The kernels are quantized_matmul.cpp's and
// paged_attention.cpp's, built without torch's headers for the target CPU; native.py binds them
// here by name (headrace_bind), so that this file, which does include torch's headers, builds
// once per torch rather than once per target.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linear.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <utility>

namespace {

// The kernels' C signatures; activations and outputs are float or bfloat16 (uint16) by suffix.
using Linear4 = void (*)(const void* x, int64_t tokens, int64_t k, const void* packed,
                         const void* scale, const void* min, int64_t n, void* out, int64_t ldo);
using Linear8 = void (*)(const void* x, int64_t tokens, int64_t k, const void* q,
                         const void* scale, int64_t group, int64_t n, void* out, int64_t ldo);
using Linear16 = void (*)(const void* x, int64_t tokens, int64_t k, const void* w, int64_t n,
                          void* out, int64_t ldo);
using Dequantize4 = void (*)(const void* packed, const void* scale, const void* min, int64_t n,
                             int64_t k, void* out);
using Dequantize8 = void (*)(const void* q, const void* scale, int64_t group, int64_t n,
                             int64_t k, void* out);
using Attention = void (*)(const void* q, int64_t q_row, const void* k, int64_t k_row,
                           const void* v, int64_t v_row, void* k_cache, void* v_cache,
                           const void* slots, const void* block_tables, const void* lengths,
                           void* out, int64_t n, int64_t width, int64_t block_size,
                           int64_t heads, int64_t kv_heads, int64_t dim, float scale);

// The kernels for activations of one dtype.
struct Kernels {
  Linear4 q4_linear = nullptr;
  Linear8 q8_linear = nullptr;
  Linear16 f16_linear = nullptr;
  Linear16 bf16_linear = nullptr;
  Dequantize4 q4_dequantize = nullptr;
  Dequantize8 q8_dequantize = nullptr;
  Attention decode_attention = nullptr;
};

Kernels float32_kernels, bfloat16_kernels;

const Kernels& kernels_for(const at::Tensor& x) {
  const at::ScalarType dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
              "headrace's CPU kernels take float32 or bfloat16 activations, not ", dtype);
  const Kernels& kernels = dtype == at::kFloat ? float32_kernels : bfloat16_kernels;
  TORCH_CHECK(kernels.decode_attention != nullptr, "headrace's CPU kernels are not bound");
  return kernels;
}

// A weight part's columns: 4-bit parts hold two per byte.
int64_t columns(const at::Tensor& values) {
  return values.size(1) * (values.scalar_type() == at::kByte ? 2 : 1);
}

// A part's rows dequantized into out, rows [N, K] of the activations' dtype.
void dequantize_part(const Kernels& kernels, const at::Tensor& values, const at::Tensor& scale,
                     const at::Tensor& min, at::Tensor out) {
  const int64_t n = values.size(0), k = columns(values);
  switch (values.scalar_type()) {
    case at::kByte:
      kernels.q4_dequantize(values.data_ptr(), scale.data_ptr(), min.data_ptr(), n, k,
                            out.data_ptr());
      break;
    case at::kChar:
      kernels.q8_dequantize(values.data_ptr(), scale.data_ptr(), k / scale.size(1), n, k,
                            out.data_ptr());
      break;
    default:  // 16-bit: widened by torch's own conversion
      out.copy_(values);
  }
}

// out[:, :N] = x @ W.T for a part's weight W of N rows; x [T, K] contiguous, out's rows ldo
// elements apart.
void multiply_part(const Kernels& kernels, const at::Tensor& x, const at::Tensor& values,
                   const at::Tensor& scale, const at::Tensor& min, void* out, int64_t ldo) {
  const int64_t tokens = x.size(0), k = x.size(1), n = values.size(0);
  switch (values.scalar_type()) {
    case at::kByte:
      kernels.q4_linear(x.data_ptr(), tokens, k, values.data_ptr(), scale.data_ptr(),
                        min.data_ptr(), n, out, ldo);
      break;
    case at::kChar:
      kernels.q8_linear(x.data_ptr(), tokens, k, values.data_ptr(), scale.data_ptr(),
                        k / scale.size(1), n, out, ldo);
      break;
    case at::kHalf:
      kernels.f16_linear(x.data_ptr(), tokens, k, values.data_ptr(), n, out, ldo);
      break;
    default:  // bfloat16
      kernels.bf16_linear(x.data_ptr(), tokens, k, values.data_ptr(), n, out, ldo);
  }
}

// x [T, K] @ the parts' rows stacked, plus bias: by the kernels below dequantize_rows tokens,
// else by dequantizing the weight for this call and torch's GEMM (see quantized.py).
at::Tensor quantized_linear(const at::Tensor& x, at::TensorList values, at::TensorList scales,
                            at::TensorList mins, const std::optional<at::Tensor>& bias,
                            int64_t dequantize_rows) {
  const Kernels& kernels = kernels_for(x);
  const int64_t tokens = x.size(0);
  int64_t rows = 0;
  for (const at::Tensor& part : values) rows += part.size(0);
  if (tokens == 0 || tokens >= dequantize_rows) {
    at::Tensor weight = at::empty({rows, columns(values[0])}, x.options());
    for (int64_t i = 0, start = 0; i < static_cast<int64_t>(values.size()); ++i) {
      const int64_t n = values[i].size(0);
      dequantize_part(kernels, values[i], scales[i], mins[i], weight.narrow(0, start, n));
      start += n;
    }
    return at::linear(x, weight, bias);
  }
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty({tokens, rows}, x.options());
  auto* bytes = static_cast<char*>(out.data_ptr());
  for (int64_t i = 0, start = 0; i < static_cast<int64_t>(values.size()); ++i) {
    multiply_part(kernels, input, values[i], scales[i], mins[i], bytes + start * out.itemsize(),
                  rows);
    start += values[i].size(0);
  }
  if (bias.has_value()) out.add_(*bias);
  return out;
}

// q [n, H, D], k and v [n, Hkv, D] of one token per sequence -> [n, H, D]; writes k and v to
// the caches. Rows may lie apart (q, k and v are views of one projection), heads within one
// may not.
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& slots,
                            const at::Tensor& block_tables, const at::Tensor& lens) {
  auto rows_of_heads = [](const at::Tensor& x) {
    return x.stride(2) == 1 && x.stride(1) == x.size(2) ? x : x.contiguous();
  };
  const at::Tensor q_rows = rows_of_heads(q), k_rows = rows_of_heads(k), v_rows = rows_of_heads(v);
  const at::Tensor tables = block_tables.contiguous();
  const int64_t n = q.size(0), heads = q.size(1), dim = q.size(2);
  at::Tensor out = at::empty(q.sizes(), q.options());
  kernels_for(q).decode_attention(
      q_rows.data_ptr(), q_rows.stride(0), k_rows.data_ptr(), k_rows.stride(0),
      v_rows.data_ptr(), v_rows.stride(0), k_cache.data_ptr(), v_cache.data_ptr(),
      slots.contiguous().data_ptr(), tables.data_ptr(), lens.contiguous().data_ptr(),
      out.data_ptr(), n, tables.size(1), k_cache.size(1), heads, k_cache.size(2), dim,
      static_cast<float>(1.0 / std::sqrt(static_cast<double>(dim))));
  return out;
}

// Points a kernel of this table at `function`; `name` without the dtype suffix.
bool bind(Kernels& kernels, std::string_view name, void* function) {
  if (name == "q4_linear") kernels.q4_linear = reinterpret_cast<Linear4>(function);
  else if (name == "q8_linear") kernels.q8_linear = reinterpret_cast<Linear8>(function);
  else if (name == "f16_linear") kernels.f16_linear = reinterpret_cast<Linear16>(function);
  else if (name == "bf16_linear") kernels.bf16_linear = reinterpret_cast<Linear16>(function);
  else if (name == "q4_dequantize") kernels.q4_dequantize = reinterpret_cast<Dequantize4>(function);
  else if (name == "q8_dequantize") kernels.q8_dequantize = reinterpret_cast<Dequantize8>(function);
  else if (name == "decode_attention") kernels.decode_attention = reinterpret_cast<Attention>(function);
  else return false;
  return true;
}

}  // namespace

// Points the operators at a kernel, named as its library exports it ("q4_linear_float32");
// false for a name they do not use.
extern "C" bool headrace_bind(const char* name, void* function) {
  const std::string_view full(name);
  for (auto [suffix, kernels] : {std::pair{std::string_view("_float32"), &float32_kernels},
                                 std::pair{std::string_view("_bfloat16"), &bfloat16_kernels}}) {
    if (full.ends_with(suffix)) return bind(*kernels, full.substr(0, full.size() - suffix.size()), function);
  }
  return false;
}

TORCH_LIBRARY_IMPL(headrace, CPU, m) {
  m.impl("quantized_linear", &quantized_linear);
  m.impl("decode_attention", &decode_attention);
}
