// Small elementwise ops: x + alpha y, products, dropout's mask, the regularization gradient, and
// gathering a batch of rows. One grid-stride pass each.
#include "common.cuh"

// murmur3's fmix32 (hash32 of backends/ops/dropout.py): a bijection of 32-bit words that mixes every bit.
__device__ __forceinline__ unsigned int bp_hash32(unsigned int h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

// out = x + alpha y. Reads x and y, writes out: 3 * sizeof(T) per element.
// Error (notation in common.cuh): alpha arrives rounded, the product (unless fused into the sum)
// and the sum round. Cancellation in x + alpha y leaves the error relative to |alpha y|.
// bound[add_scaled] out: u * (2 * abs(alpha * y) + abs(result))
template <typename T>
__device__ void add_scaled(const T* x, const T* y, T* out, long long n, T alpha) {
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) out[i] = x[i] + alpha * y[i];
}

// out = a * b (dropout's backward: dL/dx = dL/dy * mask). 3 * sizeof(T) per element.
// bound[multiply] out: exact
template <typename T>
__device__ void multiply(const T* a, const T* b, T* out, long long n) {
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) out[i] = a[i] * b[i];
}

// Inverted dropout: element i is kept when fmix32((i mod 2^32) ^ key) >= threshold; the mask
// holds `scale` = 1 / (1 - p) where kept and 0 elsewhere; y = x * mask. The mask is a pure
// function of (key, i), so it equals the CPU's bit for bit. Reads x, writes y and the mask:
// 3 * sizeof(T) per element.
// bound[dropout_fwd] y: exact
// bound[dropout_fwd] mask: exact
template <typename T>
__device__ void dropout_forward(const T* x, T* y, T* mask, long long n, unsigned int key,
                                unsigned int threshold, T scale) {
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        const unsigned int h = bp_hash32((unsigned int)i ^ key);
        const T m = h >= threshold ? scale : T(0);
        mask[i] = m;
        y[i] = x[i] * m;
    }
}

// grad += l1 sign(w) + two_l2 w, in place (two_l2 = 2 l2, computed on the host). Reads w and
// grad, writes grad: 3 * sizeof(T) per element.
// Error: l1 and two_l2 arrive rounded (u |l1|, u |two_l2 w|); grad + l1 sign(w), the product
// (unless fused) and the last sum round.
// bound[l1_l2_grad] grad: u * (abs(grad) + 2 * abs(l1) + 2 * abs(two_l2 * w) + abs(result))
template <typename T>
__device__ void l1_l2_grad(const T* w, T* grad, long long n, T l1, T two_l2) {
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        grad[i] = grad[i] + l1 * bp_sign(w[i]) + two_l2 * w[i];
    }
}

// out[r, :] = x[index[r], :] for r < out_rows. Reads one row of x and writes one row of out per
// index: 2 * sizeof(T) per element (+ 8 bytes per row for the index).
// bound[take_rows] out: exact
template <typename T>
__device__ void take_rows(const T* x, const long long* index, T* out, long long out_rows, long long cols) {
    const long long n = out_rows * cols;
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        const long long r = i / cols;
        out[i] = x[index[r] * cols + (i - r * cols)];
    }
}

extern "C" __global__ void add_scaled_f32(const float* x, const float* y, float* out, long long n, float alpha) { add_scaled(x, y, out, n, alpha); }
extern "C" __global__ void add_scaled_f64(const double* x, const double* y, double* out, long long n, double alpha) { add_scaled(x, y, out, n, alpha); }
extern "C" __global__ void multiply_f32(const float* a, const float* b, float* out, long long n) { multiply(a, b, out, n); }
extern "C" __global__ void multiply_f64(const double* a, const double* b, double* out, long long n) { multiply(a, b, out, n); }
extern "C" __global__ void dropout_fwd_f32(const float* x, float* y, float* mask, long long n, unsigned int key, unsigned int threshold, float scale) { dropout_forward(x, y, mask, n, key, threshold, scale); }
extern "C" __global__ void dropout_fwd_f64(const double* x, double* y, double* mask, long long n, unsigned int key, unsigned int threshold, double scale) { dropout_forward(x, y, mask, n, key, threshold, scale); }
extern "C" __global__ void l1_l2_grad_f32(const float* w, float* grad, long long n, float l1, float two_l2) { l1_l2_grad(w, grad, n, l1, two_l2); }
extern "C" __global__ void l1_l2_grad_f64(const double* w, double* grad, long long n, double l1, double two_l2) { l1_l2_grad(w, grad, n, l1, two_l2); }
extern "C" __global__ void take_rows_f32(const float* x, const long long* index, float* out, long long out_rows, long long cols) { take_rows(x, index, out, out_rows, cols); }
extern "C" __global__ void take_rows_f64(const double* x, const long long* index, double* out, long long out_rows, long long cols) { take_rows(x, index, out, out_rows, cols); }
