// hypergrad CUDA kernels of the GLM family (GlmOps, src/backend/glm/) over a mini-batch: the
// per-sample gradients and K-FAC's gradient factor that NHGD's curvature reads, the row outer
// products of the per-sample cross term, and the SGD step. The fused row kernel, which every
// pass over the rows runs first, is glm_rows.cu.
//
// Compiled by nvcc (-ptx -arch=compute_90) at build time or by NVRTC at run time; the shared
// helpers come from common.cuh. Buffers are f32 row-major; bf16 designs are their bit patterns
// (unsigned short), widened exactly (f32 = bits << 16). Grid-stride loops everywhere.
// Element-wise updates use the round-to-nearest intrinsics, so they round as the CPU's f32.
// CPU twins: src/backend/glm/cpu.rs (glm_per_sample_gradients, glm_kfac_factors,
// glm_add_row_outer, glm_sgd_step).
//
// hg_per_sample_grads_{f32,bf16}(x, rows, b, d, g, c, scale, out)
//     out[p·c·d + k·d + t] = (scale_p g[p·c+k]) x[rows[p]·d + t]   (scale_p = 1 if null)
//     block 256, grid min(ceil(b·c·d/256), 4096); flat grid-stride over b·c·d.
//     Traffic: writes b·c·d f32; reads each gathered row c times (L2 hits after the first).
// hg_kfac_gg(g, scale, b, c, alpha, beta, gg)
//     gg[k·c+l] = α Σ_p (scale_p g[p·c+k]) g[p·c+l] + β gg[k·c+l]  (gg not read when β == 0,
//     as the CPU GEMM). One thread per (k, l), f32 sum over p in order; block 256,
//     grid min(ceil(c²/256), 4096). Traffic: g is c·b words, read c times per row (L1/L2).
// hg_add_row_outer_{f32,bf16}(x, n, d, coef, g, c, batch)  over (i, k, t) < (n, c, d):
//                                      batch[(i c + k) d + t] += (coef_i g_ik) x_it
//     grid-stride over n·c·d; 2 reads + 1 write of batch, x (2 or 4 bytes) read c times
//     (L2 hits after the first).
// hg_sgd_apply(w, grad, reg, len, eta, gs)  w[e] -= eta (gs grad[e] + reg[e] w[e])
//                                                                             3 reads 1 write

#include "common.cuh"

// ---- per-sample gradients and K-FAC's gradient factor -------------------------------------

template <typename XT>
__device__ __forceinline__ void hg_per_sample_grads_impl(const XT* x, const int* rows, int b,
                                                         int d, const float* g, int c,
                                                         const float* scale, float* out) {
    const long long total = (long long)b * c * d;
    for (long long idx = hg_gtid(); idx < total; idx += hg_gstride()) {
        const long long r = hg_div(idx, d);  // r = p c + k
        const long long t = idx - r * d;
        const long long p = hg_div(r, c);
        const float a = scale ? __fmul_rn(scale[p], g[r]) : g[r];
        out[idx] = __fmul_rn(a, hg_load(x, (long long)rows[p] * d + t));
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_per_sample_grads_f32(const float* x, const int* rows, int b, int d, const float* g, int c,
                        const float* scale, float* out) {
    hg_per_sample_grads_impl<float>(x, rows, b, d, g, c, scale, out);
}

extern "C" __global__ void __launch_bounds__(256)
hg_per_sample_grads_bf16(const unsigned short* x, const int* rows, int b, int d, const float* g,
                         int c, const float* scale, float* out) {
    hg_per_sample_grads_impl<unsigned short>(x, rows, b, d, g, c, scale, out);
}

extern "C" __global__ void __launch_bounds__(256)
hg_kfac_gg(const float* g, const float* scale, int b, int c, float alpha, float beta, float* gg) {
    const long long cc = (long long)c * c;
    for (long long e = hg_gtid(); e < cc; e += hg_gstride()) {
        const int kk = (int)(e / c);
        const int ll = (int)(e - (long long)kk * c);
        float sum = 0.0f;
        for (int p = 0; p < b; ++p) {
            const float* gp = g + (long long)p * c;
            const float gk = scale ? __fmul_rn(scale[p], gp[kk]) : gp[kk];
            sum = fmaf(gk, gp[ll], sum);
        }
        const float v = __fmul_rn(alpha, sum);
        gg[e] = (beta == 0.0f) ? v : __fadd_rn(v, __fmul_rn(beta, gg[e]));
    }
}

// ---- the per-sample cross term and the SGD step --------------------------------------------

template <typename XT>
__device__ __forceinline__ void hg_add_row_outer_impl(const XT* x, int n, int d, const float* coef,
                                                      const float* g, int c, float* batch) {
    const long long total = (long long)n * c * d;
    for (long long idx = hg_gtid(); idx < total; idx += hg_gstride()) {
        const long long r = hg_div(idx, d);  // r = i c + k
        const long long t = idx - r * d;
        const long long i = hg_div(r, c);
        const float a = __fmul_rn(coef[i], g[r]);
        batch[idx] = __fadd_rn(batch[idx], __fmul_rn(a, hg_load(x, i * d + t)));
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_add_row_outer_f32(const float* x, int n, int d, const float* coef, const float* g, int c,
                     float* batch) {
    hg_add_row_outer_impl<float>(x, n, d, coef, g, c, batch);
}

extern "C" __global__ void __launch_bounds__(256)
hg_add_row_outer_bf16(const unsigned short* x, int n, int d, const float* coef, const float* g,
                      int c, float* batch) {
    hg_add_row_outer_impl<unsigned short>(x, n, d, coef, g, c, batch);
}

extern "C" __global__ void __launch_bounds__(256)
hg_sgd_apply(float* w, const float* grad, const float* reg, int len, float eta, float grad_scale) {
    for (long long e = hg_gtid(); e < len; e += hg_gstride()) {
        const float we = w[e];
        const float step = __fadd_rn(__fmul_rn(grad_scale, grad[e]), __fmul_rn(reg[e], we));
        w[e] = __fsub_rn(we, __fmul_rn(eta, step));
    }
}
