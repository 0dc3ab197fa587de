// Convolution as a matrix product per image: im2col lays each receptive field out as a column
// of its image's matrix, col2im gathers the gradient back onto the input; and the two channel
// layouts of an image batch (rows of channels, NCHW planes). backends/ops/im2col.py and
// channels.py define them. Every kernel only moves values or adds them in the reference's order:
// bit for bit equal to the reference.
#include "common.cuh"

// The geometry every im2col/col2im kernel takes: x (n, c, h, w), a kernel (kh, kw), strides
// (sh, sw), zero padding (ph, pw), the output (out_h, out_w); cols is (n, c kh kw, out_h out_w).

// cols[b, (ch, i, j), (oh, ow)] = x[b, ch, oh sh + i - ph, ow sw + j - pw], 0 in the padding.
// One thread per element of cols: reads one element of x, writes one: 2 * sizeof(T) per element.
// bound[im2col] cols: exact
template <typename T>
__device__ void im2col(const T* x, T* cols, long long n, long long c, long long h, long long w, long long kh,
                       long long kw, long long sh, long long sw, long long ph, long long pw, long long out_h,
                       long long out_w) {
    const long long width = c * kh * kw, positions = out_h * out_w;
    const long long total = n * width * positions;
    for (long long e = bp_first_index(); e < total; e += bp_grid_stride()) {
        const long long p = e % positions, k = (e / positions) % width, b = e / (positions * width);
        const long long j = k % kw, i = (k / kw) % kh, ch = k / (kh * kw);
        const long long ow = p % out_w, oh = p / out_w;
        const long long y = oh * sh + i - ph, xx = ow * sw + j - pw;
        cols[e] = (y >= 0 && y < h && xx >= 0 && xx < w) ? x[((b * c + ch) * h + y) * w + xx] : T(0);
    }
}

// dx[b, ch, y, xx] = sum over (i, j), row by row, of dcols[b, (ch, i, j), (oh, ow)] for every
// window (oh, ow) with oh sh + i = y + ph and ow sw + j = xx + pw: a gather per input element,
// in the order the reference adds them (no atomics). Reads up to kh kw elements of dcols per
// element of dx: (kh kw / (sh sw) + 1) * sizeof(T) per element.
// bound[col2im] dx: exact
template <typename T>
__device__ void col2im(const T* cols, T* dx, long long n, long long c, long long h, long long w, long long kh,
                       long long kw, long long sh, long long sw, long long ph, long long pw, long long out_h,
                       long long out_w) {
    const long long width = c * kh * kw;
    const long long total = n * c * h * w;
    for (long long e = bp_first_index(); e < total; e += bp_grid_stride()) {
        const long long xx = e % w, y = (e / w) % h, ch = (e / (w * h)) % c, b = e / (w * h * c);
        T sum = T(0);
        for (long long i = 0; i < kh; ++i) {
            const long long top = y + ph - i;  // oh sh for this kernel row
            if (top < 0) break;                // and for every later one
            if (top % sh != 0 || top / sh >= out_h) continue;
            const long long oh = top / sh;
            for (long long j = 0; j < kw; ++j) {
                const long long left = xx + pw - j;
                if (left < 0) break;
                if (left % sw != 0 || left / sw >= out_w) continue;
                const long long row = b * width + (ch * kh + i) * kw + j;  // of the matrix dcols[b]
                sum += cols[(row * out_h + oh) * out_w + left / sw];
            }
        }
        dx[e] = sum;
    }
}

// planes[b, ch, p] = rows[(b, p), ch] over the p = h w pixels of each image, and back. One
// thread per element, reads one and writes one: 2 * sizeof(T) per element.
// bound[to_channels_first] planes: exact
// bound[to_channels_last] rows: exact
template <typename T>
__device__ void to_channels_first(const T* rows, T* planes, long long n, long long c, long long pixels) {
    const long long total = n * c * pixels;
    for (long long e = bp_first_index(); e < total; e += bp_grid_stride()) {
        const long long p = e % pixels, ch = (e / pixels) % c, b = e / (pixels * c);
        planes[e] = rows[(b * pixels + p) * c + ch];
    }
}

template <typename T>
__device__ void to_channels_last(const T* planes, T* rows, long long n, long long c, long long pixels) {
    const long long total = n * c * pixels;
    for (long long e = bp_first_index(); e < total; e += bp_grid_stride()) {
        const long long ch = e % c, p = (e / c) % pixels, b = e / (c * pixels);
        rows[e] = planes[(b * c + ch) * pixels + p];
    }
}

extern "C" __global__ void im2col_f32(const float* x, float* cols, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long ph, long long pw, long long out_h, long long out_w) { im2col(x, cols, n, c, h, w, kh, kw, sh, sw, ph, pw, out_h, out_w); }
extern "C" __global__ void im2col_f64(const double* x, double* cols, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long ph, long long pw, long long out_h, long long out_w) { im2col(x, cols, n, c, h, w, kh, kw, sh, sw, ph, pw, out_h, out_w); }
extern "C" __global__ void col2im_f32(const float* cols, float* dx, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long ph, long long pw, long long out_h, long long out_w) { col2im(cols, dx, n, c, h, w, kh, kw, sh, sw, ph, pw, out_h, out_w); }
extern "C" __global__ void col2im_f64(const double* cols, double* dx, long long n, long long c, long long h, long long w, long long kh, long long kw, long long sh, long long sw, long long ph, long long pw, long long out_h, long long out_w) { col2im(cols, dx, n, c, h, w, kh, kw, sh, sw, ph, pw, out_h, out_w); }
extern "C" __global__ void to_channels_first_f32(const float* rows, float* planes, long long n, long long c, long long pixels) { to_channels_first(rows, planes, n, c, pixels); }
extern "C" __global__ void to_channels_first_f64(const double* rows, double* planes, long long n, long long c, long long pixels) { to_channels_first(rows, planes, n, c, pixels); }
extern "C" __global__ void to_channels_last_f32(const float* planes, float* rows, long long n, long long c, long long pixels) { to_channels_last(planes, rows, n, c, pixels); }
extern "C" __global__ void to_channels_last_f64(const double* planes, double* rows, long long n, long long c, long long pixels) { to_channels_last(planes, rows, n, c, pixels); }
