// Losses, each fused with its gradient: one pass writes dL/dpred and one partial sum of the
// per-element loss per block; finalize_sum (reductions.cu) then adds the partials in a fixed
// order and applies the reduction. No atomics, so the loss is the same run to run.
//
// `grad_scale` is d(reduction)/d(element) times the loss's own constant, computed on the host in
// double exactly as backends/base.py does (2/N for MSE's mean, 1/N, or 1 for "sum").
//
// Error bounds (notation in common.cuh): `grad` for the gradient; `loss` for the value the
// backend reports, the partials added by finalize_sum and divided by its `divisor` (N for "mean",
// 1 for "sum"). Every loss term has one sign (t in [0, 1], or +-1 for the hinge), so a sum of
// n terms in any order is within (n - 1) u of its value, and the division adds u.
#include "common.cuh"

// (loss term, gradient) of one element, in the reference's operation order.
// diff and its square round once each: a term is within 3u; so is the gradient (grad_scale
// arrives rounded, diff and the product round).
// bound[mse_loss] loss: (n + 3) * u * abs(result)
// bound[mse_loss] grad: 3 * u * abs(result)
struct Mse {
    // (p - t)^2;  grad_scale (p - t)
    template <typename T>
    static __device__ __forceinline__ T term(T p, T t, T scale, T* grad) {
        const T diff = p - t;
        *grad = scale * diff;
        return diff * diff;
    }
};

// |diff| rounds once; the gradient is the rounded grad_scale times -1, 0 or 1, as in the reference.
// bound[mae_loss] loss: (n + 1) * u * abs(result)
// bound[mae_loss] grad: exact
struct Mae {
    // |p - t|;  grad_scale sign(p - t)
    template <typename T>
    static __device__ __forceinline__ T term(T p, T t, T scale, T* grad) {
        const T diff = p - t;
        *grad = scale * bp_sign(diff);
        return bp_abs(diff);
    }
};

// The logs within 3u, 1 - t, the two products and their sum round: a term is within 6u. The
// gradient: p - t, 1 - p, p (1 - p), grad_scale (arriving rounded), the product and the quotient:
// 6u. (The clamps are 1-Lipschitz and add nothing.)
// bound[bce_loss] loss: (n + 6) * u * abs(result)
// bound[bce_loss] grad: 6 * u * abs(result)
struct Bce {
    // t max(log p, -100) + (1 - t) max(log(1 - p), -100)   (finalize negates the sum)
    // grad_scale (p - t) / max(p (1 - p), 1e-12)
    template <typename T>
    static __device__ __forceinline__ T term(T p, T t, T scale, T* grad) {
        const T log_p = bp_clip_below(bp_log(p), T(-100));
        const T log_q = bp_clip_below(bp_log1p(-p), T(-100));
        const T denom = bp_clip_below(p * (T(1) - p), T(1e-12));
        *grad = scale * (p - t) / denom;
        return t * log_p + (T(1) - t) * log_q;
    }
};

// term = a + b, a = max(x, 0) - x t >= 0 (x t and the difference round: u |x t| + u a),
// b = log1p(e^-|x|) within 8u b (exp's 5u carried through log1p, whose condition is <= 1, and
// log1p's own 3u); a + b rounds: a term is within u |x t| + 9u term. The gradient: sigmoid within
// 7u (and <= 1), the difference, grad_scale and the product round.
// bound[bce_logits_loss] loss: u * ((n + 9) * abs(result) + total(abs(logits * target)) / divisor)
// bound[bce_logits_loss] grad: u * (7 * abs(grad_scale) + 3 * abs(result))
struct BceWithLogits {
    // max(x, 0) - x t + log(1 + e^-|x|);  grad_scale (sigmoid(x) - t)
    template <typename T>
    static __device__ __forceinline__ T term(T x, T t, T scale, T* grad) {
        *grad = scale * (bp_sigmoid(x) - t);
        return bp_clip_below(x, T(0)) - x * t + bp_log1p(bp_exp(-bp_abs(x)));
    }
};

// margin = 1 - t p: t p and the difference round (u |t p| + u |margin|); the clamp adds nothing.
// The gradient is -t grad_scale or 0 by the sign of the margin: for t = +-1, t p is exact and
// the margin, fused or not, rounds once to the same value as in the reference, so it is exact.
// bound[hinge_loss] loss: u * ((n + 1) * abs(result) + total(abs(pred * target)) / divisor)
// bound[hinge_loss] grad: exact
struct Hinge {
    // max(0, 1 - t p);  grad_scale (-t [1 - t p > 0])
    template <typename T>
    static __device__ __forceinline__ T term(T p, T t, T scale, T* grad) {
        const T margin = T(1) - t * p;
        *grad = scale * (margin > T(0) ? -t : T(0));
        return bp_clip_below(margin, T(0));
    }
};

// Writes grad[i] and partials[blockIdx.x] = this block's sum of loss terms.
template <typename Loss, typename T>
__device__ void elementwise_loss(const T* pred, const T* target, T* grad, T* partials, long long n,
                                 T grad_scale) {
    __shared__ T scratch[BP_MAX_BLOCK];
    T acc = T(0);
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        acc += Loss::term(pred[i], target[i], grad_scale, &grad[i]);
    }
    acc = bp_block_reduce<BpSum>(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Huber loss, d = p - t, delta > 0 (torch.nn.HuberLoss):
//   term = d^2 / 2 where |d| < delta, else delta (|d| - delta / 2)
//   grad = grad_scale (d where |d| < delta, else delta sign(d))
// Inside: d, its square and the half round: 3u; outside: delta arrives rounded, |d| - delta / 2
// and the product round: u (3 |term| + delta (|d| + delta)). Terms have one sign. The gradient:
// d (or delta) arrives or rounds once, grad_scale arrives rounded, the product rounds: 3u.
// bound[huber_loss] loss: u * ((n + 3) * abs(result) + total(delta * (abs(pred - target) + delta)) / divisor)
// bound[huber_loss] grad: 3 * u * abs(result)
struct Huber {
    template <typename T>
    static __device__ __forceinline__ T term(T p, T t, T scale, T delta, T* grad) {
        const T diff = p - t;
        const T size = bp_abs(diff);
        const bool inside = size < delta;
        *grad = scale * (inside ? diff : delta * bp_sign(diff));
        return inside ? T(0.5) * diff * diff : delta * (size - T(0.5) * delta);
    }
};

// elementwise_loss for a loss with one parameter (Huber's delta).
template <typename Loss, typename T>
__device__ void elementwise_loss_with(const T* pred, const T* target, T* grad, T* partials, long long n,
                                      T grad_scale, T param) {
    __shared__ T scratch[BP_MAX_BLOCK];
    T acc = T(0);
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        acc += Loss::term(pred[i], target[i], grad_scale, param, &grad[i]);
    }
    acc = bp_block_reduce<BpSum>(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Softmax cross-entropy over rows (one block per row, grid-stride over rows), the target given by
// `Target` (rows of probabilities, or one integer label per row):
//   log softmax(x)_j = x_j - m - log s,  m = max_k x_k,  s = sum_k e^(x_k - m)
//   partials[block] = sum over its rows of sum_j t_j log softmax(x)_j   (finalize negates)
//   grad_j = grad_scale (e^(x_j - m) / s * sum_k t_k - t_j)
// x_j - m is clamped at the lowest finite value, as in the reference: logits spanning more than
// T's range make it -inf, and a zero target times -inf would be NaN.
// DRAM: reads x (and t) once, writes grad once: 3 * sizeof(T) per element with probability rows,
// 2 with labels (later passes over a row hit L1/L2).
// Error: x_j - m rounds (2u M, M the row's largest |x|), e_j = exp(x_j - m) is within (5 + 2M) u,
// s, a sum of cols positive terms, within (5 + 2M + cols - 1) u, log s within that plus
// 3u |log s| <= 3u (2M + |log softmax_j|). A term t_j (x_j - m - log s) is then within
// u t_j (10M + cols + 4) + 5u |t_j log softmax_j|; the terms have one sign.
// The gradient: softmax_j within (10 + 4M + cols) u, t_sum (cols terms) within (cols - 1) u,
// their product, the difference, grad_scale (arriving rounded) and the last product round.
// bound[cross_entropy_loss] loss: u * (total(target * (10 * rowmax(abs(logits)) + cols + 4)) / divisor + (rows * cols + 5) * abs(result))
// bound[cross_entropy_loss] grad: u * (abs(grad_scale) * softmax(logits) * rowsum(target) * (10 + 4 * rowmax(abs(logits)) + 2 * cols) + 3 * abs(result))
// With labels each row has one term and t_sum is 1 exactly:
// bound[cross_entropy_labels_loss] loss: u * (total(10 * rowmax(abs(logits)) + cols + 4) / divisor + (rows + 5) * abs(result))
// bound[cross_entropy_labels_loss] grad: u * (abs(grad_scale) * softmax(logits) * (10 + 4 * rowmax(abs(logits)) + 2 * cols) + 3 * abs(result))
template <typename T>
struct ProbabilityRows {
    const T* target;
    __device__ T at(long long r, long long cols, long long c) const { return target[r * cols + c]; }
};

template <typename T>
struct LabelRows {
    const long long* labels;
    __device__ T at(long long r, long long, long long c) const { return labels[r] == c ? T(1) : T(0); }
};

template <typename T, typename Target>
__device__ void cross_entropy_rows(const T* logits, Target target, T* grad, T* partials, long long rows,
                                   long long cols, T grad_scale) {
    __shared__ T scratch[BP_MAX_BLOCK];
    const T lowest = bp_lowest<T>();
    T block_total = T(0);
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* x = logits + r * cols;
        T* g = grad + r * cols;
        T m = x[0];
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) m = BpMax::apply(m, x[c]);
        m = bp_block_reduce<BpMax>(m, scratch);
        T s = T(0);
        T t_sum = T(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            s += bp_exp(bp_clip_below(x[c] - m, lowest));
            t_sum += target.at(r, cols, c);
        }
        s = bp_block_reduce<BpSum>(s, scratch);
        t_sum = bp_block_reduce<BpSum>(t_sum, scratch);
        const T log_s = bp_log(s);
        T row = T(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            const T shifted = bp_clip_below(x[c] - m, lowest);
            const T t = target.at(r, cols, c);
            row += t * (shifted - log_s);
            g[c] = grad_scale * (bp_exp(shifted) / s * t_sum - t);
        }
        block_total += bp_block_reduce<BpSum>(row, scratch);
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = block_total;
}

// ---- elementwise losses: read pred and target, write grad: 3 * sizeof(T) per element.
extern "C" __global__ void mse_loss_f32(const float* pred, const float* target, float* grad, float* partials, long long n, float grad_scale) { elementwise_loss<Mse>(pred, target, grad, partials, n, grad_scale); }
extern "C" __global__ void mse_loss_f64(const double* pred, const double* target, double* grad, double* partials, long long n, double grad_scale) { elementwise_loss<Mse>(pred, target, grad, partials, n, grad_scale); }
extern "C" __global__ void mae_loss_f32(const float* pred, const float* target, float* grad, float* partials, long long n, float grad_scale) { elementwise_loss<Mae>(pred, target, grad, partials, n, grad_scale); }
extern "C" __global__ void mae_loss_f64(const double* pred, const double* target, double* grad, double* partials, long long n, double grad_scale) { elementwise_loss<Mae>(pred, target, grad, partials, n, grad_scale); }
extern "C" __global__ void bce_loss_f32(const float* prob, const float* target, float* grad, float* partials, long long n, float grad_scale) { elementwise_loss<Bce>(prob, target, grad, partials, n, grad_scale); }
extern "C" __global__ void bce_loss_f64(const double* prob, const double* target, double* grad, double* partials, long long n, double grad_scale) { elementwise_loss<Bce>(prob, target, grad, partials, n, grad_scale); }
extern "C" __global__ void bce_logits_loss_f32(const float* logits, const float* target, float* grad, float* partials, long long n, float grad_scale) { elementwise_loss<BceWithLogits>(logits, target, grad, partials, n, grad_scale); }
extern "C" __global__ void bce_logits_loss_f64(const double* logits, const double* target, double* grad, double* partials, long long n, double grad_scale) { elementwise_loss<BceWithLogits>(logits, target, grad, partials, n, grad_scale); }
extern "C" __global__ void hinge_loss_f32(const float* pred, const float* target, float* grad, float* partials, long long n, float grad_scale) { elementwise_loss<Hinge>(pred, target, grad, partials, n, grad_scale); }
extern "C" __global__ void hinge_loss_f64(const double* pred, const double* target, double* grad, double* partials, long long n, double grad_scale) { elementwise_loss<Hinge>(pred, target, grad, partials, n, grad_scale); }

extern "C" __global__ void huber_loss_f32(const float* pred, const float* target, float* grad, float* partials, long long n, float grad_scale, float delta) { elementwise_loss_with<Huber>(pred, target, grad, partials, n, grad_scale, delta); }
extern "C" __global__ void huber_loss_f64(const double* pred, const double* target, double* grad, double* partials, long long n, double grad_scale, double delta) { elementwise_loss_with<Huber>(pred, target, grad, partials, n, grad_scale, delta); }

extern "C" __global__ void cross_entropy_loss_f32(const float* logits, const float* target, float* grad, float* partials, long long rows, long long cols, float grad_scale) { cross_entropy_rows(logits, ProbabilityRows<float>{target}, grad, partials, rows, cols, grad_scale); }
extern "C" __global__ void cross_entropy_loss_f64(const double* logits, const double* target, double* grad, double* partials, long long rows, long long cols, double grad_scale) { cross_entropy_rows(logits, ProbabilityRows<double>{target}, grad, partials, rows, cols, grad_scale); }
// ---- with labels: reads x and one label per row, writes grad: 2 * sizeof(T) per element.
extern "C" __global__ void cross_entropy_labels_loss_f32(const float* logits, const long long* labels, float* grad, float* partials, long long rows, long long cols, float grad_scale) { cross_entropy_rows(logits, LabelRows<float>{labels}, grad, partials, rows, cols, grad_scale); }
extern "C" __global__ void cross_entropy_labels_loss_f64(const double* logits, const long long* labels, double* grad, double* partials, long long rows, long long cols, double grad_scale) { cross_entropy_rows(logits, LabelRows<double>{labels}, grad, partials, rows, cols, grad_scale); }
