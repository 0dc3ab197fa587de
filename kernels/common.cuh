// What every kernel file shares: grid-stride indexing, float/double math overloads, the two-sided
// sigmoid, and deterministic block reductions.
//
// The loader inlines this header into each .cu it compiles (CuPy's disk cache hashes the source
// text, so an edit here must change that text); the host build includes it normally.
//
// Error bounds. Beside each kernel, lines
//   bound[kernel ...] output: expression     the bound on |computed - exact| for that output
//   bound[kernel ...] name = expression      a quantity the lines below it use
// state how far a kernel's result may be from the exact value of the reference formula
// (backends/base.py) on the same inputs, computed on a GPU: +, -, *, / and sqrt rounded to
// nearest (0 ulp: NVRTC's defaults -prec-div=true and -prec-sqrt=true, which CuPy keeps), any
// a*b + c fused into an FMA or not (NVRTC contracts by default), float32 subnormals flushed to
// zero (CuPy passes -ftz=true), and the math library within the maximum errors the CUDA C++
// Programming Guide documents (host_shim.h cites them): expf and tanhf 2 ulp, logf and log1pf
// 1 ulp, expm1f 1 ulp, exp, tanh, log, log1p and expm1 1 ulp, counted from the correctly
// rounded result. With u the
// unit roundoff (2^-24 in float, 2^-53 in double), one rounding moves x by at most u |x| and a
// k-ulp function is within (2k + 1) u |f| of the exact value: 5u for expf and tanhf, 3u for the
// others. A coefficient computed on the host arrives rounded to the kernel's type: u more.
//
// Expressions are Python over NumPy, to first order in u: the kernel's parameters by name (values
// as passed, before the launch), `result` (the exact value of the output), u, and abs, sqrt,
// where, total (sum of everything), rowsum and rowmax (over each row, kept as a column), colsum
// (over the rows) and softmax (of each row). `exact` means bit for bit equal to the reference
// computed in the kernel's own type. tests/test_kernels_host.py evaluates every bound against the
// reference computed in a wider type, allowing 1/64 more for higher-order terms and the
// reference's own rounding, plus 2^-126 in float32 for a flushed subnormal.
#ifndef BP_COMMON_CUH
#define BP_COMMON_CUH

// The largest block any launch uses: the block reductions' shared scratch is this long.
#define BP_MAX_BLOCK 256
// Columns per tile in the column reductions: one warp wide, so a warp reads a row segment whole.
#define BP_TILE 32

// First element of this thread, and the grid's stride, as long long: n may exceed 2^31.
__device__ __forceinline__ long long bp_first_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long bp_grid_stride() { return (long long)blockDim.x * gridDim.x; }

// Math by overload, so one template serves float and double (the f suffix keeps float in float).
__device__ __forceinline__ float bp_exp(float x) { return expf(x); }
__device__ __forceinline__ double bp_exp(double x) { return exp(x); }
__device__ __forceinline__ float bp_log(float x) { return logf(x); }
__device__ __forceinline__ double bp_log(double x) { return log(x); }
__device__ __forceinline__ float bp_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double bp_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float bp_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double bp_expm1(double x) { return expm1(x); }
__device__ __forceinline__ float bp_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double bp_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float bp_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double bp_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float bp_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double bp_abs(double x) { return fabs(x); }

// The lowest finite value of T (NumPy's finfo(T).min).
template <typename T>
__device__ __forceinline__ T bp_lowest();
template <>
__device__ __forceinline__ float bp_lowest<float>() { return -3.402823466e38f; }
template <>
__device__ __forceinline__ double bp_lowest<double>() { return -1.7976931348623157e308; }

// max(x, low) that keeps NaN, as NumPy's clip does.
template <typename T>
__device__ __forceinline__ T bp_clip_below(T x, T low) { return x < low ? low : x; }

// sign(x): -1, 0 or 1, and NaN for NaN (NumPy's sign).
template <typename T>
__device__ __forceinline__ T bp_sign(T x) { return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x); }

// True for every finite x: inf - inf and NaN - NaN are NaN, which compares unequal to 0.
template <typename T>
__device__ __forceinline__ bool bp_is_finite(T x) { return x - x == T(0); }

// Two-sided sigmoid: 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) below; e^-|x| never overflows.
template <typename T>
__device__ __forceinline__ T bp_sigmoid(T x) {
    const T e = bp_exp(-bp_abs(x));
    return (x >= T(0) ? T(1) : e) / (T(1) + e);
}

struct BpSum {
    template <typename T>
    static __device__ __forceinline__ T apply(T a, T b) { return a + b; }
};
struct BpMax {
    template <typename T>
    static __device__ __forceinline__ T apply(T a, T b) { return b > a ? b : a; }
};

// Reduces `value` over the block with Op, in a fixed tree order (so the result depends only on
// the block size: deterministic, no atomics), and returns it to every thread. Any block size up
// to BP_MAX_BLOCK. Every thread of the block must call it: it contains barriers.
template <typename Op, typename T>
__device__ T bp_block_reduce(T value, T* scratch) {
    const unsigned int t = threadIdx.x;
    const unsigned int size = blockDim.x;
    scratch[t] = value;
    __syncthreads();
    unsigned int width = 1;
    while (width < size) width <<= 1;
    for (width >>= 1; width > 0; width >>= 1) {
        if (t < width && t + width < size) scratch[t] = Op::apply(scratch[t], scratch[t + width]);
        __syncthreads();
    }
    const T total = scratch[0];
    __syncthreads();  // every thread has read scratch[0] before anyone writes scratch again
    return total;
}

// Folds the per-group partial sums of a column tile (see column_sums in reductions.cu): each
// thread adds the partials of its column's groups 0, 1, 2, ... in that order, so every thread of
// a column gets the same total. blockDim.x must be a multiple of BP_TILE (the launcher's job).
template <typename T>
__device__ T bp_fold_groups(T value, T* scratch) {
    const unsigned int lane = threadIdx.x % BP_TILE;
    const unsigned int groups = blockDim.x / BP_TILE;
    scratch[threadIdx.x] = value;
    __syncthreads();
    T total = scratch[lane];
    for (unsigned int g = 1; g < groups; ++g) total += scratch[g * BP_TILE + lane];
    __syncthreads();  // every thread has read its column before scratch is reused
    return total;
}

#endif  // BP_COMMON_CUH
