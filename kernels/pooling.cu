// Max and average pooling over NCHW batches, forward and backward, without padding
// (backends/ops/max_pool.py and avg_pool.py define them). Each window (kh, kw) moves by (sh, sw)
// over x (n, c, h, w) to give (out_h, out_w) outputs per plane; window position k = i kw + j.
// Backward gathers per input element over the windows that cover it, in the order of k (no
// atomics): every kernel equals the reference bit for bit (they add in its order, and divide
// where it divides).
#include "common.cuh"

// y = the window's maximum, index = its position k: the first maximum, or the first NaN (which
// then is the maximum: NaN propagates). Reads kh kw elements, writes one value and one index.
// bound[max_pool_fwd] y: exact
// bound[max_pool_fwd] index: exact
template <typename T>
__device__ void max_pool_fwd(const T* x, T* y, long long* index, long long n, long long c, long long h, long long w,
                             long long kh, long long kw, long long sh, long long sw, long long out_h,
                             long long out_w) {
    const long long total = n * c * out_h * out_w;
    for (long long e = bp_first_index(); e < total; e += bp_grid_stride()) {
        const long long ow = e % out_w, oh = (e / out_w) % out_h, plane = e / (out_w * out_h);
        const T* corner = x + (plane * h + oh * sh) * w + ow * sw;
        T best = corner[0];
        long long chosen = 0;
        for (long long i = 0; i < kh; ++i) {
            for (long long j = 0; j < kw; ++j) {
                const T v = corner[i * w + j];
                // a larger value, or the first NaN (best == best: no NaN chosen yet)
                if (v > best || (v != v && best == best)) {
                    best = v;
                    chosen = i * kw + j;
                }
            }
        }
        y[e] = best;
        index[e] = chosen;
    }
}

// dx[y, xx] = sum over the windows o covering (y, xx), in the order of their position k of
// (y, xx), of term(o, k): the gather both backward passes share (no atomics). Reads up to kh kw
// terms per element of dx.
template <typename T, typename Term>
__device__ void gather_windows(T* dx, Term term, long long n, long long c, long long h, long long w, long long kh,
                               long long kw, long long sh, long long sw, long long out_h, long long out_w) {
    const long long total = n * c * h * w;
    for (long long e = bp_first_index(); e < total; e += bp_grid_stride()) {
        const long long xx = e % w, y = (e / w) % h, plane = e / (w * h);
        T sum = T(0);
        for (long long i = 0; i < kh && i <= y; ++i) {
            const long long top = y - i;  // oh sh of the window that holds (y, xx) in its row i
            if (top % sh != 0 || top / sh >= out_h) continue;
            for (long long j = 0; j < kw && j <= xx; ++j) {
                const long long left = xx - j;
                if (left % sw != 0 || left / sw >= out_w) continue;
                sum += term((plane * out_h + top / sh) * out_w + left / sw, i * kw + j);
            }
        }
        dx[e] = sum;
    }
}

// Max pooling's term: dy where the window chose this element, else 0 (as the reference adds).
template <typename T>
struct ChosenGradient {
    const T* dy;
    const long long* index;
    __device__ T operator()(long long o, long long k) const { return index[o] == k ? dy[o] : T(0); }
};

// Average pooling's term: dy / (kh kw).
template <typename T>
struct SharedGradient {
    const T* dy;
    T size;
    __device__ T operator()(long long o, long long) const { return dy[o] / size; }
};

// bound[max_pool_bwd] dx: exact
template <typename T>
__device__ void max_pool_bwd(const T* dy, const long long* index, T* dx, long long n, long long c, long long h,
                             long long w, long long kh, long long kw, long long sh, long long sw, long long out_h,
                             long long out_w) {
    gather_windows(dx, ChosenGradient<T>{dy, index}, n, c, h, w, kh, kw, sh, sw, out_h, out_w);
}

// y = (sum of the window in the order of k) / (kh kw). Reads kh kw elements, writes one.
// bound[avg_pool_fwd] y: exact
template <typename T>
__device__ void avg_pool_fwd(const T* x, T* y, long long n, long long c, long long h, long long w, long long kh,
                             long long kw, long long sh, long long sw, long long out_h, long long out_w) {
    const long long total = n * c * out_h * out_w;
    const T size = T(kh * kw);
    for (long long e = bp_first_index(); e < total; e += bp_grid_stride()) {
        const long long ow = e % out_w, oh = (e / out_w) % out_h, plane = e / (out_w * out_h);
        const T* corner = x + (plane * h + oh * sh) * w + ow * sw;
        T sum = corner[0];
        for (long long k = 1; k < kh * kw; ++k) sum += corner[(k / kw) * w + k % kw];
        y[e] = sum / size;
    }
}

// dx[y, xx] = sum over the windows covering (y, xx), in the order of k, of dy / (kh kw).
// bound[avg_pool_bwd] dx: exact
template <typename T>
__device__ void avg_pool_bwd(const T* dy, T* dx, long long n, long long c, long long h, long long w, long long kh,
                             long long kw, long long sh, long long sw, long long out_h, long long out_w) {
    gather_windows(dx, SharedGradient<T>{dy, T(kh * kw)}, n, c, h, w, kh, kw, sh, sw, out_h, out_w);
}

extern "C" __global__ void max_pool_fwd_f32(const float* x, float* y, long long* index, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long out_h, long long out_w) { max_pool_fwd(x, y, index, n, c, h, w, kh, kw, sh, sw, out_h, out_w); }
extern "C" __global__ void max_pool_fwd_f64(const double* x, double* y, long long* index, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long out_h, long long out_w) { max_pool_fwd(x, y, index, n, c, h, w, kh, kw, sh, sw, out_h, out_w); }
extern "C" __global__ void max_pool_bwd_f32(const float* dy, const long long* index, float* dx, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long out_h, long long out_w) { max_pool_bwd(dy, index, dx, n, c, h, w, kh, kw, sh, sw, out_h, out_w); }
extern "C" __global__ void max_pool_bwd_f64(const double* dy, const long long* index, double* dx, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long out_h, long long out_w) { max_pool_bwd(dy, index, dx, n, c, h, w, kh, kw, sh, sw, out_h, out_w); }
extern "C" __global__ void avg_pool_fwd_f32(const float* x, float* y, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long out_h, long long out_w) { avg_pool_fwd(x, y, n, c, h, w, kh, kw, sh, sw, out_h, out_w); }
extern "C" __global__ void avg_pool_fwd_f64(const double* x, double* y, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long out_h, long long out_w) { avg_pool_fwd(x, y, n, c, h, w, kh, kw, sh, sw, out_h, out_w); }
extern "C" __global__ void avg_pool_bwd_f32(const float* dy, float* dx, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long out_h, long long out_w) { avg_pool_bwd(dy, dx, n, c, h, w, kh, kw, sh, sw, out_h, out_w); }
extern "C" __global__ void avg_pool_bwd_f64(const double* dy, double* dx, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long out_h, long long out_w) { avg_pool_bwd(dy, dx, n, c, h, w, kh, kw, sh, sw, out_h, out_w); }
