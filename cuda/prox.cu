// hypergrad CUDA kernels: the proximal-gradient step of the ℓ1 problems and its forward-mode
// Jacobian (SPEC §3, `forward` through ISTA/FISTA; src/l1/device.rs drives them).
//
// Compiled by nvcc (-ptx -arch=compute_90) at build time or by NVRTC at run time; the shared
// helpers come from common.cuh. Buffers are f32. CPU twins: src/backend/cpu_sparse.rs
// (`SparseOps for CpuBackend<T>`), which computes the same expressions in the same order.
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

#include "common.cuh"

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
