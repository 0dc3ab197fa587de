// Softmax over each row, forward (with or without the dense layer's bias) and backward: one
// block per row (grid-stride over rows), its threads striding over the columns, with the row's
// max and sum reduced in shared memory in a fixed order.
#include "common.cuh"

// y = softmax(z + b) per row, log-sum-exp shifted: y_j = e^(v_j - m) / sum_k e^(v_k - m),
// m = max_k v_k. `bias` null means no bias. Passes 2 and 3 re-read the row the block has just
// read (L1/L2 hits), so DRAM sees z read once and y written once: 2 * sizeof(T) per element.
// Error (notation in common.cuh): v_k - m rounds (u |v_k - m| <= 2u M, M the row's largest |v|;
// with a bias, v = z + b also rounds: u M more), so each e_k = exp(v_k - m) is within
// (5 + 3M) u relative ((5 + 2M) u without a bias); the row sum of cols positive terms, in any
// order, adds (cols - 1) u; the quotient u.
// bound[softmax_fwd] y: u * (10 + 4 * rowmax(abs(x)) + cols) * result
// bound[bias_softmax_fwd] y: u * (10 + 6 * rowmax(abs(z + bias)) + cols) * result
template <typename T>
__device__ void softmax_rows(const T* z, const T* bias, T* y, long long rows, long long cols) {
    __shared__ T scratch[BP_MAX_BLOCK];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* zr = z + r * cols;
        T* yr = y + r * cols;
        // Threads past the row's end contribute element 0, a member of the row: max unchanged.
        T m = bias ? zr[0] + bias[0] : zr[0];
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            m = BpMax::apply(m, bias ? zr[c] + bias[c] : zr[c]);
        }
        m = bp_block_reduce<BpMax>(m, scratch);
        T s = T(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            s += bp_exp((bias ? zr[c] + bias[c] : zr[c]) - m);
        }
        s = bp_block_reduce<BpSum>(s, scratch);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            yr[c] = bp_exp((bias ? zr[c] + bias[c] : zr[c]) - m) / s;
        }
    }
}

// dz_j = y_j (dy_j - sum_k dy_k y_k) per row. Reads dy and y (the second pass from L1/L2),
// writes dz: 3 * sizeof(T) per element.
// Error: the dot product of cols terms (products fused into the sum or not) is within
// cols u sum_k |dy_k y_k|; dy_j - dot and the product with y_j round once each.
// bound[softmax_bwd] dz: u * (abs(result) + abs(y) * (abs(dy - rowsum(dy * y)) + cols * rowsum(abs(dy * y))))
template <typename T>
__device__ void softmax_rows_backward(const T* dy, const T* y, T* dz, long long rows, long long cols) {
    __shared__ T scratch[BP_MAX_BLOCK];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long base = r * cols;
        T dot = T(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) dot += dy[base + c] * y[base + c];
        dot = bp_block_reduce<BpSum>(dot, scratch);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            dz[base + c] = y[base + c] * (dy[base + c] - dot);
        }
    }
}

extern "C" __global__ void bias_softmax_fwd_f32(const float* z, const float* bias, float* y, long long rows, long long cols) { softmax_rows(z, bias, y, rows, cols); }
extern "C" __global__ void bias_softmax_fwd_f64(const double* z, const double* bias, double* y, long long rows, long long cols) { softmax_rows(z, bias, y, rows, cols); }
extern "C" __global__ void softmax_fwd_f32(const float* x, float* y, long long rows, long long cols) { softmax_rows(x, (const float*)0, y, rows, cols); }
extern "C" __global__ void softmax_fwd_f64(const double* x, double* y, long long rows, long long cols) { softmax_rows(x, (const double*)0, y, rows, cols); }
extern "C" __global__ void softmax_bwd_f32(const float* dy, const float* y, float* dz, long long rows, long long cols) { softmax_rows_backward(dy, y, dz, rows, cols); }
extern "C" __global__ void softmax_bwd_f64(const double* dy, const double* y, double* dz, long long rows, long long cols) { softmax_rows_backward(dy, y, dz, rows, cols); }
