// hypergrad CUDA kernels: the element-wise and per-row steps of the multilayer perceptron
// (SPEC §8). The GEMMs between them are cuBLAS calls (src/backend/mlp/cuda.rs), the rows'
// gathers are blas1.cu's hg_gather_rows_{f32,bf16}.
//
// Compiled by nvcc (-ptx -arch=compute_90) at build time or by NVRTC at run time; the shared
// helpers come from common.cuh. Buffers are f32 row-major. CPU twin: src/backend/mlp/cpu.rs
// (`MlpOps for CpuBackend<T>`), whose f64 evaluations these repeat in double: the activation
// and its derivatives, softmax and cross-entropy, the R-operator's row steps and every sum over
// classes; products the twin forms in T are formed in f32 with __fmul_rn (never contracted).
//
// Notation (see src/backend/mlp/mod.rs): a pass runs over n positions p; position p is design
// row i = rows[p] (rows null: i = p); labels y and row weights s are indexed by i, everything
// else by p. A hidden layer's tape Ã = [φ(Z) | 1] is n×(w+1) (w its width); act 0 is tanh,
// 1 relu, and φ', φ'' are written in terms of a = φ(z): tanh' = 1 − a², tanh'' = −2a(1 − a²),
// relu' = 1[a > 0], relu'' = 0. A label that is not a class index < c (the problem validates
// labels when it is built, so only a caller bypassing it can pass one) makes that row's loss
// and δ NaN rather than reading out of bounds.
//
// Launch: block 256 threads, grid min(ceil(count/256), 4096), grid-stride loops (any grid is
// correct), except hg_mlp_bias_shift (one warp: grid 1, block 32). Traffic in f32 words.
//
// hg_mlp_activate(a, n, w, act)          in place over n×(w+1): a[p,k] = φ(a[p,k]) (k < w),
//     a[p,w] = 1. The GEMM wrote Z into the first w columns.               1 read 1 write
// hg_mlp_softmax_ce(zp, y, rows, n, c, losses)   one thread per position, in double: in place
//     zp[p,:] = softmax(z_p), losses[p] = logsumexp(z_p) − z_{p,y_i}.        2c reads c+1 writes
// hg_mlp_weighted_sum(v, s, rows, n, out)   out[0] += Σ_p s_i v_p (s null: 1), double, one
//     atomic a block.                                                       2 reads
// hg_mlp_output_delta(probs, y, rows, n, c, out)   out[p,k] = probs[p,k] − 1[k = y_i]
//                                                                          1 read 1 write
// hg_mlp_derivative_times(x, a, n, w, act, out)   out[p,k] = φ'(a[p,k])·x[p,k], x and out
//     n×w, a n×(w+1); in place when out = x (each entry read then written by one thread).
//                                                                          2 reads 1 write
// hg_mlp_scale_rows(x, s, rows, n, w, out)   out[p,k] = s_i·x[p,k]          2 reads 1 write
// hg_mlp_outer_rows(delta, fo, input, in_w, coef, n, dim, offset, out)
//     out[p·dim + offset + k·in_w + j] = (coef_p δ[p,k])·input[p,j] over (p, k, j) <
//     (n, fo, in_w) (coef null: 1): one layer's block of every per-sample gradient.
//     Writes n·fo·in_w; δ and the input rows are re-read from L1/L2.
// hg_mlp_directional(probs, y, rows, rz, n, c, out)   one thread per position, double:
//     out[p] = Σ_k (probs[p,k] − 1[k = y_i]) rz[p,k]                       2c reads, 1 double
// hg_mlp_softmax_r(probs, rz, n, c)   one thread per position, double, in place:
//     rz[p,k] = probs[p,k]·(rz[p,k] − Σ_l probs[p,l] rz[p,l])               2c reads c writes
// hg_mlp_backprop_r(rt, t, a, rz, n, w, act, out)   double: out[p,k] = rt[p,k] φ'(a[p,k])
//     + t[p,k] φ''(a[p,k]) rz[p,k]; rt, t, rz, out n×w, a n×(w+1); in place when out = rt.
//                                                                          4 reads 1 write
// hg_mlp_bias_shift(v, out, start, stride, c, shift)   one warp: with σ = Σ_k v[start + k·stride]
//     (double), out[start + k·stride] += shift·σ/c for k < c.

#include "common.cuh"

// ---- the activation and the labels ----------------------------------------------------------

__device__ __forceinline__ double hg_phi(int act, double z) {
    return act == 0 ? tanh(z) : fmax(z, 0.0);
}

// φ'(z) from a = φ(z).
__device__ __forceinline__ double hg_phi_d1(int act, double a) {
    return act == 0 ? 1.0 - a * a : (a > 0.0 ? 1.0 : 0.0);
}

// φ''(z) from a = φ(z).
__device__ __forceinline__ double hg_phi_d2(int act, double a) {
    return act == 0 ? -2.0 * a * (1.0 - a * a) : 0.0;
}

// The design row of position p.
__device__ __forceinline__ long long hg_mlp_row(const int* rows, long long p) {
    return rows ? (long long)rows[p] : p;
}

// The class of design row i, or −1 when its label is not a class index below c.
__device__ __forceinline__ int hg_mlp_class(const float* y, long long i, int c) {
    const float v = y[i];
    if (!(v >= 0.0f && v < (float)c)) {
        return -1;
    }
    return (int)v;  // labels are whole numbers: the CPU twin's `label as usize`
}

__device__ __forceinline__ float hg_nan() { return __int_as_float(0x7fc00000); }

// ---- forward --------------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_activate(float* a, int n, int w, int act) {
    const int stride = w + 1;
    const long long total = (long long)n * stride;
    for (long long e = hg_gtid(); e < total; e += hg_gstride()) {
        const long long k = e - hg_div(e, stride) * stride;
        a[e] = k == w ? 1.0f : (float)hg_phi(act, (double)a[e]);
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_softmax_ce(float* zp, const float* y, const int* rows, int n, int c, float* losses) {
    for (long long p = hg_gtid(); p < n; p += hg_gstride()) {
        float* const z = zp + p * c;
        double mx = (double)z[0];  // c ≥ 1
        for (int k = 1; k < c; ++k) {
            mx = fmax(mx, (double)z[k]);
        }
        double sum = 0.0;
        for (int k = 0; k < c; ++k) {
            sum += exp((double)z[k] - mx);
        }
        const int cls = hg_mlp_class(y, hg_mlp_row(rows, p), c);
        // logsumexp − z_y, read before z is overwritten.
        losses[p] = cls < 0 ? hg_nan() : (float)(mx + log(sum) - (double)z[cls]);
        for (int k = 0; k < c; ++k) {
            z[k] = (float)(exp((double)z[k] - mx) / sum);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_weighted_sum(const float* v, const float* s, const int* rows, int n, double* out) {
    double acc = 0.0;
    for (long long p = hg_gtid(); p < n; p += hg_gstride()) {
        const double sp = s ? (double)s[hg_mlp_row(rows, p)] : 1.0;
        acc += sp * (double)v[p];
    }
    acc = hg_block_sum_d(acc);
    if (threadIdx.x == 0) {
        atomicAdd(out, acc);
    }
}

// ---- backward -------------------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_output_delta(const float* probs, const float* y, const int* rows, int n, int c,
                    float* out) {
    const long long total = (long long)n * c;
    for (long long e = hg_gtid(); e < total; e += hg_gstride()) {
        const long long p = hg_div(e, c);
        const int k = (int)(e - p * c);
        const int cls = hg_mlp_class(y, hg_mlp_row(rows, p), c);
        out[e] = cls < 0 ? hg_nan() : (k == cls ? __fadd_rn(probs[e], -1.0f) : probs[e]);
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_derivative_times(const float* x, const float* a, int n, int w, int act, float* out) {
    const long long total = (long long)n * w;
    for (long long e = hg_gtid(); e < total; e += hg_gstride()) {
        const long long p = hg_div(e, w);
        const long long k = e - p * w;
        const float d1 = (float)hg_phi_d1(act, (double)a[p * (w + 1) + k]);
        out[e] = __fmul_rn(d1, x[e]);
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_scale_rows(const float* x, const float* s, const int* rows, int n, int w, float* out) {
    const long long total = (long long)n * w;
    for (long long e = hg_gtid(); e < total; e += hg_gstride()) {
        const long long p = hg_div(e, w);
        out[e] = __fmul_rn(x[e], s[hg_mlp_row(rows, p)]);
    }
}

// ---- per-sample quantities ------------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_outer_rows(const float* delta, int fo, const float* input, int in_w, const float* coef,
                  int n, int dim, int offset, float* out) {
    const long long block = (long long)fo * in_w;
    const long long total = (long long)n * block;
    for (long long e = hg_gtid(); e < total; e += hg_gstride()) {
        const long long p = e / block;
        const long long r = e - p * block;  // k·in_w + j
        const long long k = hg_div(r, in_w);
        const long long j = r - k * in_w;
        const float dk = coef ? __fmul_rn(coef[p], delta[p * fo + k]) : delta[p * fo + k];
        out[p * dim + offset + r] = __fmul_rn(dk, input[p * in_w + j]);
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_directional(const float* probs, const float* y, const int* rows, const float* rz, int n,
                   int c, double* out) {
    for (long long p = hg_gtid(); p < n; p += hg_gstride()) {
        const int cls = hg_mlp_class(y, hg_mlp_row(rows, p), c);
        double acc = cls < 0 ? (double)hg_nan() : 0.0;
        for (int k = 0; k < c; ++k) {
            const double g = (double)probs[p * c + k] - (k == cls ? 1.0 : 0.0);
            acc += g * (double)rz[p * c + k];
        }
        out[p] = acc;
    }
}

// ---- the R-operator's row steps -------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_softmax_r(const float* probs, float* rz, int n, int c) {
    for (long long p = hg_gtid(); p < n; p += hg_gstride()) {
        const float* const pr = probs + p * c;
        float* const r = rz + p * c;
        double mean = 0.0;
        for (int k = 0; k < c; ++k) {
            mean += (double)pr[k] * (double)r[k];
        }
        for (int k = 0; k < c; ++k) {
            r[k] = (float)((double)pr[k] * ((double)r[k] - mean));
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
hg_mlp_backprop_r(const float* rt, const float* t, const float* a, const float* rz, int n, int w,
                  int act, float* out) {
    const long long total = (long long)n * w;
    for (long long e = hg_gtid(); e < total; e += hg_gstride()) {
        const long long p = hg_div(e, w);
        const long long k = e - p * w;
        const double ak = (double)a[p * (w + 1) + k];
        out[e] = (float)((double)rt[e] * hg_phi_d1(act, ak) +
                         (double)t[e] * hg_phi_d2(act, ak) * (double)rz[e]);
    }
}

extern "C" __global__ void __launch_bounds__(32)
hg_mlp_bias_shift(const float* v, float* out, int start, int stride, int c, float shift) {
    const int lane = threadIdx.x & 31;
    double sum = 0.0;
    for (int k = lane; k < c; k += 32) {
        sum += (double)v[start + (long long)k * stride];
    }
    sum = hg_warp_sum_d(sum);  // every lane of the one warp calls it
    const float add = (float)((double)shift * sum / c);
    for (int k = lane; k < c; k += 32) {
        const long long e = start + (long long)k * stride;
        out[e] = __fadd_rn(out[e], add);
    }
}
