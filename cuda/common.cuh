// hypergrad CUDA kernels: the helpers every cuda/*.cu shares, one copy (`#include "common.cuh"`).
//
// How it reaches each compiler: nvcc finds it next to the including file (build.rs and
// scripts/check_kernels.sh also pass `-I cuda`); for NVRTC, which gets one source text per file
// and no file system, build.rs pastes this text in place of the `#include` line; the C++ kernel
// emulation (tests/kernel_emulation.rs) does the same. So this header includes nothing itself,
// and has no include guard: each .cu is compiled on its own and includes it once, and the
// emulation pastes it into one C++ namespace per .cu.
//
// Contents: grid-stride indices, bf16 widening (exact: a bf16 is the top half of an f32),
// 32-bit division where it fits, and double-precision warp and block sums.

#define HG_FULL_MASK 0xffffffffu

// ---- grid-stride loops ----------------------------------------------------------------------
// for (long long i = hg_gtid(); i < n; i += hg_gstride()) visits every i < n once for any grid.

__device__ __forceinline__ long long hg_gtid() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long hg_gstride() {
    return (long long)gridDim.x * blockDim.x;
}

// ---- bf16 designs ---------------------------------------------------------------------------
// A bf16 design is passed as its bit patterns (unsigned short); widening is exact.

__device__ __forceinline__ float hg_bf16_to_f32(unsigned short h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

// Entry e of a design of either storage, as f32.
__device__ __forceinline__ float hg_load(const float* p, long long e) { return p[e]; }

__device__ __forceinline__ float hg_load(const unsigned short* p, long long e) {
    return hg_bf16_to_f32(p[e]);
}

// ---- index arithmetic -----------------------------------------------------------------------

// a / b for a ≥ 0, b > 0, with a 32-bit division when a fits (the common case).
__device__ __forceinline__ long long hg_div(long long a, int b) {
    if (a <= 0xffffffffLL) {
        return (long long)((unsigned int)a / (unsigned int)b);
    }
    return a / (long long)b;
}

// ---- reductions in double -------------------------------------------------------------------

// Sum of v over the 32 lanes of the warp, in every lane. All 32 lanes must call it.
__device__ __forceinline__ double hg_warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) {
        v += __shfl_xor_sync(HG_FULL_MASK, v, o);
    }
    return v;
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); the result is valid in
// thread 0. Every thread of the block must call it (it contains a __syncthreads), once per
// kernel.
__device__ __forceinline__ double hg_block_sum_d(double v) {
    __shared__ double hg_warp_sums[32];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = hg_warp_sum_d(v);
    if (lane == 0) {
        hg_warp_sums[warp] = v;
    }
    __syncthreads();
    double r = 0.0;
    if (warp == 0) {  // warp-uniform: all 32 lanes of warp 0 shuffle
        r = (lane < nwarps) ? hg_warp_sums[lane] : 0.0;
        r = hg_warp_sum_d(r);
    }
    return r;
}
