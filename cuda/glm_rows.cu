// hypergrad CUDA kernels: the fused GLM row kernel.
//
// Compiled by nvcc (-ptx -arch=compute_90) at build time or by NVRTC at run time; the shared
// helpers come from common.cuh. bf16 designs are passed as their bit patterns (unsigned short)
// and widened exactly: f32 = bits << 16.
//
// Kernels: glm_rows_{f32,bf16}_k{1,2,4,8,16,32}, one template body, KMAX = the suffix (the
// largest k, the number of rows of M, it handles; the host picks the smallest KMAX ≥ k).
//
// For positions p < n_rows, design row i = rows ? rows[p] : p, x_i = x[i·d .. i·d+d):
//   phase 1  z_j = Σ_t M[j, t] x_i[t], j < k                (or z = z_in[p·k .. p·k+k))
//   phase 2  per-row transform of z (mode):
//     0 LOSS_GRAD  (k == c) g = ∇_z ℓ(z, y_i), s = row_weight_i (1 if null):
//                  u_j = s g_j; row_out[p·c+j] = g_j; *loss_out += Σ_p s ℓ(z, y_i) (double)
//     1 HVP        (k = n_vec·c) sc = row_scale_i; aux null: u_j = sc z_j; else, with
//                  π = aux[i·c ..) and b the vector block of j: u_j = sc π_l (z_j − Σ_l' π_l' z_{bc+l'})
//     2 CURVATURE  (k == c) row_out[p] = scale·s·{1, σ(yz)σ(−yz), 1} (squared, logistic,
//                  softmax); softmax: row_out2[p·c+j] = softmax(z)_j
//     3 FACTORS    (k == c) row_out[p·c+j] = g_j (unweighted)
//     4 PAIRING    (k == c) row_out[p] = Σ_j z_j aux[i·c+j]
//     (modes 2-4 produce u = 0.) u_out[p·k+j] = u_j when u_out is set.
//   phase 3  acc_out[j·d+t] += Σ_p u_{p,j} x_i[t]   (only if acc_out; never with z_in)
//   Losses: 0 squared ½(z−y)², 1 logistic log(1+e^{−yz}) (y = ±1), 2 softmax CE (y = class).
//   One-output losses (squared, logistic) do their per-row arithmetic in double, exactly as
//   the CPU twin; softmax is done in f32 (expf/logf, max-subtracted), its loss value in double.
//
// Launch: block = 256 threads = 8 warps (required); grid = min(ceil(n_rows/8), resident
// blocks a multiprocessor × SMs) (any grid is correct); dynamic shared memory = (k·d + 8·KMAX)·4 bytes with acc_out, else
// 8·KMAX·4 bytes. The block walks tiles of 8 consecutive positions (tile = blockIdx.x,
// += gridDim.x); warp w takes position tile·8 + w. Phase 1: lanes stride over t accumulating
// KMAX partial sums in registers (four features a load when d % 4 == 0 and X, M are aligned
// to that), then a warp reduce-scatter (31 shuffles for KMAX = 32, a
// plain butterfly for KMAX = 1) leaves z_j in lane j (lanes ≥ KMAX hold copies: lane l has
// j = l mod KMAX). Phase 2 runs lane-parallel over j (group max/sums are xor-shuffles within
// each aligned group of KMAX lanes). Lanes < KMAX store u into shared u_tile[j·8 + w];
// __syncthreads; phase 3: thread tid owns columns t = tid, tid+256, … and adds
// Σ_w u_tile[j·8+w] x_{i_w}[t] into the shared accumulator acc[j·d+t]; __syncthreads. The
// shared accumulator is zeroed at block start and flushed with one atomicAdd per element at
// block end; each warp's lane 0 atomically adds its loss sum (double) to loss_out[0].
//
// Memory traffic: X is read from DRAM once (n_rows·d·4 or ·2 bytes); phase 3 re-reads the
// tile's 8 rows, which were just read (L1/L2 hits). M (k·d·4 bytes) is read by every warp
// for every row, from L1/L2. Per position: O(c) label/weight/aux reads and O(c) writes.
// acc_out receives k·d atomics per block.
//
// Index widths: x offsets (i·d + t) and per-position outputs (p·k, p·c, i·c) use 64 bits;
// offsets into M, acc and acc_out use 32 bits (k·d < 2^31: M is at most k·d f32 values).
// CPU twin: src/backend/cpu.rs, glm_value_grad / glm_hvp / glm_curvature / glm_row_factors /
// glm_row_pairing / glm_sgd_step (row_loss_grad, softmax_into, sigmoid, softplus).

#include "common.cuh"

#define HG_THREADS 256
#define HG_TILE 8

// ---- helpers --------------------------------------------------------------------------------

__device__ __forceinline__ float hg_x(const float* x, long long e) { return __ldg(x + e); }

__device__ __forceinline__ float hg_x(const unsigned short* x, long long e) {
    return hg_bf16_to_f32(__ldg(x + e));
}

// Features 4·e4 .. 4·e4+3 of x in one load (16 bytes of f32, 8 of bf16); the caller checks
// the alignment.
__device__ __forceinline__ float4 hg_x4(const float* x, long long e4) {
    return __ldg(reinterpret_cast<const float4*>(x) + e4);
}

__device__ __forceinline__ float4 hg_x4(const unsigned short* x, long long e4) {
    const uint2 bits = __ldg(reinterpret_cast<const uint2*>(x) + e4);  // little-endian pairs
    float4 v;
    v.x = __uint_as_float(bits.x << 16);
    v.y = __uint_as_float(bits.x & 0xffff0000u);
    v.z = __uint_as_float(bits.y << 16);
    v.w = __uint_as_float(bits.y & 0xffff0000u);
    return v;
}

__device__ __forceinline__ float hg_neg_inf() { return __int_as_float(0xff800000); }

// log(1 + exp(t)) without overflow.
__device__ __forceinline__ double hg_softplus(double t) {
    return t > 0.0 ? t + log1p(exp(-t)) : log1p(exp(t));
}

// 1 / (1 + exp(-t)) without overflow.
__device__ __forceinline__ double hg_sigmoid(double t) {
    if (t >= 0.0) {
        return 1.0 / (1.0 + exp(-t));
    }
    const double e = exp(t);
    return e / (1.0 + e);
}

// Sum / max over the aligned group of KMAX lanes holding z_0 .. z_{KMAX-1} (every lane gets the
// result). All 32 lanes must call them.
template <int KMAX>
__device__ __forceinline__ float hg_group_sum(float v) {
#pragma unroll
    for (int o = KMAX / 2; o >= 1; o >>= 1) {
        v += __shfl_xor_sync(HG_FULL_MASK, v, o);
    }
    return v;
}

template <int KMAX>
__device__ __forceinline__ double hg_group_sum_d(double v) {
#pragma unroll
    for (int o = KMAX / 2; o >= 1; o >>= 1) {
        v += __shfl_xor_sync(HG_FULL_MASK, v, o);
    }
    return v;
}

template <int KMAX>
__device__ __forceinline__ float hg_group_max(float v) {
#pragma unroll
    for (int o = KMAX / 2; o >= 1; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(HG_FULL_MASK, v, o));
    }
    return v;
}

// Reduce-scatter step with xor offset O (a power of two < KMAX), then the smaller ones. Before
// the step, v[0 .. 2·O) are live; the lane keeps the half selected by its bit O and adds the
// partner's copy of that half. After all steps v[0] holds index lane & (KMAX-1).
template <int O, int KMAX>
struct HgScatter {
    static __device__ __forceinline__ void run(float (&v)[KMAX], int lane) {
        const bool upper = (lane & O) != 0;
#pragma unroll
        for (int h = 0; h < O; ++h) {
            const float send = upper ? v[h] : v[h + O];
            const float keep = upper ? v[h + O] : v[h];
            v[h] = keep + __shfl_xor_sync(HG_FULL_MASK, send, O);
        }
        HgScatter<O / 2, KMAX>::run(v, lane);
    }
};

template <int KMAX>
struct HgScatter<0, KMAX> {
    static __device__ __forceinline__ void run(float (&)[KMAX], int) {}
};

// Sums v[j] over the 32 lanes of the warp and returns, in lane l, the total for
// j = l & (KMAX-1). All 32 lanes must call it.
template <int KMAX>
__device__ __forceinline__ float hg_reduce_scatter(float (&v)[KMAX], int lane) {
    // Lane bits ≥ log2(KMAX): a plain butterfly on every entry.
#pragma unroll
    for (int o = 16; o >= KMAX; o >>= 1) {
#pragma unroll
        for (int j = 0; j < KMAX; ++j) {
            v[j] += __shfl_xor_sync(HG_FULL_MASK, v[j], o);
        }
    }
    // Lane bits < log2(KMAX): halve the live entries at each step.
    HgScatter<KMAX / 2, KMAX>::run(v, lane);
    return v[0];
}

// g_j = ∇_z ℓ(z, y)_j for this lane's j (0 for lanes with no real j) and the row's loss ℓ
// (valid in every lane whose j is 0, in particular lane 0). All 32 lanes must call it.
template <int KMAX>
__device__ __forceinline__ void hg_loss_grad(int loss, float zj, float yi, int j, bool j_real,
                                             double& g, double& ell) {
    if (loss == 2) {
        const float mx = hg_group_max<KMAX>(j_real ? zj : hg_neg_inf());
        const float e = j_real ? expf(zj - mx) : 0.0f;
        const float sum = hg_group_sum<KMAX>(e);
        const int yc = (int)yi;
        const float zy = __shfl_sync(HG_FULL_MASK, zj, yc);  // lane yc < k holds z_yc
        const float pj = e / sum;
        g = j_real ? (double)(j == yc ? pj - 1.0f : pj) : 0.0;
        ell = ((double)mx - (double)zy) + log((double)sum);
    } else if (loss == 1) {
        const double yd = (double)yi;
        const double mm = yd * (double)zj;
        g = j_real ? -yd * hg_sigmoid(-mm) : 0.0;
        ell = hg_softplus(-mm);
    } else {
        const double r = (double)zj - (double)yi;
        g = j_real ? r : 0.0;
        ell = 0.5 * r * r;
    }
}

// ---- the row kernel -------------------------------------------------------------------------

extern __shared__ float4 hg_glm_smem[];

template <int KMAX, typename XT>
__device__ __forceinline__ void hg_glm_rows(
    const XT* x, const int* rows, int n_rows, int d, const float* m, int k, int c, int mode,
    int loss, float scale, const float* y, const float* row_weight, const float* row_scale,
    const float* aux, const float* z_in, float* u_out, float* acc_out, float* row_out,
    float* row_out2, double* loss_out) {
    float* const u_tile = reinterpret_cast<float*>(hg_glm_smem);  // [KMAX][8]: u_tile[j*8 + w]
    float* const acc = u_tile + HG_TILE * KMAX;                   // [k][d], only with acc_out
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int warp = tid >> 5;
    const int jl = lane & (KMAX - 1);              // this lane's output index j
    const bool j_real = jl < k;                    // j is one of the k outputs
    const bool j_writer = j_real && lane < KMAX;   // the one lane that writes output j
    const bool do_acc = acc_out != 0 && z_in == 0;  // uniform over the block
    const int kd = k * d;
    // Phase 1 reads X and M four features at a time (a quarter of the load instructions, four
    // times the bytes in flight a load) when every row and M start on such a boundary.
    const bool vec4 = (d & 3) == 0 && m != 0 &&
                      (reinterpret_cast<unsigned long long>(x) & (4 * sizeof(XT) - 1)) == 0 &&
                      (reinterpret_cast<unsigned long long>(m) & 15) == 0;

    if (do_acc) {
        for (int e = tid; e < kd; e += HG_THREADS) {
            acc[e] = 0.0f;
        }
        __syncthreads();
    }
    double loss_sum = 0.0;  // used in lane 0 of each warp

    // The loop bound depends on the block only: every thread runs every iteration.
    for (long long tile = blockIdx.x; tile * HG_TILE < n_rows; tile += gridDim.x) {
        const long long p = tile * HG_TILE + warp;
        const bool active = p < n_rows;  // uniform over the warp
        long long i = 0;
        if (active) {
            i = rows ? (long long)rows[p] : p;
        }

        // ---- phase 1: z ----
        float zj = 0.0f;
        if (z_in) {
            if (active && j_real) {
                zj = z_in[p * k + jl];
            }
        } else {
            float part[KMAX];
#pragma unroll
            for (int j = 0; j < KMAX; ++j) {
                part[j] = 0.0f;
            }
            if (active && vec4) {
                const int d4 = d >> 2;
                const long long row4 = (i * d) >> 2;
                const float4* m4 = reinterpret_cast<const float4*>(m);
                // Unrolled only for one output: with more, the KMAX float4 loads of M already
                // fill the registers (an unrolled k = 4 needs 126 and loses a block per SM).
#pragma unroll(KMAX == 1 ? 4 : 1)
                for (int t4 = lane; t4 < d4; t4 += 32) {
                    const float4 xv = hg_x4(x, row4 + t4);
#pragma unroll
                    for (int j = 0; j < KMAX; ++j) {
                        if (j < k) {
                            const float4 mv = __ldg(m4 + j * d4 + t4);
                            float a = fmaf(mv.x, xv.x, part[j]);
                            a = fmaf(mv.y, xv.y, a);
                            a = fmaf(mv.z, xv.z, a);
                            part[j] = fmaf(mv.w, xv.w, a);
                        }
                    }
                }
            } else if (active) {
                const XT* xr = x + i * d;
                for (int t = lane; t < d; t += 32) {
                    const float xv = hg_x(xr, t);
#pragma unroll
                    for (int j = 0; j < KMAX; ++j) {
                        if (j < k) {
                            part[j] = fmaf(__ldg(m + j * d + t), xv, part[j]);
                        }
                    }
                }
            }
            zj = hg_reduce_scatter<KMAX>(part, lane);  // all 32 lanes, active or not
        }

        // ---- phase 2: the transform, lane-parallel over j ----
        float u = 0.0f;
        if (active) {  // warp-uniform: the shuffles below run on all 32 lanes
            if (mode == 0 || mode == 3) {
                double g, ell;
                hg_loss_grad<KMAX>(loss, zj, y[i], jl, j_real, g, ell);
                if (mode == 0) {
                    const float s = row_weight ? row_weight[i] : 1.0f;
                    u = (float)((double)s * g);
                    if (lane == 0) {
                        loss_sum += (double)s * ell;
                    }
                }
                if (row_out && j_writer) {
                    row_out[p * c + jl] = (float)g;
                }
            } else if (mode == 1) {
                const double sc = (double)row_scale[i];
                if (aux == 0) {
                    u = j_real ? (float)(sc * (double)zj) : 0.0f;
                } else {
                    const int b = jl / c;      // vector block of j
                    const int l = jl - b * c;  // class of j
                    const double pl = j_real ? (double)aux[i * c + l] : 0.0;
                    const double q = pl * (double)zj;
                    const int first = (lane & ~(KMAX - 1)) + b * c;  // lane of z_{bc}
                    double pu = 0.0;
                    for (int l2 = 0; l2 < c; ++l2) {  // c is uniform: all lanes shuffle
                        pu += __shfl_sync(HG_FULL_MASK, q, first + l2);
                    }
                    u = j_real ? (float)(sc * pl * ((double)zj - pu)) : 0.0f;
                }
            } else if (mode == 2) {
                const float s = row_weight ? row_weight[i] : 1.0f;
                const double w = (double)scale * (double)s;
                if (loss == 2) {
                    const float mx = hg_group_max<KMAX>(j_real ? zj : hg_neg_inf());
                    const float e = j_real ? expf(zj - mx) : 0.0f;
                    const float sum = hg_group_sum<KMAX>(e);
                    if (row_out2 && j_writer) {
                        row_out2[p * c + jl] = e / sum;
                    }
                    if (row_out && lane == 0) {
                        row_out[p] = (float)w;
                    }
                } else {
                    double curv = 1.0;
                    if (loss == 1) {
                        const double mm = (double)y[i] * (double)zj;
                        curv = hg_sigmoid(mm) * hg_sigmoid(-mm);
                    }
                    if (row_out && lane == 0) {
                        row_out[p] = (float)(w * curv);
                    }
                }
            } else if (mode == 4) {
                double q = j_real ? (double)zj * (double)aux[i * c + jl] : 0.0;
                q = hg_group_sum_d<KMAX>(q);
                if (row_out && lane == 0) {
                    row_out[p] = (float)q;
                }
            }
            if (u_out && j_writer) {
                u_out[p * k + jl] = u;
            }
        }

        // ---- phase 3: acc += uᵀ X_tile ----
        if (do_acc) {  // uniform over the block
            if (lane < KMAX) {
                u_tile[jl * HG_TILE + warp] = u;  // 0 for an absent position
            }
            __syncthreads();
            const long long p0 = tile * HG_TILE;
            const int nvalid = (n_rows - p0) < HG_TILE ? (int)(n_rows - p0) : HG_TILE;
            long long off[HG_TILE];
#pragma unroll
            for (int w = 0; w < HG_TILE; ++w) {
                const long long pw = p0 + w;
                off[w] = (w < nvalid) ? (rows ? (long long)rows[pw] : pw) * d : 0;
            }
            const float4* u4 = reinterpret_cast<const float4*>(u_tile);
            for (int t = tid; t < d; t += HG_THREADS) {
                float xv[HG_TILE];
#pragma unroll
                for (int w = 0; w < HG_TILE; ++w) {
                    xv[w] = (w < nvalid) ? hg_x(x, off[w] + t) : 0.0f;
                }
#pragma unroll 4
                for (int j = 0; j < k; ++j) {
                    const float4 ua = u4[2 * j];
                    const float4 ub = u4[2 * j + 1];
                    float a = acc[j * d + t];
                    a = fmaf(ua.x, xv[0], a);
                    a = fmaf(ua.y, xv[1], a);
                    a = fmaf(ua.z, xv[2], a);
                    a = fmaf(ua.w, xv[3], a);
                    a = fmaf(ub.x, xv[4], a);
                    a = fmaf(ub.y, xv[5], a);
                    a = fmaf(ub.z, xv[6], a);
                    a = fmaf(ub.w, xv[7], a);
                    acc[j * d + t] = a;
                }
            }
            __syncthreads();  // u_tile and acc are free for the next tile / the flush
        }
    }

    // ---- flush ----
    if (do_acc && (long long)blockIdx.x * HG_TILE < n_rows) {  // blocks that did no tile skip
        for (int e = tid; e < kd; e += HG_THREADS) {
            atomicAdd(acc_out + e, acc[e]);
        }
    }
    if (loss_out && mode == 0 && lane == 0 && loss_sum != 0.0) {
        atomicAdd(loss_out, loss_sum);
    }
}

#define HG_GLM_ROWS_ENTRY(NAME, KMAX, XT)                                                       \
    extern "C" __global__ void __launch_bounds__(HG_THREADS, 2) NAME(                          \
        const XT* x, const int* rows, int n_rows, int d, const float* m, int k, int c,         \
        int mode, int loss, float scale, const float* y, const float* row_weight,              \
        const float* row_scale, const float* aux, const float* z_in, float* u_out,             \
        float* acc_out, float* row_out, float* row_out2, double* loss_out) {                   \
        hg_glm_rows<KMAX, XT>(x, rows, n_rows, d, m, k, c, mode, loss, scale, y, row_weight,   \
                              row_scale, aux, z_in, u_out, acc_out, row_out, row_out2,         \
                              loss_out);                                                       \
    }

HG_GLM_ROWS_ENTRY(glm_rows_f32_k1, 1, float)
HG_GLM_ROWS_ENTRY(glm_rows_f32_k2, 2, float)
HG_GLM_ROWS_ENTRY(glm_rows_f32_k4, 4, float)
HG_GLM_ROWS_ENTRY(glm_rows_f32_k8, 8, float)
HG_GLM_ROWS_ENTRY(glm_rows_f32_k16, 16, float)
HG_GLM_ROWS_ENTRY(glm_rows_f32_k32, 32, float)
HG_GLM_ROWS_ENTRY(glm_rows_bf16_k1, 1, unsigned short)
HG_GLM_ROWS_ENTRY(glm_rows_bf16_k2, 2, unsigned short)
HG_GLM_ROWS_ENTRY(glm_rows_bf16_k4, 4, unsigned short)
HG_GLM_ROWS_ENTRY(glm_rows_bf16_k8, 8, unsigned short)
HG_GLM_ROWS_ENTRY(glm_rows_bf16_k16, 16, unsigned short)
HG_GLM_ROWS_ENTRY(glm_rows_bf16_k32, 32, unsigned short)
