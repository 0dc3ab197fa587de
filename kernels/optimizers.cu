// Optimizer updates with torch.optim's definitions, one launch over a network's whole flat
// parameter, gradient and state buffers, in place. Every coefficient that the reference computes
// in Python double (1 - dampening, 1 - beta, the bias corrections, 1 - lr wd) is computed on the
// host and arrives already rounded to T, so the per-element arithmetic is the reference's.
//
// Error bounds (notation in common.cuh), written as the computation goes: for each quantity x,
// dx bounds its error. Each coefficient arriving rounded, each product (unless fused into the
// sum that follows) and each sum or difference rounds once. The gradient with weight decay,
// g = grad + wd param, is shared by all of them (AdamW has none).
// bound[sgd sgd_momentum adam] g = grad + weight_decay * param
// bound[sgd sgd_momentum adam] dg = u * (2 * abs(weight_decay * param) + abs(g))
#include "common.cuh"

// SGD without momentum: g = grad (+ wd param);  param -= lr g.
// Reads param and grad, writes param: 3 * sizeof(T) per element.
// bound[sgd] param: abs(lr) * dg + u * (2 * abs(lr * g) + abs(result))
template <typename T>
__device__ void sgd(T* param, const T* grad, long long n, T lr, T weight_decay) {
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        const T g = weight_decay != T(0) ? grad[i] + weight_decay * param[i] : grad[i];
        param[i] = param[i] - lr * g;
    }
}

// SGD with momentum: g = grad (+ wd param);  b = g on the first step, else m b + (1 - d) g;
// param -= lr (g + m b if nesterov else b).
// Reads param, grad and b, writes param and b: 5 * sizeof(T) per element.
// bound[sgd_momentum] b = where(first_step, g, momentum * buf + one_minus_dampening * g)
// bound[sgd_momentum] db = where(first_step, dg, abs(one_minus_dampening) * dg + u * (2 * abs(momentum * buf) + 2 * abs(one_minus_dampening * g) + abs(b)))
// bound[sgd_momentum] step = where(nesterov, g + momentum * b, b)
// bound[sgd_momentum] dstep = where(nesterov, dg + abs(momentum) * db + u * (2 * abs(momentum * b) + abs(step)), db)
// bound[sgd_momentum] buf: db
// bound[sgd_momentum] param: abs(lr) * dstep + u * (2 * abs(lr * step) + abs(result))
template <typename T>
__device__ void sgd_momentum(T* param, const T* grad, T* buf, long long n, T lr, T momentum,
                             T one_minus_dampening, T weight_decay, int nesterov, int first_step) {
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        T g = weight_decay != T(0) ? grad[i] + weight_decay * param[i] : grad[i];
        const T b = first_step ? g : momentum * buf[i] + one_minus_dampening * g;
        buf[i] = b;
        g = nesterov ? g + momentum * b : b;
        param[i] = param[i] - lr * g;
    }
}

// Adam's moments and step, shared by Adam and AdamW once the gradient g is formed:
// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
// param -= step_size m / (sqrt(v) / bias_correction2_sqrt + eps),
// step_size = lr / (1 - b1^t), bias_correction2_sqrt = sqrt(1 - b2^t).
// Error, with g the gradient the moments take and dp the error of the decayed parameter (AdamW's
// param * decay: decay arrives rounded, the product rounds): sqrt halves the relative
// error of v and rounds; bias_correction2_sqrt and eps arrive rounded; the quotients, the sum,
// the product and the difference round.
// bound[adam] dp = 0
// bound[adamw] dp = 2 * u * abs(param * decay)
// bound[adamw] g = grad
// bound[adamw] dg = 0
// bound[adam adamw] m = beta1 * exp_avg + one_minus_beta1 * g
// bound[adam adamw] dm = abs(one_minus_beta1) * dg + u * (2 * abs(beta1 * exp_avg) + 2 * abs(one_minus_beta1 * g) + abs(m))
// bound[adam adamw] v = beta2 * exp_avg_sq + one_minus_beta2 * g * g
// bound[adam adamw] dv = one_minus_beta2 * (2 * abs(g) * dg + 3 * u * g * g) + u * (2 * beta2 * exp_avg_sq + v)
// bound[adam adamw] denom = sqrt(v) / bias_correction2_sqrt + eps
// bound[adam adamw] ddenom = sqrt(v) / bias_correction2_sqrt * (dv / (2 * v) + 3 * u) + u * (eps + denom)
// bound[adam adamw] q = m / denom
// bound[adam adamw] exp_avg: dm
// bound[adam adamw] exp_avg_sq: dv
// bound[adam adamw] param: dp + abs(step_size) * (dm + abs(q) * ddenom) / denom + u * (3 * abs(step_size * q) + abs(result))
template <typename T>
__device__ __forceinline__ T adam_update(T param, T g, T* m, T* v, T beta1, T one_minus_beta1, T beta2,
                                         T one_minus_beta2, T eps, T step_size,
                                         T bias_correction2_sqrt) {
    const T m_new = beta1 * *m + one_minus_beta1 * g;
    const T v_new = beta2 * *v + one_minus_beta2 * (g * g);
    *m = m_new;
    *v = v_new;
    const T denom = bp_sqrt(v_new) / bias_correction2_sqrt + eps;
    return param - step_size * (m_new / denom);
}

// Adam: g = grad (+ wd param, coupled weight decay). Reads param, grad, m, v; writes param, m, v:
// 7 * sizeof(T) per element.
template <typename T>
__device__ void adam(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, long long n, T beta1,
                     T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T weight_decay,
                     T step_size, T bias_correction2_sqrt) {
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        const T p = param[i];
        const T g = weight_decay != T(0) ? grad[i] + weight_decay * p : grad[i];
        param[i] = adam_update(p, g, &exp_avg[i], &exp_avg_sq[i], beta1, one_minus_beta1, beta2,
                               one_minus_beta2, eps, step_size, bias_correction2_sqrt);
    }
}

// AdamW: param *= decay (= 1 - lr wd, decoupled weight decay), then Adam with g = grad.
// 7 * sizeof(T) per element.
template <typename T>
__device__ void adamw(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, long long n, T decay,
                      T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T step_size,
                      T bias_correction2_sqrt) {
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        const T p = param[i] * decay;
        param[i] = adam_update(p, grad[i], &exp_avg[i], &exp_avg_sq[i], beta1, one_minus_beta1, beta2,
                               one_minus_beta2, eps, step_size, bias_correction2_sqrt);
    }
}

extern "C" __global__ void sgd_f32(float* param, const float* grad, long long n, float lr, float weight_decay) { sgd(param, grad, n, lr, weight_decay); }
extern "C" __global__ void sgd_f64(double* param, const double* grad, long long n, double lr, double weight_decay) { sgd(param, grad, n, lr, weight_decay); }
extern "C" __global__ void sgd_momentum_f32(float* param, const float* grad, float* buf, long long n, float lr, float momentum, float one_minus_dampening, float weight_decay, int nesterov, int first_step) { sgd_momentum(param, grad, buf, n, lr, momentum, one_minus_dampening, weight_decay, nesterov, first_step); }
extern "C" __global__ void sgd_momentum_f64(double* param, const double* grad, double* buf, long long n, double lr, double momentum, double one_minus_dampening, double weight_decay, int nesterov, int first_step) { sgd_momentum(param, grad, buf, n, lr, momentum, one_minus_dampening, weight_decay, nesterov, first_step); }
extern "C" __global__ void adam_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, long long n, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2, float eps, float weight_decay, float step_size, float bias_correction2_sqrt) { adam(param, grad, exp_avg, exp_avg_sq, n, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, step_size, bias_correction2_sqrt); }
extern "C" __global__ void adam_f64(double* param, const double* grad, double* exp_avg, double* exp_avg_sq, long long n, double beta1, double one_minus_beta1, double beta2, double one_minus_beta2, double eps, double weight_decay, double step_size, double bias_correction2_sqrt) { adam(param, grad, exp_avg, exp_avg_sq, n, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, step_size, bias_correction2_sqrt); }
extern "C" __global__ void adamw_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, long long n, float decay, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2, float eps, float step_size, float bias_correction2_sqrt) { adamw(param, grad, exp_avg, exp_avg_sq, n, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, bias_correction2_sqrt); }
extern "C" __global__ void adamw_f64(double* param, const double* grad, double* exp_avg, double* exp_avg_sq, long long n, double decay, double beta1, double one_minus_beta1, double beta2, double one_minus_beta2, double eps, double step_size, double bias_correction2_sqrt) { adamw(param, grad, exp_avg, exp_avg_sq, n, decay, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, bias_correction2_sqrt); }
