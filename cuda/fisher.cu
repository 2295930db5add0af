// hypergrad CUDA kernels of the Fisher family (FisherOps, src/backend/fisher/): K-FAC's
// factored damping and the diagonal helpers of the Woodbury update (its Cholesky solve is
// cuSOLVER's). The factors themselves come from the models' families: glm_batch.cu, mlp.cu.
//
// Compiled by nvcc (-ptx -arch=compute_90) at build time or by NVRTC at run time; the shared
// helpers come from common.cuh. Buffers are f32 row-major. Grid-stride loops everywhere.
// CPU twins: src/backend/fisher/cpu.rs (kfac_damp, set_diagonal, add_diagonal,
// woodbury_update).
//
// hg_add_diag(s, b, v)   s[i·b + i] += v, i < b. One block of 256. Traffic: 2b words.
// hg_set_diag(a, diag, p, mode)   a[i·p + i] = diag[i] (mode 0), 1/diag[i] (mode 1) or
//     a[i·p + i] + diag[i] (mode 2), i < p; the off-diagonal entries are not touched. Block 256, grid min(ceil(p/256), 4096).
//     Traffic: p reads + p writes.
// hg_kfac_damp(xx, d, gg, c, lambda)   K-FAC's factored Tikhonov damping, in place: with λ̄ the
//     mean of lambda (c entries), π = √(λ̄ (tr XX / d) / (tr GG / c)) (√λ̄ when either trace is
//     not positive), XX_jj += π and GG_kk += λ_k / π. Traces, π and the sums in double.
//     One block of 256 (block reduction of d + 2c values). Traffic: 2d + 3c words.
// hg_keep_failure(info, flag)   flag[0] = info[0] if flag[0] == 0 and info[0] != 0: a library
//     factorisation's status (cuSOLVER potrf writes 0 on success, so it cannot write the flag
//     itself without clearing an earlier failure), kept for the next synchronising call.
//     One thread.

#include "common.cuh"

// ---- small dense linear algebra -------------------------------------------------------------

extern "C" __global__ void __launch_bounds__(256) hg_add_diag(float* s, int b, float v) {
    for (long long i = hg_gtid(); i < b; i += hg_gstride()) {
        const long long at = i * b + i;
        s[at] = __fadd_rn(s[at], v);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    hg_set_diag(float* a, const float* diag, int p, int mode) {
    for (long long i = hg_gtid(); i < p; i += hg_gstride()) {
        const float v = diag[i];
        float* const aii = a + i * p + i;
        *aii = mode == 2 ? __fadd_rn(*aii, v) : (mode == 1 ? __frcp_rn(v) : v);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    hg_kfac_damp(float* xx, int d, float* gg, int c, const float* lambda) {
    __shared__ double hg_damp_partial[3][32];  // per warp: tr XX, tr GG, Σ λ
    __shared__ double hg_damp_pi;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    double tx = 0.0, tg = 0.0, tl = 0.0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        tx += (double)xx[(long long)j * d + j];
    }
    for (int k = threadIdx.x; k < c; k += blockDim.x) {
        tg += (double)gg[(long long)k * c + k];
        tl += (double)lambda[k];
    }
    tx = hg_warp_sum_d(tx);
    tg = hg_warp_sum_d(tg);
    tl = hg_warp_sum_d(tl);
    if (lane == 0) {
        hg_damp_partial[0][warp] = tx;
        hg_damp_partial[1][warp] = tg;
        hg_damp_partial[2][warp] = tl;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double sx = 0.0, sg = 0.0, sl = 0.0;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) {
            sx += hg_damp_partial[0][w];
            sg += hg_damp_partial[1][w];
            sl += hg_damp_partial[2][w];
        }
        const double mean_lambda = sl / c;
        const double tr_x = sx / d;
        const double tr_g = sg / c;
        hg_damp_pi = (tr_x > 0.0 && tr_g > 0.0) ? sqrt(mean_lambda * tr_x / tr_g) : sqrt(mean_lambda);
    }
    __syncthreads();
    const double pi = hg_damp_pi;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float* const xjj = xx + (long long)j * d + j;
        *xjj = (float)((double)*xjj + pi);
    }
    for (int k = threadIdx.x; k < c; k += blockDim.x) {
        float* const gkk = gg + (long long)k * c + k;
        *gkk = (float)((double)*gkk + (double)lambda[k] / pi);
    }
}

extern "C" __global__ void hg_keep_failure(const int* info, int* flag) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && flag[0] == 0 && info[0] != 0) {
        flag[0] = info[0];
    }
}
