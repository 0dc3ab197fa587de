// Host emulation of the little CUDA our kernels use, so the unchanged .cu files compile with g++
// (-std=c++20 -include host_shim.h) and run on the CPU in tests, where no GPU exists.
//
// - __global__, __device__, __forceinline__ become plain C++. threadIdx and blockIdx are
//   thread-local, blockDim and gridDim global: they hold what a launch sets, and the unused
//   dimensions read as on a GPU (index 0, extent 1).
// - __shared__ becomes `static`: one copy per kernel instantiation, shared by the block's threads.
//   Blocks run one after another, so one copy serves every block in turn; before each block it is
//   poisoned (every byte 0xFF: NaN in float and double), so a kernel that reads shared memory it
//   has not written in this block reads NaN, as it would read garbage on a GPU. (The build links
//   the function-local statics of a kernel library into one section, bp_shared, for this.)
// - A launch runs block by block. Kernels without barriers run their threads one after another on
//   the calling thread ("sequential" mode). A kernel that reaches __syncthreads runs one host
//   thread per CUDA thread (from a pool reused across launches) with a barrier per block
//   ("threaded" mode). The mode is found by trying: in sequential mode __syncthreads throws
//   NeedsBarrier before any thread passes the barrier, and the caller relaunches with
//   BP_HOST_THREADED. (So a kernel must not update global memory in place before its first
//   barrier; none of ours does.)
// - Launch flags model what a GPU may do and a plain host run would not: BP_HOST_REVERSE runs the
//   blocks, and the threads of a sequential block, last to first; BP_HOST_FLUSH_TO_ZERO sets
//   flush-to-zero and denormals-are-zero (x86 MXCSR) in every thread while the kernel runs, as
//   CuPy's -ftz=true does for float32 on a GPU, and restores the thread's mode after.
// - Built with BP_HOST_LIBM_ULPS defined, expf, logf, log1pf, tanhf, exp, log, log1p and tanh
//   return results moved as far from the correctly rounded one as CUDA documents they may be
//   (see below). Contraction of a*b + c into FMAs, as NVRTC does, is a compiler flag of the build.
// - BP_HOST_ENTRY(kernel) exports `int bp_host_<kernel>(grid, block, flags, void** args)`, where
//   args[i] points at the i-th argument, as cuLaunchKernel's kernelParams do. The parameter types
//   come from the kernel's own declaration, deduced by the compiler. It returns 0; 1 when a
//   sequential launch needs a threaded one; 2 when a flag is not available on this host.
//
// The launcher itself (thread pool, barriers, launch loop) is the part below BP_HOST_RUNTIME:
// compiled once into a library of its own that every kernel build links against, so that kernel
// builds parse only light headers and all of them share one thread pool.
#ifndef BP_HOST_SHIM_H
#define BP_HOST_SHIM_H

#include <math.h>

#include <type_traits>
#include <utility>

#define BP_HOST_API __attribute__((visibility("default")))

struct bp_dim3 {
    unsigned int x, y, z;
};

BP_HOST_API extern thread_local bp_dim3 threadIdx;
BP_HOST_API extern thread_local bp_dim3 blockIdx;
BP_HOST_API extern bp_dim3 blockDim;
BP_HOST_API extern bp_dim3 gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

BP_HOST_API void __syncthreads();

// The kernel library's shared memory (see above); null when it has none.
extern char __start_bp_shared[] __attribute__((weak, visibility("hidden")));
extern char __stop_bp_shared[] __attribute__((weak, visibility("hidden")));

#define BP_HOST_THREADED 1u
#define BP_HOST_REVERSE 2u
#define BP_HOST_FLUSH_TO_ZERO 4u

namespace bp_host {

BP_HOST_API int launch(unsigned int grid, unsigned int block, unsigned int flags, void (*body)(void**),
                       void** args, char* shared_begin, char* shared_end);

template <typename... Params>
constexpr std::size_t arity(void (*)(Params...)) { return sizeof...(Params); }

template <typename... Params, std::size_t... I>
void call(void (*kernel)(Params...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<Params>*>(args[I])...);
}

// Calls Kernel with the arguments args[i] points at; one small function per kernel, so that the
// launcher is compiled once, not once per kernel.
template <auto Kernel>
void trampoline(void** args) {
    call(Kernel, args, std::make_index_sequence<arity(Kernel)>{});
}

}  // namespace bp_host

#define BP_HOST_ENTRY(kernel)                                                                    \
    extern "C" BP_HOST_API int bp_host_##kernel(unsigned int grid, unsigned int block,          \
                                                unsigned int flags, void** args) {              \
        return bp_host::launch(grid, block, flags, &bp_host::trampoline<kernel>, args,          \
                               __start_bp_shared, __stop_bp_shared);                            \
    }

#ifdef BP_HOST_LIBM_ULPS
// libm results as far from the correctly rounded result as CUDA allows. The CUDA C++ Programming
// Guide, appendix "Mathematical Functions" (Standard Functions; tables "Single-Precision
// Mathematical Standard Library Functions with Maximum ULP Error" and its double-precision twin),
// states each function's maximum error in ulps "between a correctly rounded ... result and the
// result returned by the CUDA library function": expf 2, tanhf 2, logf 1, log1pf 1, expm1f 1;
// exp, tanh, log, log1p, expm1 1. (sqrtf, sqrt and division are correctly rounded, 0 ulp, under NVRTC's default
// -prec-sqrt=true and -prec-div=true, which CuPy keeps; so they are left alone here.)
//
// Each wrapper takes the correctly rounded result (from the function evaluated in a wider type:
// double for float, the x87 long double for double; its own error is below 2^-9 ulp of the
// result) and moves it by the full number of ulps, up or down as a hash of the argument's bits
// decides: both directions occur, and a rerun moves the same way.
namespace bp_host {

inline bool moves_up(unsigned long long bits, unsigned long long function) {
    unsigned long long h = bits ^ (function * 0x9E3779B97F4A7C15ull);  // murmur3's fmix64
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h & 1;
}

inline float next_toward(float value, bool up) { return nextafterf(value, up ? INFINITY : -INFINITY); }
inline double next_toward(double value, bool up) { return nextafter(value, up ? INFINITY : -INFINITY); }

template <typename T, typename Wide>
inline T within_ulps(Wide exact, T argument, int ulps, unsigned long long function) {
    T result = static_cast<T>(exact);
    if (result == T(0) || !isfinite(result)) return result;
    unsigned long long bits = 0;
    __builtin_memcpy(&bits, &argument, sizeof argument);
    const bool up = moves_up(bits, function);
    for (int i = 0; i < ulps; ++i) result = next_toward(result, up);
    return result;
}

inline float cuda_expf(float x) { return within_ulps(::exp(double(x)), x, 2, 1); }
inline float cuda_tanhf(float x) { return within_ulps(::tanh(double(x)), x, 2, 2); }
inline float cuda_logf(float x) { return within_ulps(::log(double(x)), x, 1, 3); }
inline float cuda_log1pf(float x) { return within_ulps(::log1p(double(x)), x, 1, 4); }
inline float cuda_expm1f(float x) { return within_ulps(::expm1(double(x)), x, 1, 9); }
inline double cuda_exp(double x) { return within_ulps(::expl(x), x, 1, 5); }
inline double cuda_tanh(double x) { return within_ulps(::tanhl(x), x, 1, 6); }
inline double cuda_log(double x) { return within_ulps(::logl(x), x, 1, 7); }
inline double cuda_log1p(double x) { return within_ulps(::log1pl(x), x, 1, 8); }
inline double cuda_expm1(double x) { return within_ulps(::expm1l(x), x, 1, 10); }

}  // namespace bp_host

#define expf(x) bp_host::cuda_expf(x)
#define tanhf(x) bp_host::cuda_tanhf(x)
#define logf(x) bp_host::cuda_logf(x)
#define log1pf(x) bp_host::cuda_log1pf(x)
#define expm1f(x) bp_host::cuda_expm1f(x)
#define exp(x) bp_host::cuda_exp(x)
#define tanh(x) bp_host::cuda_tanh(x)
#define log(x) bp_host::cuda_log(x)
#define log1p(x) bp_host::cuda_log1p(x)
#define expm1(x) bp_host::cuda_expm1(x)
#endif  // BP_HOST_LIBM_ULPS

#ifdef BP_HOST_RUNTIME
#include <barrier>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

thread_local bp_dim3 threadIdx{0, 0, 0};
thread_local bp_dim3 blockIdx{0, 0, 0};
bp_dim3 blockDim{1, 1, 1};
bp_dim3 gridDim{1, 1, 1};

namespace bp_host {

struct NeedsBarrier {};

// The barrier of the block this host thread runs in; null in sequential mode.
thread_local std::barrier<>* block_barrier = nullptr;

// The host threads that run CUDA threads in threaded mode: worker i runs thread i of each block.
// Created once and reused (creating 256 threads per block costs far more than the kernels), and
// never destroyed: they wait on `start` until the process exits.
class ThreadPool {
public:
    // Runs body(t) for t in [0, threads), each on its own worker, and returns when all are done.
    void run(unsigned int threads, void (*body)(void*, unsigned int), void* context) {
        std::unique_lock<std::mutex> lock(mutex_);
        while (workers_ < threads) {
            std::thread(&ThreadPool::work, this, workers_++).detach();
        }
        body_ = body;
        context_ = context;
        active_ = threads;
        remaining_ = threads;
        ++generation_;
        start_.notify_all();
        done_.wait(lock, [this] { return remaining_ == 0; });
    }

private:
    void work(unsigned int index) {
        unsigned long seen = 0;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            start_.wait(lock, [&] { return generation_ != seen; });
            seen = generation_;
            if (index >= active_) continue;
            auto body = body_;
            void* context = context_;
            lock.unlock();
            body(context, index);
            lock.lock();
            if (--remaining_ == 0) done_.notify_one();
        }
    }

    std::mutex mutex_;
    std::condition_variable start_, done_;
    unsigned int workers_ = 0, active_ = 0, remaining_ = 0;
    unsigned long generation_ = 0;
    void (*body_)(void*, unsigned int) = nullptr;
    void* context_ = nullptr;
};

ThreadPool& pool() {
    static ThreadPool* instance = new ThreadPool();  // never destroyed: its threads never exit
    return *instance;
}

#if defined(__SSE__)
constexpr bool kHasFlushToZero = true;

// Flush-to-zero (MXCSR bit 15) and denormals-are-zero (bit 6) in this thread for the guard's
// lifetime, when asked; the thread's previous mode afterwards.
class FloatMode {
public:
    explicit FloatMode(bool flush) : saved_(_mm_getcsr()) {
        if (flush) _mm_setcsr(saved_ | 0x8040u);
    }
    ~FloatMode() { _mm_setcsr(saved_); }

private:
    unsigned int saved_;
};
#else
constexpr bool kHasFlushToZero = false;

class FloatMode {
public:
    explicit FloatMode(bool) {}
};
#endif

struct Block {
    void (*body)(void**);
    void** args;
    unsigned int index;
    bool flush;
    std::barrier<>* barrier;
};

void run_thread(void* context, unsigned int t) {
    Block& block = *static_cast<Block*>(context);
    FloatMode mode(block.flush);
    block_barrier = block.barrier;
    blockIdx = bp_dim3{block.index, 0, 0};
    threadIdx = bp_dim3{t, 0, 0};
    block.body(block.args);
    block_barrier = nullptr;
    // A CUDA thread that has exited no longer counts at later barriers.
    block.barrier->arrive_and_drop();
}

int launch(unsigned int grid, unsigned int block, unsigned int flags, void (*body)(void**), void** args,
           char* shared_begin, char* shared_end) {
    const bool threaded = flags & BP_HOST_THREADED;
    const bool reverse = flags & BP_HOST_REVERSE;
    const bool flush = flags & BP_HOST_FLUSH_TO_ZERO;
    if (flush && !kHasFlushToZero) return 2;
    gridDim = bp_dim3{grid, 1, 1};
    blockDim = bp_dim3{block, 1, 1};
    for (unsigned int i = 0; i < grid; ++i) {
        const unsigned int b = reverse ? grid - 1 - i : i;
        if (shared_begin != nullptr) std::memset(shared_begin, 0xFF, shared_end - shared_begin);
        if (threaded) {
            std::barrier<> barrier(block);
            Block context{body, args, b, flush, &barrier};
            pool().run(block, run_thread, &context);
            continue;
        }
        FloatMode mode(flush);
        try {
            for (unsigned int j = 0; j < block; ++j) {
                blockIdx = bp_dim3{b, 0, 0};
                threadIdx = bp_dim3{reverse ? block - 1 - j : j, 0, 0};
                body(args);
            }
        } catch (const NeedsBarrier&) {
            return 1;
        }
    }
    return 0;
}

}  // namespace bp_host

void __syncthreads() {
    if (bp_host::block_barrier == nullptr) throw bp_host::NeedsBarrier{};
    bp_host::block_barrier->arrive_and_wait();
}
#endif  // BP_HOST_RUNTIME

#endif  // BP_HOST_SHIM_H
