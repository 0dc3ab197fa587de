// Batch normalization over the batch axis of a (rows, cols) matrix, one feature per column.
// Training forward and backward reduce columns with the tiles of reductions.cu (BP_TILE columns
// per block, groups of threads over rows, groups folded in order): deterministic, no atomics.
// blockDim.x must be a multiple of BP_TILE.
#include "common.cuh"

// mean = sum_i x_i / n;  var = sum_i (x_i - mean)^2 / n  (two passes, as the reference);
// inv_std = 1 / sqrt(var + eps);  xhat = (x - mean) inv_std;  y = gamma xhat + beta.
// DRAM: reads x (passes 2 and 3 re-read the tile from L2), writes y and xhat:
// 3 * sizeof(T) per element.
// Error (notation in common.cuh): the mean, a sum of rows terms and a division, within dmu. The
// variance: x - mean rounds (u |c|) and carries the mean's error, whose first-order effect on
// sum c^2 vanishes (sum c = 0); the squares, the sum and the division add 1 + (rows - 1) + 1.
// inv_std: eps arrives rounded, the sum, sqrt (halving the relative error) and the reciprocal
// round. xhat = (x - mean) inv_std; y = gamma xhat + beta (fused or not).
// bound[batchnorm_fwd_train] mu = colsum(x) / rows
// bound[batchnorm_fwd_train] dmu = u * ((rows - 1) * colsum(abs(x)) / rows + abs(mu))
// bound[batchnorm_fwd_train] c = x - mu
// bound[batchnorm_fwd_train] variance = colsum(c * c) / rows
// bound[batchnorm_fwd_train] dvariance = (rows + 3) * u * variance
// bound[batchnorm_fwd_train] inv = 1 / sqrt(variance + eps)
// bound[batchnorm_fwd_train] rinv = (dvariance + u * (2 * eps + variance)) / (2 * (variance + eps)) + 2 * u
// bound[batchnorm_fwd_train] dxhat = (dmu + u * abs(c)) * inv + abs(c * inv) * (rinv + u)
// bound[batchnorm_fwd_train] mean: dmu
// bound[batchnorm_fwd_train] var: dvariance
// bound[batchnorm_fwd_train] inv_std: inv * rinv
// bound[batchnorm_fwd_train] xhat: dxhat
// bound[batchnorm_fwd_train] y: abs(gamma) * dxhat + u * (abs(gamma * c * inv) + abs(result))
template <typename T>
__device__ void batchnorm_forward_train(const T* x, const T* gamma, const T* beta, T* y, T* xhat,
                                        T* mean, T* var, T* inv_std, long long rows, long long cols,
                                        T eps) {
    __shared__ T scratch[BP_MAX_BLOCK];
    const unsigned int lane = threadIdx.x % BP_TILE;
    const unsigned int group = threadIdx.x / BP_TILE;
    const unsigned int groups = blockDim.x / BP_TILE;
    const T n = T(rows);
    for (long long tile = blockIdx.x; tile * BP_TILE < cols; tile += gridDim.x) {
        const long long c = tile * BP_TILE + lane;
        const bool active = c < cols;
        T acc = T(0);
        if (active) {
            for (long long r = group; r < rows; r += groups) acc += x[r * cols + c];
        }
        const T mu = bp_fold_groups(acc, scratch) / n;
        acc = T(0);
        if (active) {
            for (long long r = group; r < rows; r += groups) {
                const T centered = x[r * cols + c] - mu;
                acc += centered * centered;
            }
        }
        const T v = bp_fold_groups(acc, scratch) / n;
        const T inv = T(1) / bp_sqrt(v + eps);
        if (active) {
            for (long long r = group; r < rows; r += groups) {
                const long long i = r * cols + c;
                const T normalized = (x[i] - mu) * inv;
                xhat[i] = normalized;
                y[i] = gamma[c] * normalized + beta[c];
            }
            if (group == 0) {
                mean[c] = mu;
                var[c] = v;
                inv_std[c] = inv;
            }
        }
    }
}

// grad_beta = sum_i dy_i;  grad_gamma = sum_i dy_i xhat_i;
// grad_x = gamma inv_std / n (n dy - grad_beta - xhat grad_gamma).
// DRAM: reads dy and xhat (the second pass from L2), writes grad_x: 3 * sizeof(T) per element.
// Error: two column sums (the second of products); n dy - grad_beta - xhat grad_gamma carries
// their errors and rounds up to three times (products fused or not), relative to its terms:
// it cancels (its sum over the column is zero). gamma inv_std / n and the last product round.
// bound[batchnorm_bwd] gb = colsum(dy)
// bound[batchnorm_bwd] gg = colsum(dy * xhat)
// bound[batchnorm_bwd] dgb = (rows - 1) * u * colsum(abs(dy))
// bound[batchnorm_bwd] dgg = rows * u * colsum(abs(dy * xhat))
// bound[batchnorm_bwd] inner = rows * dy - gb - xhat * gg
// bound[batchnorm_bwd] dinner = dgb + abs(xhat) * dgg + u * (abs(rows * dy) + abs(rows * dy - gb) + abs(xhat * gg) + abs(inner))
// bound[batchnorm_bwd] grad_beta: dgb
// bound[batchnorm_bwd] grad_gamma: dgg
// bound[batchnorm_bwd] grad_x: abs(gamma * inv_std / rows) * (dinner + 3 * u * abs(inner))
template <typename T>
__device__ void batchnorm_backward(const T* dy, const T* xhat, const T* gamma, const T* inv_std,
                                   T* grad_x, T* grad_gamma, T* grad_beta, long long rows,
                                   long long cols) {
    __shared__ T scratch[BP_MAX_BLOCK];
    const unsigned int lane = threadIdx.x % BP_TILE;
    const unsigned int group = threadIdx.x / BP_TILE;
    const unsigned int groups = blockDim.x / BP_TILE;
    const T n = T(rows);
    for (long long tile = blockIdx.x; tile * BP_TILE < cols; tile += gridDim.x) {
        const long long c = tile * BP_TILE + lane;
        const bool active = c < cols;
        T sum_dy = T(0);
        T sum_dy_xhat = T(0);
        if (active) {
            for (long long r = group; r < rows; r += groups) {
                sum_dy += dy[r * cols + c];
                sum_dy_xhat += dy[r * cols + c] * xhat[r * cols + c];
            }
        }
        const T gb = bp_fold_groups(sum_dy, scratch);
        const T gg = bp_fold_groups(sum_dy_xhat, scratch);
        if (active) {
            const T factor = gamma[c] * inv_std[c] / n;
            for (long long r = group; r < rows; r += groups) {
                const long long i = r * cols + c;
                grad_x[i] = factor * (n * dy[i] - gb - xhat[i] * gg);
            }
            if (group == 0) {
                grad_gamma[c] = gg;
                grad_beta[c] = gb;
            }
        }
    }
}

// y = gamma (x - running_mean) / sqrt(running_var + eps) + beta, elementwise. Reads x, writes y:
// 2 * sizeof(T) per element (the per-column vectors stay in cache).
// Error: running_var + eps (eps arriving rounded) within 2u, so inv_std within 3u; x - mean and
// the product with inv_std round (5u), gamma times it and + beta round once each.
// bound[batchnorm_fwd_eval] y: u * (6 * abs(gamma * (x - running_mean) / sqrt(running_var + eps)) + abs(result))
template <typename T>
__device__ void batchnorm_forward_eval(const T* x, const T* gamma, const T* beta, const T* running_mean,
                                       const T* running_var, T* y, long long rows, long long cols, T eps) {
    const long long n = rows * cols;
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        const long long c = i % cols;
        const T inv = T(1) / bp_sqrt(running_var[c] + eps);
        y[i] = gamma[c] * ((x[i] - running_mean[c]) * inv) + beta[c];
    }
}

// PyTorch's running statistics, in place over the cols features:
// r_mean = (1 - m) r_mean + m mean;  r_var = (1 - m) r_var + m var n / (n - 1).
// keep = 1 - m and unbias = n / (n - 1) come from the host in double, as in the reference.
// Reads 4 and writes 2 values per feature: 6 * sizeof(T).
// Error: keep, momentum and unbias arrive rounded; each product (one per sum may fuse) and the
// sums round.
// bound[running_stats] running_mean: u * (2 * abs(keep * running_mean) + 2 * abs(momentum * mean) + abs(result))
// bound[running_stats] running_var: u * (2 * abs(keep * running_var) + 4 * abs(momentum * var * unbias) + abs(result))
template <typename T>
__device__ void running_stats(T* running_mean, T* running_var, const T* mean, const T* var,
                              long long cols, T momentum, T keep, T unbias) {
    for (long long c = bp_first_index(); c < cols; c += bp_grid_stride()) {
        running_mean[c] = keep * running_mean[c] + momentum * mean[c];
        running_var[c] = keep * running_var[c] + momentum * (var[c] * unbias);
    }
}

extern "C" __global__ void batchnorm_fwd_train_f32(const float* x, const float* gamma, const float* beta, float* y, float* xhat, float* mean, float* var, float* inv_std, long long rows, long long cols, float eps) { batchnorm_forward_train(x, gamma, beta, y, xhat, mean, var, inv_std, rows, cols, eps); }
extern "C" __global__ void batchnorm_fwd_train_f64(const double* x, const double* gamma, const double* beta, double* y, double* xhat, double* mean, double* var, double* inv_std, long long rows, long long cols, double eps) { batchnorm_forward_train(x, gamma, beta, y, xhat, mean, var, inv_std, rows, cols, eps); }
extern "C" __global__ void batchnorm_bwd_f32(const float* dy, const float* xhat, const float* gamma, const float* inv_std, float* grad_x, float* grad_gamma, float* grad_beta, long long rows, long long cols) { batchnorm_backward(dy, xhat, gamma, inv_std, grad_x, grad_gamma, grad_beta, rows, cols); }
extern "C" __global__ void batchnorm_bwd_f64(const double* dy, const double* xhat, const double* gamma, const double* inv_std, double* grad_x, double* grad_gamma, double* grad_beta, long long rows, long long cols) { batchnorm_backward(dy, xhat, gamma, inv_std, grad_x, grad_gamma, grad_beta, rows, cols); }
extern "C" __global__ void batchnorm_fwd_eval_f32(const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var, float* y, long long rows, long long cols, float eps) { batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, y, rows, cols, eps); }
extern "C" __global__ void batchnorm_fwd_eval_f64(const double* x, const double* gamma, const double* beta, const double* running_mean, const double* running_var, double* y, long long rows, long long cols, double eps) { batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, y, rows, cols, eps); }
extern "C" __global__ void running_stats_f32(float* running_mean, float* running_var, const float* mean, const float* var, long long cols, float momentum, float keep, float unbias) { running_stats(running_mean, running_var, mean, var, cols, momentum, keep, unbias); }
extern "C" __global__ void running_stats_f64(double* running_mean, double* running_var, const double* mean, const double* var, long long cols, double momentum, double keep, double unbias) { running_stats(running_mean, running_var, mean, var, cols, momentum, keep, unbias); }
