// Minimal CPU emulation of the CUDA features the hypergrad kernels use (one block at a time,
// one std::thread per CUDA thread, std::barrier for __syncthreads and warp shuffles).
#pragma once
#include <cmath>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <barrier>
#include <mutex>
#include <vector>
#include <memory>
#include <functional>
#include <algorithm>
using std::exp; using std::log; using std::log1p; using std::sqrt; using std::tanh; using std::fmax;
struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct float4 { float x, y, z, w; };
struct uint2 { unsigned x, y; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
struct Warp { std::barrier<> bar{32}; uint64_t slot[32]; };
inline std::vector<std::unique_ptr<Warp>> g_warps;
inline std::unique_ptr<std::barrier<>> g_block_bar;
inline std::mutex g_atomic_mu;
inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
template <class T> T hg_shfl(T v, int src, bool keep_if_oob = false) {
    int lane = threadIdx.x & 31; Warp& w = *g_warps[threadIdx.x >> 5];
    uint64_t bits = 0; std::memcpy(&bits, &v, sizeof(T)); w.slot[lane] = bits;
    w.bar.arrive_and_wait();
    T r;
    if (keep_if_oob && (src < 0 || src > 31)) r = v; else { uint64_t b = w.slot[src & 31]; std::memcpy(&r, &b, sizeof(T)); }
    w.bar.arrive_and_wait();
    return r;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o) { return hg_shfl(v, (threadIdx.x & 31) ^ o); }
template <class T> T __shfl_sync(unsigned, T v, int s) { return hg_shfl(v, s & 31); }
template <class T> T __shfl_down_sync(unsigned, T v, int o) { return hg_shfl(v, (int)(threadIdx.x & 31) + o, true); }
template <class T> T __shfl_up_sync(unsigned, T v, int o) { return hg_shfl(v, (int)(threadIdx.x & 31) - o, true); }
template <class T> T atomicAdd(T* p, T v) { std::lock_guard<std::mutex> g(g_atomic_mu); T old = *p; *p = old + v; return old; }
template <class T> T __ldg(const T* p) { return *p; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float fmaxf(float a, float b) { return std::fmax(a, b); }
inline float fabsf(float a) { return std::fabs(a); }
inline float fmaf(float a, float b, float c) { return std::fma(a, b, c); }
// Run `kernel` on grid × block threads; blocks one after another.
inline void launch(dim3 grid, dim3 block, std::function<void()> kernel) {
    blockDim = block; gridDim = grid;
    unsigned nt = block.x;
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        g_block_bar = std::make_unique<std::barrier<>>(nt);
        g_warps.clear();
        for (unsigned w = 0; w < (nt + 31) / 32; ++w) g_warps.push_back(std::make_unique<Warp>());
        std::vector<std::thread> ts;
        for (unsigned t = 0; t < nt; ++t) ts.emplace_back([=] {
            threadIdx = dim3{t, 0, 0}; blockIdx = dim3{bx, by, 0};
            kernel();
            g_block_bar->arrive_and_drop();
            g_warps[t >> 5]->bar.arrive_and_drop();
        });
        for (auto& th : ts) th.join();
    }
}
