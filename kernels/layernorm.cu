// Layer normalization of each row of a (rows, cols) matrix over its cols values: one block per
// row (grid-stride over rows), each row's sums with bp_block_reduce in a fixed tree order; the
// parameter gradients are column sums with the tiles of reductions.cu. Deterministic, no atomics.
#include "common.cuh"

// mean = sum_j x_j / n;  var = sum_j (x_j - mean)^2 / n  (two passes, as the reference);
// inv_std = 1 / sqrt(var + eps);  xhat = (x - mean) inv_std;  y = gamma xhat + beta  (n = cols).
// DRAM: reads x (later passes over the row from L1/L2), writes y and xhat: 3 * sizeof(T) per
// element, and inv_std: one per row.
// Error (notation in common.cuh): as batchnorm_fwd_train's, over a row instead of a column: the
// mean within dmu; the variance (x - mean rounds, the mean's first-order effect on sum c^2
// vanishes as sum c = 0; squares, sum and division); inv_std (eps arriving rounded, the sum, sqrt
// and the reciprocal); xhat; y = gamma xhat + beta, fused or not.
// bound[layernorm_fwd] mu = rowsum(x) / cols
// bound[layernorm_fwd] dmu = u * ((cols - 1) * rowsum(abs(x)) / cols + abs(mu))
// bound[layernorm_fwd] c = x - mu
// bound[layernorm_fwd] variance = rowsum(c * c) / cols
// bound[layernorm_fwd] dvariance = (cols + 3) * u * variance
// bound[layernorm_fwd] inv = 1 / sqrt(variance + eps)
// bound[layernorm_fwd] rinv = (dvariance + u * (2 * eps + variance)) / (2 * (variance + eps)) + 2 * u
// bound[layernorm_fwd] dxhat = (dmu + u * abs(c)) * inv + abs(c * inv) * (rinv + u)
// bound[layernorm_fwd] inv_std: inv * rinv
// bound[layernorm_fwd] xhat: dxhat
// bound[layernorm_fwd] y: abs(gamma) * dxhat + u * (abs(gamma * c * inv) + abs(result))
template <typename T>
__device__ void layernorm_forward(const T* x, const T* gamma, const T* beta, T* y, T* xhat, T* inv_std,
                                  long long rows, long long cols, T eps) {
    __shared__ T scratch[BP_MAX_BLOCK];
    const T n = T(cols);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* row = x + r * cols;
        T acc = T(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) acc += row[c];
        const T mu = bp_block_reduce<BpSum>(acc, scratch) / n;
        acc = T(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const T centered = row[c] - mu;
            acc += centered * centered;
        }
        const T inv = T(1) / bp_sqrt(bp_block_reduce<BpSum>(acc, scratch) / n + eps);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const T normalized = (row[c] - mu) * inv;
            xhat[r * cols + c] = normalized;
            y[r * cols + c] = gamma[c] * normalized + beta[c];
        }
        if (threadIdx.x == 0) inv_std[r] = inv;
    }
}

// g = dy gamma;  grad_x = inv_std / n (n g - sum_j g_j - xhat sum_j g_j xhat_j), per row.
// DRAM: reads dy and xhat (the second pass from L1/L2), writes grad_x: 3 * sizeof(T) per element.
// Error: g rounds (u |g|); the two row sums, of rounded terms (the second of rounded products);
// n g - sum g - xhat sum g xhat carries their errors and rounds up to three times (fused or not),
// relative to its terms: it cancels (its sum over the row is zero); inv_std / n and the product
// round.
// bound[layernorm_bwd] g = dy * gamma
// bound[layernorm_bwd] sg = rowsum(g)
// bound[layernorm_bwd] sgx = rowsum(g * xhat)
// bound[layernorm_bwd] dsg = cols * u * rowsum(abs(g))
// bound[layernorm_bwd] dsgx = (cols + 1) * u * rowsum(abs(g * xhat))
// bound[layernorm_bwd] inner = cols * g - sg - xhat * sgx
// bound[layernorm_bwd] dinner = 2 * cols * u * abs(g) + dsg + abs(xhat) * dsgx + u * (abs(cols * g - sg) + abs(xhat * sgx) + abs(inner))
// bound[layernorm_bwd] grad_x: abs(inv_std / cols) * (dinner + 3 * u * abs(inner))
template <typename T>
__device__ void layernorm_backward(const T* dy, const T* xhat, const T* gamma, const T* inv_std, T* grad_x,
                                   long long rows, long long cols) {
    __shared__ T scratch[BP_MAX_BLOCK];
    const T n = T(cols);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long start = r * cols;
        T sum_g = T(0);
        T sum_g_xhat = T(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const T g = dy[start + c] * gamma[c];
            sum_g += g;
            sum_g_xhat += g * xhat[start + c];
        }
        sum_g = bp_block_reduce<BpSum>(sum_g, scratch);
        sum_g_xhat = bp_block_reduce<BpSum>(sum_g_xhat, scratch);
        const T factor = inv_std[r] / n;
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const T g = dy[start + c] * gamma[c];
            grad_x[start + c] = factor * (n * g - sum_g - xhat[start + c] * sum_g_xhat);
        }
    }
}

// grad_gamma = sum over rows of dy xhat;  grad_beta = sum over rows of dy: column tiles as in
// column_sums (reductions.cu); blockDim.x must be a multiple of BP_TILE. Reads dy and xhat once:
// 2 * sizeof(T) per element.
// bound[layernorm_param_grads] grad_gamma: rows * u * colsum(abs(dy * xhat))
// bound[layernorm_param_grads] grad_beta: (rows - 1) * u * colsum(abs(dy))
template <typename T>
__device__ void layernorm_param_grads(const T* dy, const T* xhat, T* grad_gamma, T* grad_beta, long long rows,
                                      long long cols) {
    __shared__ T scratch[BP_MAX_BLOCK];
    const unsigned int lane = threadIdx.x % BP_TILE;
    const unsigned int group = threadIdx.x / BP_TILE;
    const unsigned int groups = blockDim.x / BP_TILE;
    for (long long tile = blockIdx.x; tile * BP_TILE < cols; tile += gridDim.x) {
        const long long c = tile * BP_TILE + lane;
        T sum_dy = T(0);
        T sum_dy_xhat = T(0);
        if (c < cols) {
            for (long long r = group; r < rows; r += groups) {
                sum_dy += dy[r * cols + c];
                sum_dy_xhat += dy[r * cols + c] * xhat[r * cols + c];
            }
        }
        const T gb = bp_fold_groups(sum_dy, scratch);
        const T gg = bp_fold_groups(sum_dy_xhat, scratch);
        if (group == 0 && c < cols) {
            grad_gamma[c] = gg;
            grad_beta[c] = gb;
        }
    }
}

extern "C" __global__ void layernorm_fwd_f32(const float* x, const float* gamma, const float* beta, float* y, float* xhat, float* inv_std, long long rows, long long cols, float eps) { layernorm_forward(x, gamma, beta, y, xhat, inv_std, rows, cols, eps); }
extern "C" __global__ void layernorm_fwd_f64(const double* x, const double* gamma, const double* beta, double* y, double* xhat, double* inv_std, long long rows, long long cols, double eps) { layernorm_forward(x, gamma, beta, y, xhat, inv_std, rows, cols, eps); }
extern "C" __global__ void layernorm_bwd_f32(const float* dy, const float* xhat, const float* gamma, const float* inv_std, float* grad_x, long long rows, long long cols) { layernorm_backward(dy, xhat, gamma, inv_std, grad_x, rows, cols); }
extern "C" __global__ void layernorm_bwd_f64(const double* dy, const double* xhat, const double* gamma, const double* inv_std, double* grad_x, long long rows, long long cols) { layernorm_backward(dy, xhat, gamma, inv_std, grad_x, rows, cols); }
extern "C" __global__ void layernorm_param_grads_f32(const float* dy, const float* xhat, float* grad_gamma, float* grad_beta, long long rows, long long cols) { layernorm_param_grads(dy, xhat, grad_gamma, grad_beta, rows, cols); }
extern "C" __global__ void layernorm_param_grads_f64(const double* dy, const double* xhat, double* grad_gamma, double* grad_beta, long long rows, long long cols) { layernorm_param_grads(dy, xhat, grad_gamma, grad_beta, rows, cols); }
