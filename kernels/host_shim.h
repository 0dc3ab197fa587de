// Host emulation of the little CUDA our kernels use, so the unchanged .cu files compile with g++
// (-std=c++20 -include host_shim.h) and run on the CPU in tests, where no GPU exists.
//
// - __global__, __device__, __forceinline__ become plain C++; threadIdx/blockIdx are thread-local,
//   blockDim/gridDim global: they hold what a launch sets.
// - __shared__ becomes `static`: one copy per kernel instantiation, shared by the block's threads.
//   Blocks run one after another, so one copy serves every block in turn.
// - A launch runs block by block. Kernels without barriers run their threads one after another on
//   the calling thread ("sequential" mode). A kernel that reaches __syncthreads runs one host
//   thread per CUDA thread (from a pool reused across launches) with a std::barrier per block
//   ("threaded" mode). The mode is found by
//   trying: in sequential mode __syncthreads throws NeedsBarrier before any thread passes the
//   barrier, and the caller relaunches threaded. (So a kernel must not update global memory in
//   place before its first barrier; none of ours does.)
// - BP_HOST_ENTRY(kernel) exports `int bp_host_<kernel>(grid, block, threaded, void** args)`,
//   where args[i] points at the i-th argument, as cuLaunchKernel's kernelParams do. The
//   parameter types come from the kernel's own declaration, deduced by the compiler. It returns
//   0, or 1 when a sequential launch needs a threaded one.
#ifndef BP_HOST_SHIM_H
#define BP_HOST_SHIM_H

#include <math.h>

#include <barrier>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>

struct bp_dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

inline thread_local bp_dim3 threadIdx;
inline thread_local bp_dim3 blockIdx;
inline bp_dim3 blockDim;
inline bp_dim3 gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

namespace bp_host {

struct NeedsBarrier {};

// The barrier of the block this host thread runs in; null in sequential mode.
inline thread_local std::barrier<>* block_barrier = nullptr;

template <typename... Params>
constexpr std::size_t arity(void (*)(Params...)) { return sizeof...(Params); }

template <typename... Params, std::size_t... I>
void call(void (*kernel)(Params...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<Params>*>(args[I])...);
}

// Calls Kernel with the arguments args[i] points at; one small function per kernel, so that the
// launcher below is compiled once, not once per kernel.
template <auto Kernel>
void trampoline(void** args) {
    call(Kernel, args, std::make_index_sequence<arity(Kernel)>{});
}

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

inline ThreadPool& pool() {
    static ThreadPool* instance = new ThreadPool();  // never destroyed: its threads never exit
    return *instance;
}

struct Block {
    void (*body)(void**);
    void** args;
    unsigned int index;
    std::barrier<>* barrier;
};

inline void run_thread(void* context, unsigned int t) {
    Block& block = *static_cast<Block*>(context);
    block_barrier = block.barrier;
    blockIdx = bp_dim3{block.index, 0, 0};
    threadIdx = bp_dim3{t, 0, 0};
    block.body(block.args);
    block_barrier = nullptr;
    // A CUDA thread that has exited no longer counts at later barriers.
    block.barrier->arrive_and_drop();
}

inline int launch(unsigned int grid, unsigned int block, int threaded, void (*body)(void**), void** args) {
    gridDim = bp_dim3{grid, 1, 1};
    blockDim = bp_dim3{block, 1, 1};
    for (unsigned int b = 0; b < grid; ++b) {
        if (threaded) {
            std::barrier<> barrier(block);
            Block context{body, args, b, &barrier};
            pool().run(block, run_thread, &context);
            continue;
        }
        try {
            for (unsigned int t = 0; t < block; ++t) {
                blockIdx = bp_dim3{b, 0, 0};
                threadIdx = bp_dim3{t, 0, 0};
                body(args);
            }
        } catch (const NeedsBarrier&) {
            return 1;
        }
    }
    return 0;
}

}  // namespace bp_host

inline void __syncthreads() {
    if (bp_host::block_barrier == nullptr) throw bp_host::NeedsBarrier{};
    bp_host::block_barrier->arrive_and_wait();
}

#define BP_HOST_ENTRY(kernel)                                                                    \
    extern "C" int bp_host_##kernel(unsigned int grid, unsigned int block, int threaded,       \
                                    void** args) {                                             \
        return bp_host::launch(grid, block, threaded, &bp_host::trampoline<kernel>, args);       \
    }

#endif  // BP_HOST_SHIM_H
