// Deterministic reductions: per-block partial sums in a fixed tree order, then one block that
// adds the partials in a fixed order (finalize_sum). Bias gradients and other column sums use
// tiles of 32 columns per block, so every warp reads contiguous row segments. No atomics.
//
// Error bounds (notation in common.cuh). A sum of n terms, in any order (so on any launch shape),
// is within (n - 1) u sum |x_i| of the exact sum (Higham, Accuracy and Stability of Numerical
// Algorithms, 2nd ed., section 4.2). The total of sum_partials is the one finalize_sum makes of
// its partials (sign 1, divisor 1, both exact); counts are exact below 2^24.
// bound[sum_partials] sum: (n - 1) * u * total(abs(x))
// bound[nonfinite_partials threshold_match_partials argmax_match_partials argmax_label_match_partials] count: exact
#include "common.cuh"

// partials[blockIdx.x] = the block's sum of f(i) over its grid-stride elements.
template <typename T, typename F>
__device__ void block_partial_sum(T* partials, long long n, F f) {
    __shared__ T scratch[BP_MAX_BLOCK];
    T acc = T(0);
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) acc += f(i);
    acc = bp_block_reduce<BpSum>(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// out[0] = sign * (sum of partials[0..count)) / divisor, by block 0 alone. sign is +1 or -1 and
// divisor N or 1, so a mean is a division, as in the reference (total / N, not total * (1/N)).
template <typename T>
__device__ void finalize(const T* partials, T* out, long long count, T sign, T divisor) {
    __shared__ T scratch[BP_MAX_BLOCK];
    if (blockIdx.x != 0) return;
    T acc = T(0);
    for (long long i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    acc = bp_block_reduce<BpSum>(acc, scratch);
    if (threadIdx.x == 0) out[0] = sign * acc / divisor;
}

template <typename T>
struct SumOf {
    const T* x;
    __device__ T operator()(long long i) const { return x[i]; }
};

// 1 for an element that is NaN or +-inf.
template <typename T>
struct NonFinite {
    const T* x;
    __device__ T operator()(long long i) const { return bp_is_finite(x[i]) ? T(0) : T(1); }
};

template <typename T>
struct ThresholdMatch {
    const T* scores;
    const T* target;
    T score_threshold;
    T target_threshold;
    __device__ T operator()(long long i) const {
        return (scores[i] > score_threshold) == (target[i] > target_threshold) ? T(1) : T(0);
    }
};

// First index of the row's maximum; NaN counts as the maximum (NumPy's argmax).
template <typename T>
__device__ long long row_argmax(const T* row, long long cols) {
    long long best = 0;
    for (long long c = 1; c < cols; ++c) {
        const T v = row[c];
        const T b = row[best];
        if (b == b && (v > b || v != v)) best = c;
    }
    return best;
}

// One thread per row: 1 when argmax(scores row) == argmax(target row).
template <typename T>
struct ArgmaxMatch {
    const T* scores;
    const T* target;
    long long cols;
    __device__ T operator()(long long r) const {
        return row_argmax(scores + r * cols, cols) == row_argmax(target + r * cols, cols) ? T(1) : T(0);
    }
};

template <typename T>
struct ArgmaxLabelMatch {
    const T* scores;
    const long long* labels;
    long long cols;
    __device__ T operator()(long long r) const { return row_argmax(scores + r * cols, cols) == labels[r] ? T(1) : T(0); }
};

// out[c] = sum_r x[r, c] (the bias gradient). A block takes tiles of BP_TILE columns; its
// blockDim.x / BP_TILE groups of threads take every groups-th row; the groups are folded in
// order. blockDim.x must be a multiple of BP_TILE. Reads x once, writes out: sizeof(T) per element.
// bound[column_sums] out: (rows - 1) * u * colsum(abs(x))
template <typename T>
__device__ void column_sums(const T* x, T* out, long long rows, long long cols) {
    __shared__ T scratch[BP_MAX_BLOCK];
    const unsigned int lane = threadIdx.x % BP_TILE;
    const unsigned int group = threadIdx.x / BP_TILE;
    const unsigned int groups = blockDim.x / BP_TILE;
    for (long long tile = blockIdx.x; tile * BP_TILE < cols; tile += gridDim.x) {
        const long long c = tile * BP_TILE + lane;
        T acc = T(0);
        if (c < cols) {
            for (long long r = group; r < rows; r += groups) acc += x[r * cols + c];
        }
        const T total = bp_fold_groups(acc, scratch);
        if (group == 0 && c < cols) out[c] = total;
    }
}

// partials[block] = sum |w| and partials[gridDim.x + block] = sum w^2 over the block's elements.
template <typename T>
__device__ void penalty_partials(const T* w, T* partials, long long n) {
    __shared__ T scratch[BP_MAX_BLOCK];
    T l1 = T(0);
    T l2 = T(0);
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        l1 += bp_abs(w[i]);
        l2 += w[i] * w[i];
    }
    l1 = bp_block_reduce<BpSum>(l1, scratch);
    l2 = bp_block_reduce<BpSum>(l2, scratch);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = l1;
        partials[gridDim.x + blockIdx.x] = l2;
    }
}

// out[0] = l1 sum|w| + l2 sum w^2 from the 2 * count partials of penalty_partials.
// Error: the squares round (u), each sum of n terms adds (n - 1) u, l1 and l2 arrive rounded,
// the two products (one may fuse) and the sum round.
// bound[penalty_partials] penalty: (n + 3) * u * (abs(l1) * total(abs(w)) + abs(l2) * total(w * w))
template <typename T>
__device__ void penalty_finalize(const T* partials, T* out, long long count, T l1, T l2) {
    __shared__ T scratch[BP_MAX_BLOCK];
    if (blockIdx.x != 0) return;
    T abs_sum = T(0);
    T square_sum = T(0);
    for (long long i = threadIdx.x; i < count; i += blockDim.x) {
        abs_sum += partials[i];
        square_sum += partials[count + i];
    }
    abs_sum = bp_block_reduce<BpSum>(abs_sum, scratch);
    square_sum = bp_block_reduce<BpSum>(square_sum, scratch);
    if (threadIdx.x == 0) out[0] = l1 * abs_sum + l2 * square_sum;
}

// ---- partial sums: read x once: sizeof(T) per element (two inputs: 2 * sizeof(T)).
extern "C" __global__ void sum_partials_f32(const float* x, float* partials, long long n) { block_partial_sum(partials, n, SumOf<float>{x}); }
extern "C" __global__ void sum_partials_f64(const double* x, double* partials, long long n) { block_partial_sum(partials, n, SumOf<double>{x}); }
extern "C" __global__ void nonfinite_partials_f32(const float* x, float* partials, long long n) { block_partial_sum(partials, n, NonFinite<float>{x}); }
extern "C" __global__ void nonfinite_partials_f64(const double* x, double* partials, long long n) { block_partial_sum(partials, n, NonFinite<double>{x}); }
extern "C" __global__ void threshold_match_partials_f32(const float* scores, const float* target, float* partials, long long n, float score_threshold, float target_threshold) { block_partial_sum(partials, n, ThresholdMatch<float>{scores, target, score_threshold, target_threshold}); }
extern "C" __global__ void threshold_match_partials_f64(const double* scores, const double* target, double* partials, long long n, double score_threshold, double target_threshold) { block_partial_sum(partials, n, ThresholdMatch<double>{scores, target, score_threshold, target_threshold}); }
extern "C" __global__ void argmax_match_partials_f32(const float* scores, const float* target, float* partials, long long rows, long long cols) { block_partial_sum(partials, rows, ArgmaxMatch<float>{scores, target, cols}); }
extern "C" __global__ void argmax_match_partials_f64(const double* scores, const double* target, double* partials, long long rows, long long cols) { block_partial_sum(partials, rows, ArgmaxMatch<double>{scores, target, cols}); }
extern "C" __global__ void argmax_label_match_partials_f32(const float* scores, const long long* labels, float* partials, long long rows, long long cols) { block_partial_sum(partials, rows, ArgmaxLabelMatch<float>{scores, labels, cols}); }
extern "C" __global__ void argmax_label_match_partials_f64(const double* scores, const long long* labels, double* partials, long long rows, long long cols) { block_partial_sum(partials, rows, ArgmaxLabelMatch<double>{scores, labels, cols}); }
extern "C" __global__ void penalty_partials_f32(const float* w, float* partials, long long n) { penalty_partials(w, partials, n); }
extern "C" __global__ void penalty_partials_f64(const double* w, double* partials, long long n) { penalty_partials(w, partials, n); }

// ---- finalizers: read the partials (a few KiB), write one element.
extern "C" __global__ void finalize_sum_f32(const float* partials, float* out, long long count, float sign, float divisor) { finalize(partials, out, count, sign, divisor); }
extern "C" __global__ void finalize_sum_f64(const double* partials, double* out, long long count, double sign, double divisor) { finalize(partials, out, count, sign, divisor); }
extern "C" __global__ void penalty_finalize_f32(const float* partials, float* out, long long count, float l1, float l2) { penalty_finalize(partials, out, count, l1, l2); }
extern "C" __global__ void penalty_finalize_f64(const double* partials, double* out, long long count, double l1, double l2) { penalty_finalize(partials, out, count, l1, l2); }

extern "C" __global__ void column_sums_f32(const float* x, float* out, long long rows, long long cols) { column_sums(x, out, rows, cols); }
extern "C" __global__ void column_sums_f64(const double* x, double* out, long long rows, long long cols) { column_sums(x, out, rows, cols); }
