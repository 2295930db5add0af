// hypergrad CUDA kernels of the core backend: BLAS-1, reductions, hyper-parameter groups, row
// gathers.
//
// Compiled by nvcc (-ptx -arch=compute_90) at build time or by NVRTC at run time; the shared
// helpers come from common.cuh (pasted in for NVRTC by build.rs). Buffers are f32 row-major;
// reductions accumulate in double. CPU twins: src/backend/cpu.rs (`CpuBackend<f32>`).
// Element-wise updates use the round-to-nearest intrinsics (__fmul_rn, __fadd_rn), which the
// compiler never contracts into FMAs, so they round exactly like the CPU's (non-contracted)
// f32 expressions: given equal inputs the results are bit-identical.
//
// Launch configuration (all kernels): block = 256 threads (any multiple of 32 up to 1024
// is correct), grid = min(ceil(n/256), 4096), except hg_batched_dot (grid (gx, m)). All
// loops are grid-stride loops, so every grid size is correct. Memory traffic is given in
// f32 words (4 bytes) per element.
//
// hg_fill(x, n, v)                     x[i] = v                               1 write
// hg_scal(x, n, a)                     x[i] = a x[i]                          1 read 1 write
// hg_axpby(x, y, n, a, b)              y[i] = a x[i] + b y[i]                 2 reads 1 write
//     (b == 1 gives y[i] + a x[i] exactly: b*y is then exact.)
// hg_mul_add(a, len_a, x, y, n, al)    y[i] += (al a[i % len_a]) x[i]         3 reads 1 write
// hg_adam_apply(w, g, m, v, n, b1, b2, s, eps)   Adam's step (src/backend/mod.rs, AdamCoefficients):
//                                      m = b1 m + (1−b1) g;  v = b2 v + (1−b2) g²;
//                                      w −= s m / (√v + eps)                  4 reads 3 writes
// hg_dot(x, y, n, out)                 out[0] += Σ_i x_i y_i  (double)        2 reads; 1 atomic/block
// hg_batched_dot(batch, v, len, m, out)  grid (gx, m), blockIdx.y = b:
//                                      out[b] += Σ_e batch[b·len+e] v[e]      2 reads; 1 atomic/block
// hg_group_dot(x, y, len, mode, blk, out)  g(e) = 0 | e | e/blk (mode 0|1|2):
//                                      out[g(e)] += x_e y_e  (double)         2 reads; mode 0: 1 atomic
//     per block; mode 1: a plain += per entry (each entry is its own group); mode 2: a
//     segmented warp reduction, one atomic per (warp, group) segment.
// hg_group_expand(values, len, mode, blk, out)  out[e] = values[g(e)]        1 read 1 write
// hg_group_scatter_add(coef, w, len, mode, blk, batch)
//                                      batch[g(e)·len + e] += coef[g(e)] w[e] 3 reads 1 write
// hg_gather_rows_{f32,bf16}(x, rows, b, d, out)   out[p·d + t] = x[rows[p]·d + t]
//     block 256, grid min(ceil(b·d/256), 4096). Traffic: b·d reads and writes.

#include "common.cuh"

// ---- helpers --------------------------------------------------------------------------------

__device__ __forceinline__ int hg_group_of(int e, int mode, int block) {
    if (mode == 0) return 0;
    if (mode == 1) return e;
    return e / block;
}

// ---- element-wise ---------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256) hg_fill(float* x, int n, float v) {
    for (long long i = hg_gtid(); i < n; i += hg_gstride()) {
        x[i] = v;
    }
}

extern "C" __global__ void __launch_bounds__(256) hg_scal(float* x, int n, float a) {
    for (long long i = hg_gtid(); i < n; i += hg_gstride()) {
        x[i] = __fmul_rn(a, x[i]);
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_axpby(const float* x, float* y, int n, float a, float b) {
    for (long long i = hg_gtid(); i < n; i += hg_gstride()) {
        // b == 1: __fmul_rn(1, y) == y exactly, so this is y + a x rounded once, as y += a x.
        y[i] = __fadd_rn(__fmul_rn(a, x[i]), __fmul_rn(b, y[i]));
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_mul_add(const float* a, int len_a, const float* x, float* y, int n, float alpha) {
    for (long long i = hg_gtid(); i < n; i += hg_gstride()) {
        const int ia = (int)i % len_a;  // i < n < 2^31
        y[i] = __fadd_rn(y[i], __fmul_rn(__fmul_rn(alpha, a[ia]), x[i]));
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_adam_apply(float* w, const float* g, float* m, float* v, int n, float beta1, float beta2,
              float step, float eps) {
    const float c1 = __fsub_rn(1.0f, beta1), c2 = __fsub_rn(1.0f, beta2);
    for (long long i = hg_gtid(); i < n; i += hg_gstride()) {
        const float ge = g[i];
        const float me = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(c1, ge));
        const float ve = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(c2, __fmul_rn(ge, ge)));
        m[i] = me;
        v[i] = ve;
        w[i] = __fsub_rn(w[i], __fmul_rn(step, __fdiv_rn(me, __fadd_rn(__fsqrt_rn(ve), eps))));
    }
}

// ---- reductions -----------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256)
hg_dot(const float* x, const float* y, int n, double* out) {
    double s = 0.0;
    for (long long i = hg_gtid(); i < n; i += hg_gstride()) {
        s += (double)x[i] * (double)y[i];
    }
    s = hg_block_sum_d(s);
    if (threadIdx.x == 0) {
        atomicAdd(out, s);
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_batched_dot(const float* batch, const float* v, int len, int m, double* out) {
    const int b = blockIdx.y;  // uniform over the block
    if (b >= m) return;        // whole block leaves: no __syncthreads is skipped by a part of it
    const float* xb = batch + (long long)b * len;
    double s = 0.0;
    for (long long e = hg_gtid(); e < len; e += hg_gstride()) {
        s += (double)xb[e] * (double)v[e];
    }
    s = hg_block_sum_d(s);
    if (threadIdx.x == 0) {
        atomicAdd(out + b, s);
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_group_dot(const float* x, const float* y, int len, int mode, int block, double* out) {
    if (mode == 0) {  // Shared: one group, block reduction, one atomic per block
        double s = 0.0;
        for (long long e = hg_gtid(); e < len; e += hg_gstride()) {
            s += (double)x[e] * (double)y[e];
        }
        s = hg_block_sum_d(s);
        if (threadIdx.x == 0) {
            atomicAdd(out, s);
        }
    } else if (mode == 1) {  // Each: entry e is alone in group e, visited by one thread
        for (long long e = hg_gtid(); e < len; e += hg_gstride()) {
            out[e] += (double)x[e] * (double)y[e];
        }
    } else {  // Blocks: g(e) = e / block, nondecreasing in e
        const int bl = block > 0 ? block : 1;
        const int lane = threadIdx.x & 31;
        const long long warp_id = hg_gtid() >> 5;
        const long long warp_stride = hg_gstride() >> 5;
        // The loop bound depends on the warp only, so all 32 lanes shuffle together.
        for (long long base = warp_id * 32; base < len; base += warp_stride * 32) {
            const long long e = base + lane;
            double v = 0.0;
            int g;
            if (e < len) {
                v = (double)x[e] * (double)y[e];
                g = (int)e / bl;
            } else {
                g = (len - 1) / bl;  // joins the last segment, keeps g nondecreasing
            }
            // Segmented suffix sum: afterwards the first lane of each run of equal g holds the
            // run's total (lanes of a run are contiguous since g is nondecreasing).
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const double ov = __shfl_down_sync(HG_FULL_MASK, v, o);
                const int og = __shfl_down_sync(HG_FULL_MASK, g, o);
                if (lane + o < 32 && og == g) {
                    v += ov;
                }
            }
            const int gprev = __shfl_up_sync(HG_FULL_MASK, g, 1);
            if (lane == 0 || gprev != g) {
                atomicAdd(out + g, v);
            }
        }
    }
}

// ---- groups ---------------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256)
hg_group_expand(const float* values, int len, int mode, int block, float* out) {
    const int bl = block > 0 ? block : 1;
    for (long long e = hg_gtid(); e < len; e += hg_gstride()) {
        out[e] = values[hg_group_of((int)e, mode, bl)];
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_group_scatter_add(const float* coef, const float* w, int len, int mode, int block, float* batch) {
    const int bl = block > 0 ? block : 1;
    for (long long e = hg_gtid(); e < len; e += hg_gstride()) {
        const int g = hg_group_of((int)e, mode, bl);
        const long long at = (long long)g * len + e;
        batch[at] = __fadd_rn(batch[at], __fmul_rn(coef[g], w[e]));
    }
}

// ---- per-row outer products -----------------------------------------------------------------

// ---- row gathers (a mini-batch's rows, a bf16 design widened) ---------------------------

template <typename XT>
__device__ __forceinline__ void hg_gather_rows_impl(const XT* x, const int* rows, int b, int d,
                                                    float* out) {
    const long long total = (long long)b * d;
    for (long long idx = hg_gtid(); idx < total; idx += hg_gstride()) {
        const long long p = hg_div(idx, d);
        const long long t = idx - p * d;
        out[idx] = hg_load(x, (long long)rows[p] * d + t);
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_gather_rows_f32(const float* x, const int* rows, int b, int d, float* out) {
    hg_gather_rows_impl<float>(x, rows, b, d, out);
}

extern "C" __global__ void __launch_bounds__(256)
hg_gather_rows_bf16(const unsigned short* x, const int* rows, int b, int d, float* out) {
    hg_gather_rows_impl<unsigned short>(x, rows, b, d, out);
}
