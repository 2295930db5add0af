// hypergrad CUDA kernels of the ℓ1 problems (SPEC §2–3; src/l1/ drives them through
// `ProxOps`, src/backend/prox/): the proximal-gradient step and its forward-mode Jacobian
// (ISTA/FISTA), the design by columns, and the sequential sweeps of coordinate descent.
//
// Compiled by nvcc (-ptx -arch=compute_90) at build time or by NVRTC at run time; the shared
// helpers come from common.cuh. Buffers are f32. CPU twins: src/backend/prox/cpu.rs
// (`ProxOps for CpuBackend<T>`), which computes the same expressions in the same order (the
// column dot products excepted: here each thread's share is summed in double and the block's
// in a fixed tree, there sequentially in T).
//
// The design is dense column-major f32 (x[i + j·n] is row i of column j); sparse designs are
// densified on the device (see src/backend/prox/mod.rs for why).
//
// Launch configuration: block = 256 threads, grid = min(ceil(len/256), 4096), grid-stride
// loops (every grid size is correct). Memory traffic in f32 words per element.
//
// hg_prox_step(v, grad, l1, len, eta, w)
//     z = v_j − η grad_j,  w_j = sign(z) max(|z| − η l1_j, 0)        3 reads 1 write
// hg_prox_jacobian(w, v, jv, dgrad, gsm, l1, dl1, len, m, eta, coef, jw)
//     for each of the m columns k (blocks of len entries of jv, dgrad, dl1, jw):
//     g = dgrad[k,j] + dl2_k v_j
//     jw[k,j] = w_j ≠ 0 ? jv[k,j] − η g − gsm_j deta_k − s_j (l1_j deta_k + η dl1[k,j]) : 0
//     s_j = sign(w_j); coef = [deta_0..deta_{m−1}, dl2_0..dl2_{m−1}] (∂η/∂θ_k, ∂λ₂/∂θ_k),
//     a device array of 2m floats.                                      7 reads 1 write

// hg_cols_gemv(x, n, coords, m, alpha, v, out)            grid-stride over rows i
//     out_i += Σ_a (α v_a) x[i, C_a] for a = 0..m−1 in order, v_a = 0 skipped; C_a = coords[a]
//     (a when coords is null). Per entry the same operations as the CPU twin's column axpys.
// hg_cols_gemv_t(x, n, coords, m, r, out)                  one block per column a (grid-stride)
//     out_a = x[:, C_a]ᵀ r
// hg_cd_sweep(x, n, coords, m, lips, l1, l2, w, r, stats)   ONE block of 256 threads
//     for a = 0..m−1 (j = C_a, skipped when lips_j ≤ 0): u = x_jᵀr/n + L_j w_j,
//     w_j⁺ = ST(u, λ_j)/(L_j + λ₂), r −= x_j (w_j⁺ − w_j); stats = [max |Δw|, max |w⁺|].
//     Each coordinate: one block reduction over n (double), then one pass updating r.
// hg_cd_forward_sweep(x, n, d, kind, p, lips, l1, l2, w, r, jac, jr, live)   ONE block
//     the sweep above over all d columns, and after coordinate j for each live column k:
//     J_jk⁺ = 1{w_j⁺ ≠ 0}(x_jᵀR_k/n + L_j J_jk − s_j ∂λ_j/∂θ_k − w_j⁺ ∂λ₂/∂θ_k)/(L_j + λ₂),
//     R_k −= x_j (J_jk⁺ − J_jk). kind: 0 lasso, 1 enet, 2 wlasso (fixes the factors ∂λ/∂θ;
//     a wlasso column k becomes live, live_k = 1, once w_k⁺ ≠ 0).
// hg_cd_jacobian_sweep(x, n, coords, s, c, lips, b, l2, jac, res, stats)      ONE block
//     for each column block k < c, each a < s (j = C_a): J_ak⁺ = (x_jᵀR_k/n + L_a J_ak − b_ak)
//     /(L_a + λ₂), R_k −= x_j (J_ak⁺ − J_ak); stats = [max |ΔJ|, max |J⁺|].
//
// The sweeps are sequential in the coordinates by definition (each step reads the residual the
// previous one wrote), so they run in one block, the parallelism being over the n rows of a
// column; the launch is one per sweep, not one per coordinate.

#include "common.cuh"

// Sum of v over the block in every thread (blockDim.x a multiple of 32); may be called any
// number of times in a kernel: the first barrier keeps the previous call's readers of
// scratch[32] ahead of this call's writers.
__device__ __forceinline__ double hg_prox_block_sum(double v, double* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = hg_warp_sum_d(v);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {  // warp-uniform: all 32 lanes of warp 0 shuffle
        double t = (lane < nwarps) ? scratch[lane] : 0.0;
        t = hg_warp_sum_d(t);
        if (lane == 0) {
            scratch[32] = t;
        }
    }
    __syncthreads();
    return scratch[32];
}

// x_jᵀ v over the block, every thread's share in double: v[i] for i ≡ threadIdx.x.
__device__ __forceinline__ float hg_col_dot(const float* col, const float* v, int n,
                                            double* scratch) {
    double part = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        part += (double)col[i] * (double)v[i];
    }
    return (float)hg_prox_block_sum(part, scratch);
}

// v ← v + a·x_j, each thread its own entries (the same ones hg_col_dot reads).
__device__ __forceinline__ void hg_col_axpy(const float* col, float a, float* v, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        v[i] = __fadd_rn(v[i], __fmul_rn(a, col[i]));
    }
}

__device__ __forceinline__ float hg_soft(float z, float t) {
    if (z > t) return __fsub_rn(z, t);
    if (z < -t) return __fadd_rn(z, t);
    return 0.0f;
}

extern "C" __global__ void hg_cols_gemv(const float* x, int n, const int* coords, int m,
                                        float alpha, const float* v, float* out) {
    for (long long i = hg_gtid(); i < n; i += hg_gstride()) {
        float acc = out[i];
        for (int a = 0; a < m; ++a) {
            float va = v[a];
            if (va != 0.0f) {
                long long j = coords ? coords[a] : a;
                acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(alpha, va), x[i + j * n]));
            }
        }
        out[i] = acc;
    }
}

extern "C" __global__ void hg_cols_gemv_t(const float* x, int n, const int* coords, int m,
                                          const float* r, float* out) {
    __shared__ double scratch[33];
    for (int a = blockIdx.x; a < m; a += gridDim.x) {  // block-uniform loop
        long long j = coords ? coords[a] : a;
        float dot = hg_col_dot(x + j * n, r, n, scratch);
        if (threadIdx.x == 0) {
            out[a] = dot;
        }
    }
}

extern "C" __global__ void hg_cd_sweep(const float* x, int n, const int* coords, int m,
                                       const float* lips, const float* l1, float l2, float* w,
                                       float* r, float* stats) {
    __shared__ double scratch[33];
    const float nf = (float)n;
    float max_change = 0.0f, max_w = 0.0f;
    for (int a = 0; a < m; ++a) {
        const long long j = coords ? coords[a] : a;
        const float lj = lips[j];
        if (!(lj > 0.0f)) continue;  // block-uniform: every thread reads the same L_j
        const float* col = x + j * n;
        const float old = w[j];  // read by all before the barriers in hg_col_dot
        const float u = __fadd_rn(__fdiv_rn(hg_col_dot(col, r, n, scratch), nf), __fmul_rn(lj, old));
        const float nw = __fdiv_rn(hg_soft(u, l1[j]), __fadd_rn(lj, l2));
        if (nw != old) {
            hg_col_axpy(col, __fsub_rn(old, nw), r, n);
            if (threadIdx.x == 0) w[j] = nw;
        }
        max_change = fmaxf(max_change, fabsf(__fsub_rn(nw, old)));
        max_w = fmaxf(max_w, fabsf(nw));
    }
    if (threadIdx.x == 0) {
        stats[0] = max_change;
        stats[1] = max_w;
    }
}

extern "C" __global__ void hg_cd_forward_sweep(const float* x, int n, int d, int kind, int p,
                                               const float* lips, const float* l1, float l2,
                                               float* w, float* r, float* jac, float* jr,
                                               float* live) {
    __shared__ double scratch[33];
    const float nf = (float)n;
    for (int j = 0; j < d; ++j) {
        const float lj = lips[j];
        if (!(lj > 0.0f)) continue;  // block-uniform
        const float* col = x + (long long)j * n;
        const float old = w[j];
        const float u = __fadd_rn(__fdiv_rn(hg_col_dot(col, r, n, scratch), nf), __fmul_rn(lj, old));
        const float nw = __fdiv_rn(hg_soft(u, l1[j]), __fadd_rn(lj, l2));
        if (nw != old) {
            hg_col_axpy(col, __fsub_rn(old, nw), r, n);
            if (threadIdx.x == 0) w[j] = nw;
        }
        // Column j of wlasso is fed from this coordinate on (every thread decides alike; the
        // store is for the later sweeps).
        const bool feeds = kind == 2 && nw != 0.0f;
        if (feeds && threadIdx.x == 0) live[j] = 1.0f;
        const float s = nw > 0.0f ? 1.0f : -1.0f;
        const float denom = __fadd_rn(lj, l2);
        for (int k = 0; k < p; ++k) {
            if (!(live[k] != 0.0f || (feeds && k == j))) continue;  // block-uniform
            const long long e = (long long)k * d + j;
            float* rk = jr + (long long)k * n;
            const float jold = jac[e];
            float dnew = 0.0f;
            const float dot = hg_col_dot(col, rk, n, scratch);  // every thread takes part
            if (nw != 0.0f) {
                const float du = __fadd_rn(__fdiv_rn(dot, nf), __fmul_rn(lj, jold));
                const bool has_dl1 = (kind == 2) ? (k == j) : (k == 0);
                const float dl1 = has_dl1 ? l1[j] : 0.0f;
                const float dl2 = (kind == 1 && k == 1) ? l2 : 0.0f;
                dnew = __fdiv_rn(__fsub_rn(__fsub_rn(du, __fmul_rn(s, dl1)), __fmul_rn(nw, dl2)),
                                 denom);
            }
            const float delta = __fsub_rn(dnew, jold);
            if (delta != 0.0f) {
                hg_col_axpy(col, -delta, rk, n);
                if (threadIdx.x == 0) jac[e] = dnew;
            }
        }
    }
}

extern "C" __global__ void hg_cd_jacobian_sweep(const float* x, int n, const int* coords, int s,
                                                int c, const float* lips, const float* b,
                                                float l2, float* jac, float* res, float* stats) {
    __shared__ double scratch[33];
    const float nf = (float)n;
    float max_change = 0.0f, max_entry = 0.0f;
    for (int k = 0; k < c; ++k) {
        float* rk = res + (long long)k * n;
        for (int a = 0; a < s; ++a) {
            const long long j = coords[a];
            const float* col = x + j * n;
            const long long e = (long long)k * s + a;
            const float jold = jac[e];
            const float dot = hg_col_dot(col, rk, n, scratch);
            const float nw = __fdiv_rn(
                __fsub_rn(__fadd_rn(__fdiv_rn(dot, nf), __fmul_rn(lips[a], jold)), b[e]),
                __fadd_rn(lips[a], l2));
            const float delta = __fsub_rn(nw, jold);
            if (delta != 0.0f) {
                hg_col_axpy(col, -delta, rk, n);
                if (threadIdx.x == 0) jac[e] = nw;
            }
            max_change = fmaxf(max_change, fabsf(delta));
            max_entry = fmaxf(max_entry, fabsf(nw));
        }
    }
    if (threadIdx.x == 0) {
        stats[0] = max_change;
        stats[1] = max_entry;
    }
}

extern "C" __global__ void hg_prox_step(const float* v, const float* grad, const float* l1,
                                        int len, float eta, float* w) {
    for (long long j = hg_gtid(); j < len; j += hg_gstride()) {
        float z = __fsub_rn(v[j], __fmul_rn(eta, grad[j]));
        float t = __fmul_rn(eta, l1[j]);
        float out = 0.0f;
        if (z > t) {
            out = __fsub_rn(z, t);
        } else if (z < -t) {
            out = __fadd_rn(z, t);
        }
        w[j] = out;
    }
}

extern "C" __global__ void hg_prox_jacobian(const float* w, const float* v, const float* jv,
                                            const float* dgrad, const float* gsm,
                                            const float* l1, const float* dl1, int len, int m,
                                            float eta, const float* coef, float* jw) {
    long long total = (long long)len * m;
    for (long long e = hg_gtid(); e < total; e += hg_gstride()) {
        long long j = e % len;
        int k = (int)(e / len);
        float wj = w[j];
        float out = 0.0f;
        if (wj != 0.0f) {
            float dk = coef[k];
            float g = __fadd_rn(dgrad[e], __fmul_rn(coef[m + k], v[j]));
            float s = wj > 0.0f ? 1.0f : -1.0f;
            float dz = __fsub_rn(__fsub_rn(jv[e], __fmul_rn(eta, g)), __fmul_rn(gsm[j], dk));
            float shrink = __fadd_rn(__fmul_rn(l1[j], dk), __fmul_rn(eta, dl1[e]));
            out = __fsub_rn(dz, __fmul_rn(s, shrink));
        }
        jw[e] = out;
    }
}
