// Elementwise activations: the dense layer's epilogue y = act(z + b), the plain y = act(x), and
// the backward pass dz = dy * act'(.) fused with the incoming gradient. Softmax, a row operation,
// lives in softmax.cu.
//
// Each functor evaluates the reference formula of backends/base.py in the same order, so CPU
// and GPU differ only by libm and fused multiply-add rounding. `slope` is read by leaky_relu only;
// every kernel takes it so that all activations share one signature. Error bounds (notation in
// common.cuh) beside each functor; where a bias is added, v = z + b rounds once (u |v|) before
// the activation, which moves the result by |act'(v)| u |v|.
#include "common.cuh"

// sqrt(2 / pi) and the cubic coefficient of the tanh form of GELU (activations.GELU_K, GELU_C).
#define BP_GELU_K 0.7978845608028654
#define BP_GELU_C 0.044715
#define BP_GELU_CLIP 100.0  // activations.GELU_CLIP

// tanh u, set to +-1 where |u| > activations.GELU_SATURATION of the type (9 in float, 19.1 in
// double): there tanh u rounds to +-1, which CUDA's tanhf may miss by its 2 ulp, and 1 - t^2,
// exactly 0 then, is multiplied by about x^3 in GELU's derivative. As _gelu_tanh.
__device__ __forceinline__ float bp_gelu_tanh(float u) {
    return bp_abs(u) > 9.0f ? (u > 0.0f ? 1.0f : -1.0f) : bp_tanh(u);
}
__device__ __forceinline__ double bp_gelu_tanh(double u) {
    return bp_abs(u) > 19.1 ? (u > 0.0 ? 1.0 : -1.0) : bp_tanh(u);
}

// bound[bias_linear_fwd] y: exact
struct Linear {
    template <typename T>
    static __device__ __forceinline__ T forward(T x, T) { return x; }
};

// Forward: e = exp(-|v|) is within 5u e; 1 + e and the quotient round once each, so y is within
// 5u (1 - y) + 2u <= 7u relative; the rounding of v adds y (1 - y) u |v| <= u |v| y.
// Backward: 1 - y and two products round: 3u relative.
// bound[sigmoid_fwd] y: 7 * u * result
// bound[bias_sigmoid_fwd] y: (7 + abs(z + bias)) * u * result
// bound[sigmoid_bwd] dz: 3 * u * abs(result)
struct Sigmoid {
    template <typename T>
    static __device__ __forceinline__ T forward(T x, T) { return bp_sigmoid(x); }
    // dL/dz = dL/dy * y * (1 - y)
    template <typename T>
    static __device__ __forceinline__ T backward(T dy, T y, T) { return dy * y * (T(1) - y); }
};

// Forward: tanh within 5u |y|; the rounding of v adds (1 - y^2) u |v| <= u |y| (as 2|v| <=
// sinh 2|v|). Backward: 1 - y^2, fused or not, is within u (y^2 + |1 - y^2|) = u for |y| <= 1,
// and the product rounds: at most 2u |dy|.
// bound[tanh_fwd] y: 5 * u * abs(result)
// bound[bias_tanh_fwd] y: 6 * u * abs(result)
// bound[tanh_bwd] dz: 2 * u * abs(dy)
struct Tanh {
    template <typename T>
    static __device__ __forceinline__ T forward(T x, T) { return bp_tanh(x); }
    // dL/dz = dL/dy * (1 - y^2)
    template <typename T>
    static __device__ __forceinline__ T backward(T dy, T y, T) { return dy * (T(1) - y * y); }
};

// bound[relu_fwd bias_relu_fwd] y: exact
// bound[relu_bwd] dz: exact
struct Relu {
    template <typename T>
    static __device__ __forceinline__ T forward(T x, T) { return x > T(0) ? x : T(0); }
    // dL/dz = dL/dy * [y > 0]
    template <typename T>
    static __device__ __forceinline__ T backward(T dy, T y, T) { return y > T(0) ? dy : T(0); }
};

// slope * v and slope * dy round once each, exactly as in the reference.
// bound[leaky_relu_fwd bias_leaky_relu_fwd] y: exact
// bound[leaky_relu_bwd] dz: exact
struct LeakyRelu {
    template <typename T>
    static __device__ __forceinline__ T forward(T x, T slope) { return x > T(0) ? x : slope * x; }
    // dL/dz = dL/dy * (1 if y > 0 else slope); y > 0 exactly when z > 0 (slope >= 0)
    template <typename T>
    static __device__ __forceinline__ T backward(T dy, T y, T slope) { return y > T(0) ? dy : slope * dy; }
};

// Forward: w = k (v + c v^3) is within 7u |w| (k and c rounded to T, three products, a sum of
// terms of one sign, fused or not); t = tanh w within 5u |t| + (1 - t^2) 7u |w| <= 8.2u (as
// w sech^2 w <= 0.448); where bp_gelu_tanh saturates (|w| > S, S = 9 in float, 19.1 in double),
// t = +-1 is within 1 - tanh S = 2e^-2S / (1 + e^-2S) <= 0.52u of tanh w, inside that bound too;
// 1 + t and the product round once each: y is within 4.1u |v| + 2u |y|.
// The rounding of v adds at most 1.13 u |v| (|GELU'| <= 1.13). The tanh form is poorly
// conditioned for v << 0: 1 + t cancels, so the error stays near 4u |v| while y vanishes.
// bound[gelu_fwd] y: u * (2 * abs(result) + 4.1 * abs(x))
// bound[bias_gelu_fwd] y: u * (2 * abs(result) + 5.2 * abs(z + bias))
// bound[bias_gelu_fwd] pre: exact
// Backward, x the pre-activation: t as above; (1 + t)/2 within 5.1u; dt = k (1 + 3c x^2) within
// 6u relative; q = 1 - t^2 within 2 |t| 8.2u + u <= 17.3u absolutely, which does not shrink as
// q does (|t| -> 1) and is multiplied by x dt / 2, which grows like |x|^3: x q dt / 2 is within
// 12.7u |x| dt; the sum and the product with dy round once each. So |dz - exact| <=
// u |dy| (7.1 + 13.7 |x| dt): poorly conditioned for |x| beyond about 2, as the reference's own
// formula is (it cancels the same way on the CPU). Saturated, q is 0 where the exact 1 - tanh^2 w
// is at most 4e^-2S <= 1.03u: within the 17.3u above. Beyond |x| = 7.3, |w| >= 19.7 > S in both
// types, so t = +-1, q = 0, dt is finite (x clipped) and dz = dy * (1 or 0) exactly; the exact
// value differs by |dy| ((1 - |tanh w|)/2 + |x| dt sech^2 w / 2) <= |dy| (1 + 23.7 * 4) e^-2|w|
// (|x| dt / 2 <= 23.7 at |x| = 7.3, and e^-2|w| |x|^3 falls beyond), at most 6.6u |dy| in double.
// bound[gelu_bwd] dz: u * abs(dy) * where(abs(pre) > 7.3, 7, 7.5 + 11 * abs(pre) * (1 + 0.135 * pre * pre))
struct Gelu {
    // y = x/2 (1 + tanh u), u = k (x + c x^3)
    template <typename T>
    static __device__ __forceinline__ T forward(T x, T) {
        const T inner = T(BP_GELU_K) * (x + T(BP_GELU_C) * x * x * x);
        return T(0.5) * x * (T(1) + bp_gelu_tanh(inner));
    }
    // Takes the pre-activation x (not y): dy * (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)),
    // t and dt taken at x clipped to +-BP_GELU_CLIP, as the reference: beyond it t is +-1 exactly,
    // and x^2 would overflow float32 at |x| >= 2e19 (0 * inf = NaN).
    template <typename T>
    static __device__ __forceinline__ T backward(T dy, T x, T) {
        const T xc = x < T(-BP_GELU_CLIP) ? T(-BP_GELU_CLIP) : (x > T(BP_GELU_CLIP) ? T(BP_GELU_CLIP) : x);
        const T t = bp_gelu_tanh(T(BP_GELU_K) * (xc + T(BP_GELU_C) * xc * xc * xc));
        const T dt = T(BP_GELU_K) * (T(1) + T(3.0 * BP_GELU_C) * xc * xc);
        return dy * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * dt);
    }
};

// Forward: y = max(x, 0) + log1p(e), e = exp(-|x|): e within 5u e, log1p within 3u of its value
// L <= e and moved by at most 5u e / (1 + e) by e's error, the sum rounds once: |err| <=
// u (y + 8e) <= 17u y (as e <= 2 log1p(e) <= 2y). The rounding of v adds sigmoid(v) u |v|,
// at most u y |v| for v < 0 and u |v| <= 1.5u y |v| for v >= 0 (y >= log 2).
// Backward: -expm1(-y) within 3u of its value, the product rounds: 4u relative.
// bound[softplus_fwd] y: 17 * u * abs(result)
// bound[bias_softplus_fwd] y: (17 + 1.5 * abs(z + bias)) * u * abs(result)
// bound[softplus_bwd] dz: 4 * u * abs(result)
struct Softplus {
    // y = log(1 + e^x) = max(x, 0) + log1p(e^-|x|): never overflows
    template <typename T>
    static __device__ __forceinline__ T forward(T x, T) {
        return (x > T(0) ? x : T(0)) + bp_log1p(bp_exp(-bp_abs(x)));
    }
    // dL/dz = dL/dy * sigmoid(z) = dL/dy * -expm1(-y)
    template <typename T>
    static __device__ __forceinline__ T backward(T dy, T y, T) { return dy * -bp_expm1(-y); }
};

// Forward: s = sigmoid(x) within 7u s (Sigmoid above), the product rounds: 8u |y|. The rounding
// of v adds |silu'(v)| u |v| <= u |y| (1 + |v|) (silu' = s (1 + v (1 - s))).
// Backward, x the pre-activation: with s <= 1 and 1 - s <= 1, q = 1 + x (1 - s) is within
// u (7|x| + 2|x| + |q|) of its value and s q within 9u (s |q| + |x|); the product with dy
// rounds once: |dz - exact| <= u (10 |dz| + 9 |dy| |x|). Loose where s vanishes (x << 0).
// bound[silu_fwd] y: 8 * u * abs(result)
// bound[bias_silu_fwd] y: (9 + abs(z + bias)) * u * abs(result)
// bound[bias_silu_fwd] pre: exact
// bound[silu_bwd] dz: u * (10 * abs(result) + 9 * abs(dy) * abs(pre))
struct Silu {
    // y = x sigmoid(x)
    template <typename T>
    static __device__ __forceinline__ T forward(T x, T) { return x * bp_sigmoid(x); }
    // Takes the pre-activation x: dL/dz = dL/dy * s (1 + x (1 - s)), s = sigmoid(x)
    template <typename T>
    static __device__ __forceinline__ T backward(T dy, T x, T) {
        const T s = bp_sigmoid(x);
        return dy * (s * (T(1) + x * (T(1) - s)));
    }
};

// Forward: x for x > 0 (exact), expm1(x) below (within 3u |y|). The rounding of v adds
// |elu'(v)| u |v|: u |v| for v > 0, (y + 1) u |v| below.
// Backward: dy for y > 0, else y + 1 and the product round once each: 2u relative.
// bound[elu_fwd] y: 3 * u * abs(result)
// bound[bias_elu_fwd] y: u * (3 * abs(result) + abs(z + bias) * where(z + bias > 0, 1, result + 1))
// bound[elu_bwd] dz: 2 * u * abs(result)
struct Elu {
    // y = x for x > 0, e^x - 1 below (alpha = 1)
    template <typename T>
    static __device__ __forceinline__ T forward(T x, T) { return x > T(0) ? x : bp_expm1(x); }
    // dL/dz = dL/dy * (1 if y > 0 else y + 1)
    template <typename T>
    static __device__ __forceinline__ T backward(T dy, T y, T) { return y > T(0) ? dy : dy * (y + T(1)); }
};

// y = act(z + b[col]) over a (rows, cols) matrix, b broadcast over rows; `pre` (z + b) is
// written when not null (GELU's backward needs it); `bias` null means no bias.
// The column advances by the grid stride modulo cols, so no 64-bit division per element.
template <typename Act, typename T>
__device__ void bias_act_forward(const T* z, const T* bias, T* y, T* pre, long long rows,
                                 long long cols, T slope) {
    const long long n = rows * cols;
    const long long stride = bp_grid_stride();
    long long i = bp_first_index();
    if (i >= n) return;
    long long col = i % cols;
    const long long col_step = stride % cols;
    for (; i < n; i += stride) {
        const T v = bias ? z[i] + bias[col] : z[i];
        if (pre) pre[i] = v;
        y[i] = Act::forward(v, slope);
        col += col_step;
        if (col >= cols) col -= cols;
    }
}

// grad_x = dy * act'(.) where `saved` is y (or the pre-activation for GELU).
template <typename Act, typename T>
__device__ void act_backward(const T* dy, const T* saved, T* grad_x, long long n, T slope) {
    for (long long i = bp_first_index(); i < n; i += bp_grid_stride()) {
        grad_x[i] = Act::backward(dy[i], saved[i], slope);
    }
}

// ---- y = act(z + b): reads z, writes y: 2 * sizeof(T) bytes per element (b stays in cache);
// GELU and SiLU also write z + b: 3 * sizeof(T).
extern "C" __global__ void bias_linear_fwd_f32(const float* z, const float* bias, float* y, long long rows, long long cols, float slope) { bias_act_forward<Linear>(z, bias, y, (float*)0, rows, cols, slope); }
extern "C" __global__ void bias_linear_fwd_f64(const double* z, const double* bias, double* y, long long rows, long long cols, double slope) { bias_act_forward<Linear>(z, bias, y, (double*)0, rows, cols, slope); }
extern "C" __global__ void bias_sigmoid_fwd_f32(const float* z, const float* bias, float* y, long long rows, long long cols, float slope) { bias_act_forward<Sigmoid>(z, bias, y, (float*)0, rows, cols, slope); }
extern "C" __global__ void bias_sigmoid_fwd_f64(const double* z, const double* bias, double* y, long long rows, long long cols, double slope) { bias_act_forward<Sigmoid>(z, bias, y, (double*)0, rows, cols, slope); }
extern "C" __global__ void bias_tanh_fwd_f32(const float* z, const float* bias, float* y, long long rows, long long cols, float slope) { bias_act_forward<Tanh>(z, bias, y, (float*)0, rows, cols, slope); }
extern "C" __global__ void bias_tanh_fwd_f64(const double* z, const double* bias, double* y, long long rows, long long cols, double slope) { bias_act_forward<Tanh>(z, bias, y, (double*)0, rows, cols, slope); }
extern "C" __global__ void bias_relu_fwd_f32(const float* z, const float* bias, float* y, long long rows, long long cols, float slope) { bias_act_forward<Relu>(z, bias, y, (float*)0, rows, cols, slope); }
extern "C" __global__ void bias_relu_fwd_f64(const double* z, const double* bias, double* y, long long rows, long long cols, double slope) { bias_act_forward<Relu>(z, bias, y, (double*)0, rows, cols, slope); }
extern "C" __global__ void bias_leaky_relu_fwd_f32(const float* z, const float* bias, float* y, long long rows, long long cols, float slope) { bias_act_forward<LeakyRelu>(z, bias, y, (float*)0, rows, cols, slope); }
extern "C" __global__ void bias_leaky_relu_fwd_f64(const double* z, const double* bias, double* y, long long rows, long long cols, double slope) { bias_act_forward<LeakyRelu>(z, bias, y, (double*)0, rows, cols, slope); }
extern "C" __global__ void bias_gelu_fwd_f32(const float* z, const float* bias, float* y, float* pre, long long rows, long long cols, float slope) { bias_act_forward<Gelu>(z, bias, y, pre, rows, cols, slope); }
extern "C" __global__ void bias_gelu_fwd_f64(const double* z, const double* bias, double* y, double* pre, long long rows, long long cols, double slope) { bias_act_forward<Gelu>(z, bias, y, pre, rows, cols, slope); }
extern "C" __global__ void bias_softplus_fwd_f32(const float* z, const float* bias, float* y, long long rows, long long cols, float slope) { bias_act_forward<Softplus>(z, bias, y, (float*)0, rows, cols, slope); }
extern "C" __global__ void bias_softplus_fwd_f64(const double* z, const double* bias, double* y, long long rows, long long cols, double slope) { bias_act_forward<Softplus>(z, bias, y, (double*)0, rows, cols, slope); }
extern "C" __global__ void bias_silu_fwd_f32(const float* z, const float* bias, float* y, float* pre, long long rows, long long cols, float slope) { bias_act_forward<Silu>(z, bias, y, pre, rows, cols, slope); }
extern "C" __global__ void bias_silu_fwd_f64(const double* z, const double* bias, double* y, double* pre, long long rows, long long cols, double slope) { bias_act_forward<Silu>(z, bias, y, pre, rows, cols, slope); }
extern "C" __global__ void bias_elu_fwd_f32(const float* z, const float* bias, float* y, long long rows, long long cols, float slope) { bias_act_forward<Elu>(z, bias, y, (float*)0, rows, cols, slope); }
extern "C" __global__ void bias_elu_fwd_f64(const double* z, const double* bias, double* y, long long rows, long long cols, double slope) { bias_act_forward<Elu>(z, bias, y, (double*)0, rows, cols, slope); }

// ---- y = act(x): reads x, writes y: 2 * sizeof(T) bytes per element.
extern "C" __global__ void sigmoid_fwd_f32(const float* x, float* y, long long n, float slope) { bias_act_forward<Sigmoid>(x, (const float*)0, y, (float*)0, n, 1LL, slope); }
extern "C" __global__ void sigmoid_fwd_f64(const double* x, double* y, long long n, double slope) { bias_act_forward<Sigmoid>(x, (const double*)0, y, (double*)0, n, 1LL, slope); }
extern "C" __global__ void tanh_fwd_f32(const float* x, float* y, long long n, float slope) { bias_act_forward<Tanh>(x, (const float*)0, y, (float*)0, n, 1LL, slope); }
extern "C" __global__ void tanh_fwd_f64(const double* x, double* y, long long n, double slope) { bias_act_forward<Tanh>(x, (const double*)0, y, (double*)0, n, 1LL, slope); }
extern "C" __global__ void relu_fwd_f32(const float* x, float* y, long long n, float slope) { bias_act_forward<Relu>(x, (const float*)0, y, (float*)0, n, 1LL, slope); }
extern "C" __global__ void relu_fwd_f64(const double* x, double* y, long long n, double slope) { bias_act_forward<Relu>(x, (const double*)0, y, (double*)0, n, 1LL, slope); }
extern "C" __global__ void leaky_relu_fwd_f32(const float* x, float* y, long long n, float slope) { bias_act_forward<LeakyRelu>(x, (const float*)0, y, (float*)0, n, 1LL, slope); }
extern "C" __global__ void leaky_relu_fwd_f64(const double* x, double* y, long long n, double slope) { bias_act_forward<LeakyRelu>(x, (const double*)0, y, (double*)0, n, 1LL, slope); }
extern "C" __global__ void gelu_fwd_f32(const float* x, float* y, long long n, float slope) { bias_act_forward<Gelu>(x, (const float*)0, y, (float*)0, n, 1LL, slope); }
extern "C" __global__ void gelu_fwd_f64(const double* x, double* y, long long n, double slope) { bias_act_forward<Gelu>(x, (const double*)0, y, (double*)0, n, 1LL, slope); }
extern "C" __global__ void softplus_fwd_f32(const float* x, float* y, long long n, float slope) { bias_act_forward<Softplus>(x, (const float*)0, y, (float*)0, n, 1LL, slope); }
extern "C" __global__ void softplus_fwd_f64(const double* x, double* y, long long n, double slope) { bias_act_forward<Softplus>(x, (const double*)0, y, (double*)0, n, 1LL, slope); }
extern "C" __global__ void silu_fwd_f32(const float* x, float* y, long long n, float slope) { bias_act_forward<Silu>(x, (const float*)0, y, (float*)0, n, 1LL, slope); }
extern "C" __global__ void silu_fwd_f64(const double* x, double* y, long long n, double slope) { bias_act_forward<Silu>(x, (const double*)0, y, (double*)0, n, 1LL, slope); }
extern "C" __global__ void elu_fwd_f32(const float* x, float* y, long long n, float slope) { bias_act_forward<Elu>(x, (const float*)0, y, (float*)0, n, 1LL, slope); }
extern "C" __global__ void elu_fwd_f64(const double* x, double* y, long long n, double slope) { bias_act_forward<Elu>(x, (const double*)0, y, (double*)0, n, 1LL, slope); }

// ---- dz = dy * act'(y): reads dy and y (GELU, SiLU: the pre-activation), writes dz: 3 * sizeof(T).
extern "C" __global__ void sigmoid_bwd_f32(const float* dy, const float* y, float* dz, long long n, float slope) { act_backward<Sigmoid>(dy, y, dz, n, slope); }
extern "C" __global__ void sigmoid_bwd_f64(const double* dy, const double* y, double* dz, long long n, double slope) { act_backward<Sigmoid>(dy, y, dz, n, slope); }
extern "C" __global__ void tanh_bwd_f32(const float* dy, const float* y, float* dz, long long n, float slope) { act_backward<Tanh>(dy, y, dz, n, slope); }
extern "C" __global__ void tanh_bwd_f64(const double* dy, const double* y, double* dz, long long n, double slope) { act_backward<Tanh>(dy, y, dz, n, slope); }
extern "C" __global__ void relu_bwd_f32(const float* dy, const float* y, float* dz, long long n, float slope) { act_backward<Relu>(dy, y, dz, n, slope); }
extern "C" __global__ void relu_bwd_f64(const double* dy, const double* y, double* dz, long long n, double slope) { act_backward<Relu>(dy, y, dz, n, slope); }
extern "C" __global__ void leaky_relu_bwd_f32(const float* dy, const float* y, float* dz, long long n, float slope) { act_backward<LeakyRelu>(dy, y, dz, n, slope); }
extern "C" __global__ void leaky_relu_bwd_f64(const double* dy, const double* y, double* dz, long long n, double slope) { act_backward<LeakyRelu>(dy, y, dz, n, slope); }
extern "C" __global__ void gelu_bwd_f32(const float* dy, const float* pre, float* dz, long long n, float slope) { act_backward<Gelu>(dy, pre, dz, n, slope); }
extern "C" __global__ void gelu_bwd_f64(const double* dy, const double* pre, double* dz, long long n, double slope) { act_backward<Gelu>(dy, pre, dz, n, slope); }
extern "C" __global__ void softplus_bwd_f32(const float* dy, const float* y, float* dz, long long n, float slope) { act_backward<Softplus>(dy, y, dz, n, slope); }
extern "C" __global__ void softplus_bwd_f64(const double* dy, const double* y, double* dz, long long n, double slope) { act_backward<Softplus>(dy, y, dz, n, slope); }
extern "C" __global__ void silu_bwd_f32(const float* dy, const float* pre, float* dz, long long n, float slope) { act_backward<Silu>(dy, pre, dz, n, slope); }
extern "C" __global__ void silu_bwd_f64(const double* dy, const double* pre, double* dz, long long n, double slope) { act_backward<Silu>(dy, pre, dz, n, slope); }
extern "C" __global__ void elu_bwd_f32(const float* dy, const float* y, float* dz, long long n, float slope) { act_backward<Elu>(dy, y, dz, n, slope); }
extern "C" __global__ void elu_bwd_f64(const double* dy, const double* y, double* dz, long long n, double slope) { act_backward<Elu>(dy, y, dz, n, slope); }
