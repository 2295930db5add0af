// CPU emulation test of the CUDA kernels in cuda/*.cu: each kernel runs unchanged on the CPU
// (shim.h: one std::thread per CUDA thread, a barrier for __syncthreads, emulated warp
// shuffles) and is compared with a double-precision reference written from the CPU backend
// (src/backend/cpu.rs). It checks index arithmetic, barriers, shuffles and the math of every
// kernel where no GPU is available; it cannot see memory-model races or timing.
// Driven by tests/kernel_emulation.rs, which copies the kernels with their dynamic shared
// memory declared as large static arrays (emu_*.cu) and compiles this file with g++ -std=c++20.
// Argument "quick" runs a subset of the kernel widths (the cargo test); no argument runs all.
#include "shim.h"
#include <random>
#include <string>
namespace kb { 
#include "emu_blas1.cu"
}
namespace kg {
#include "emu_glm_rows.cu"
}
namespace kf {
#include "emu_fisher.cu"
}
namespace kgb {
#include "emu_glm_batch.cu"
}
namespace km {
#include "emu_mlp.cu"
}
namespace kr {
#include "emu_rows.cu"
}
namespace kp {
#include "emu_prox.cu"
}
static std::mt19937_64 rng(12345);
static double unif(double a = -1, double b = 1) { return std::uniform_real_distribution<double>(a, b)(rng); }
static int fails = 0, checks = 0;
static void expect(bool ok, const char* what, double a = 0, double b = 0) {
    ++checks;
    if (!ok) { ++fails; if (fails < 40) printf("FAIL %s: got %.9g want %.9g\n", what, a, b); }
}
static void close(double got, double want, double tol, const char* what) {
    expect(std::fabs(got - want) <= tol * (1.0 + std::fabs(want)) || (std::isnan(got) && std::isnan(want)), what, got, want);
}
static std::vector<float> randv(size_t n, double a = -1, double b = 1) { std::vector<float> v(n); for (auto& x : v) x = (float)unif(a, b); return v; }
static unsigned short to_bf16(float f) { unsigned u; memcpy(&u, &f, 4); return (unsigned short)(u >> 16); }
static float from_bf16(unsigned short h) { unsigned u = (unsigned)h << 16; float f; memcpy(&f, &u, 4); return f; }
static dim3 g1(unsigned x, unsigned y = 1) { return dim3{x, y, 1}; }

static void test_blas1() {
    const int n = 1000;
    for (unsigned grid : {1u, 3u}) {
        auto x = randv(n), y = randv(n), y0 = y;
        launch(g1(grid), g1(256), [&] { kb::hg_fill(y.data(), n, 2.5f); });
        for (int i = 0; i < n; ++i) expect(y[i] == 2.5f, "fill");
        y = y0; launch(g1(grid), g1(256), [&] { kb::hg_scal(y.data(), n, 0.7f); });
        for (int i = 0; i < n; ++i) expect(y[i] == 0.7f * y0[i], "scal");
        for (float b : {1.0f, 0.3f, 0.0f}) {
            y = y0; launch(g1(grid), g1(256), [&] { kb::hg_axpby(x.data(), y.data(), n, -1.3f, b); });
            for (int i = 0; i < n; ++i) {
                float want = (b == 1.0f) ? y0[i] + (-1.3f) * x[i] : (-1.3f) * x[i] + b * y0[i];
                expect(y[i] == want, "axpby bit-exact", y[i], want);
            }
        }
        auto a = randv(100);
        y = y0; launch(g1(grid), g1(256), [&] { kb::hg_mul_add(a.data(), 100, x.data(), y.data(), n, 0.9f); });
        for (int i = 0; i < n; ++i) expect(y[i] == y0[i] + 0.9f * a[i % 100] * x[i], "mul_add bit-exact");
        // Adam, three steps from zero moments, against the textbook bias-corrected update in
        // double (lr 1e-2, β = (0.9, 0.999), ε = 1e-8; the coefficients folded as
        // AdamCoefficients::at folds them).
        {
            auto w = randv(n), g = randv(n), wf = w;
            std::vector<float> m(n, 0.f), v(n, 0.f);
            std::vector<double> wd(w.begin(), w.end()), md(n, 0.0), vd(n, 0.0);
            const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8;
            for (int t = 1; t <= 3; ++t) {
                const double root = std::sqrt(1 - std::pow(b2, t));
                const float s = (float)(lr * root / (1 - std::pow(b1, t))), e = (float)(eps * root);
                launch(g1(grid), g1(256), [&] { kb::hg_adam_apply(w.data(), g.data(), m.data(), v.data(), n, 0.9f, 0.999f, s, e); });
                for (int i = 0; i < n; ++i) {
                    md[i] = b1 * md[i] + (1 - b1) * g[i];
                    vd[i] = b2 * vd[i] + (1 - b2) * (double)g[i] * g[i];
                    const double mh = md[i] / (1 - std::pow(b1, t)), vh = vd[i] / (1 - std::pow(b2, t));
                    wd[i] -= lr * mh / (std::sqrt(vh) + eps);
                }
            }
            for (int i = 0; i < n; ++i) close(w[i], wd[i], 1e-6, "adam_apply");
            for (int i = 0; i < n; ++i) close(m[i], md[i], 1e-6, "adam_apply first moment");
            for (int i = 0; i < n; ++i) close(v[i], vd[i], 1e-6, "adam_apply second moment");
            // Three steps of one sign move each entry by close to 3 lr against it.
            for (int i = 0; i < n; ++i) close(std::fabs(wf[i] - w[i]), 3 * lr, 1e-3, "adam_apply step size");
        }
        double out = 0; launch(g1(grid), g1(256), [&] { kb::hg_dot(x.data(), y0.data(), n, &out); });
        double want = 0; for (int i = 0; i < n; ++i) want += (double)x[i] * y0[i];
        close(out, want, 1e-12, "dot");
        const int m = 3, len = 333;
        std::vector<double> bo(m, 0.0);
        launch(g1(grid, m), g1(256), [&] { kb::hg_batched_dot(x.data(), y0.data(), len, m, bo.data()); });
        for (int b = 0; b < m; ++b) { double w = 0; for (int e = 0; e < len; ++e) w += (double)x[b * len + e] * y0[e]; close(bo[b], w, 1e-12, "batched_dot"); }
        // groups
        const int L = 777;
        for (int mode = 0; mode < 3; ++mode) for (int blk : {1, 3, 7, 32, 40, 100, 1000}) {
            if (mode != 2 && blk != 7) continue;
            auto gof = [&](int e) { return mode == 0 ? 0 : mode == 1 ? e : e / blk; };
            int cnt = mode == 0 ? 1 : mode == 1 ? L : (L + blk - 1) / blk;
            std::vector<double> go(cnt, 0.0), gw(cnt, 0.0);
            launch(g1(grid), g1(256), [&] { kb::hg_group_dot(x.data(), y0.data(), L, mode, blk, go.data()); });
            for (int e = 0; e < L; ++e) gw[gof(e)] += (double)x[e] * y0[e];
            for (int g = 0; g < cnt; ++g) close(go[g], gw[g], 1e-12, "group_dot");
            auto vals = randv(cnt);
            std::vector<float> ex(L, -9.f);
            launch(g1(grid), g1(256), [&] { kb::hg_group_expand(vals.data(), L, mode, blk, ex.data()); });
            for (int e = 0; e < L; ++e) expect(ex[e] == vals[gof(e)], "group_expand");
            if (mode == 1) continue;  // batch would be L*L; tested below with small len
            std::vector<float> batch = randv((size_t)cnt * L), b0 = batch;
            launch(g1(grid), g1(256), [&] { kb::hg_group_scatter_add(vals.data(), x.data(), L, mode, blk, batch.data()); });
            for (int g = 0; g < cnt; ++g) for (int e = 0; e < L; ++e) {
                float w = b0[(size_t)g * L + e]; if (gof(e) == g) w = w + vals[g] * x[e];
                expect(batch[(size_t)g * L + e] == w, "group_scatter_add");
            }
        }
        { // mode 1 scatter with small len
            const int l2 = 40; auto vals = randv(l2); std::vector<float> batch = randv(l2 * l2), b0 = batch;
            launch(g1(grid), g1(256), [&] { kb::hg_group_scatter_add(vals.data(), x.data(), l2, 1, 0, batch.data()); });
            for (int g = 0; g < l2; ++g) for (int e = 0; e < l2; ++e) {
                float w = b0[g * l2 + e]; if (g == e) w = w + vals[g] * x[e];
                expect(batch[g * l2 + e] == w, "group_scatter_add each");
            }
        }
        // add_row_outer
        const int rn = 7, rd = 13, rc = 3;
        auto xr = randv(rn * rd), coef = randv(rn), gr = randv(rn * rc);
        std::vector<unsigned short> xb(rn * rd); for (int e = 0; e < rn * rd; ++e) xb[e] = to_bf16(xr[e]);
        for (int bf = 0; bf < 2; ++bf) {
            auto batch = randv(rn * rc * rd), b0 = batch;
            if (bf) launch(g1(grid), g1(256), [&] { kgb::hg_add_row_outer_bf16(xb.data(), rn, rd, coef.data(), gr.data(), rc, batch.data()); });
            else launch(g1(grid), g1(256), [&] { kgb::hg_add_row_outer_f32(xr.data(), rn, rd, coef.data(), gr.data(), rc, batch.data()); });
            for (int i = 0; i < rn; ++i) for (int k = 0; k < rc; ++k) for (int t = 0; t < rd; ++t) {
                size_t at = ((size_t)i * rc + k) * rd + t;
                float xv = bf ? from_bf16(xb[i * rd + t]) : xr[i * rd + t];
                float w = b0[at] + (coef[i] * gr[i * rc + k]) * xv;
                expect(batch[at] == w, "add_row_outer");
            }
        }
        auto w = randv(n), g = randv(n), reg = randv(n, 0, 1), w0 = w;
        launch(g1(grid), g1(256), [&] { kgb::hg_sgd_apply(w.data(), g.data(), reg.data(), n, 0.1f, 0.25f); });
        for (int e = 0; e < n; ++e) expect(w[e] == w0[e] - 0.1f * (0.25f * g[e] + reg[e] * w0[e]), "sgd_apply bit-exact");
    }
}

// ---- glm rows ----
static double sigm(double t) { return t >= 0 ? 1 / (1 + exp(-t)) : exp(t) / (1 + exp(t)); }
static double splus(double t) { return t > 0 ? t + log1p(exp(-t)) : log1p(exp(t)); }

template <int KMAX, class XT>
static void run_glm(int n_total, int n_rows, int d, int k, int c, int mode, int loss, bool use_rows,
                    bool use_w, bool use_zin, bool use_acc, unsigned grid) {
    // data
    std::vector<float> xf = randv((size_t)n_total * d);
    std::vector<XT> x(xf.size());
    for (size_t e = 0; e < xf.size(); ++e) {
        if constexpr (sizeof(XT) == 2) { x[e] = to_bf16(xf[e]); xf[e] = from_bf16(x[e]); } else x[e] = xf[e];
    }
    std::vector<int> rows(n_rows);
    for (int p = 0; p < n_rows; ++p) rows[p] = use_rows ? (int)(rng() % n_total) : p;
    auto m = randv((size_t)k * d, -0.5, 0.5);
    std::vector<float> y(n_total);
    for (auto& v : y) v = loss == 0 ? (float)unif() : loss == 1 ? (rng() % 2 ? 1.f : -1.f) : (float)(rng() % c);
    auto rw = randv(n_total, 0.1, 2.0), rsc = randv(n_total, 0.1, 2.0);
    std::vector<float> aux;
    bool use_aux = (mode == 1 && c > 1) || mode == 4;
    if (mode == 1 && c > 1) { // probabilities
        aux.resize((size_t)n_total * c);
        for (int i = 0; i < n_total; ++i) { double s = 0; for (int l = 0; l < c; ++l) { aux[i * c + l] = (float)unif(0.05, 1); s += aux[i * c + l]; } for (int l = 0; l < c; ++l) aux[i * c + l] /= (float)s; }
    } else if (mode == 4) aux = randv((size_t)n_total * c);
    // reference
    std::vector<double> z((size_t)n_rows * k), u((size_t)n_rows * k, 0.0), ro((size_t)n_rows * c, 0.0), ro2((size_t)n_rows * c, 0.0), acc((size_t)k * d, 0.0);
    double lsum = 0;
    for (int p = 0; p < n_rows; ++p) {
        int i = rows[p];
        for (int j = 0; j < k; ++j) { double s = 0; for (int t = 0; t < d; ++t) s += (double)m[j * d + t] * xf[(size_t)i * d + t]; z[p * k + j] = s; }
        double* zp = &z[p * k];
        double s = use_w ? rw[i] : 1.0;
        std::vector<double> g(c), pr(c);
        double ell = 0;
        if (mode == 0 || mode == 3 || mode == 2) {
            if (loss == 0) { g[0] = zp[0] - y[i]; ell = 0.5 * g[0] * g[0]; }
            else if (loss == 1) { double mm = y[i] * zp[0]; g[0] = -y[i] * sigm(-mm); ell = splus(-mm); }
            else { double mx = -1e300; for (int l = 0; l < c; ++l) mx = std::max(mx, zp[l]); double su = 0; for (int l = 0; l < c; ++l) { pr[l] = exp(zp[l] - mx); su += pr[l]; } for (int l = 0; l < c; ++l) { pr[l] /= su; g[l] = pr[l]; } int yc = (int)y[i]; g[yc] -= 1; ell = mx + log(su) - zp[yc]; }
        }
        if (mode == 0) { for (int j = 0; j < k; ++j) { u[p * k + j] = s * g[j]; ro[p * c + j] = g[j]; } lsum += s * ell; }
        if (mode == 3) for (int j = 0; j < k; ++j) ro[p * c + j] = g[j];
        if (mode == 1) {
            double sc = rsc[i];
            if (!use_aux) for (int j = 0; j < k; ++j) u[p * k + j] = sc * zp[j];
            else for (int b = 0; b < k / c; ++b) { double pu = 0; for (int l = 0; l < c; ++l) pu += aux[i * c + l] * zp[b * c + l]; for (int l = 0; l < c; ++l) u[p * k + b * c + l] = sc * aux[i * c + l] * (zp[b * c + l] - pu); }
        }
        if (mode == 2) {
            double w = 0.75 * s;
            if (loss == 1) { double mm = y[i] * zp[0]; w *= sigm(mm) * sigm(-mm); }
            ro[p * c] = w;
            if (loss == 2) for (int l = 0; l < c; ++l) ro2[p * c + l] = pr[l];
        }
        if (mode == 4) { double q = 0; for (int j = 0; j < k; ++j) q += zp[j] * aux[i * c + j]; ro[p * c] = q; }
        for (int j = 0; j < k; ++j) for (int t = 0; t < d; ++t) acc[j * d + t] += u[p * k + j] * xf[(size_t)i * d + t];
    }
    // device run
    std::vector<float> zin(z.size()); for (size_t e = 0; e < z.size(); ++e) zin[e] = (float)z[e];
    std::vector<float> u_out((size_t)n_rows * k, -7.f), acc_out((size_t)k * d, 0.5f), row_out((size_t)n_rows * c, -7.f), row_out2((size_t)n_rows * c, -7.f);
    double loss_out = 0.25;
    bool want_acc = use_acc && !use_zin;
    launch(g1(grid), g1(256), [&] {
        kg::hg_glm_rows<KMAX, XT>(use_zin ? nullptr : x.data(), use_rows ? rows.data() : nullptr, n_rows, d, use_zin ? nullptr : m.data(), k, c, mode, loss, 0.75f, y.data(),
            use_w ? rw.data() : nullptr, rsc.data(), use_aux ? aux.data() : nullptr, use_zin ? zin.data() : nullptr,
            u_out.data(), want_acc ? acc_out.data() : nullptr, row_out.data(), row_out2.data(), mode == 0 ? &loss_out : nullptr);
    });
    char what[200];
    snprintf(what, sizeof what, "glm KMAX=%d bf16=%d n=%d d=%d k=%d c=%d mode=%d loss=%d rows=%d w=%d zin=%d acc=%d grid=%u", KMAX, (int)(sizeof(XT) == 2), n_rows, d, k, c, mode, loss, use_rows, use_w, use_zin, use_acc, grid);
    const double tol = 2e-5;
    double umax = 1e-30; for (double v : u) umax = std::max(umax, std::fabs(v));
    for (size_t e = 0; e < u.size(); ++e) { double want = (mode >= 2) ? 0.0 : u[e]; if (!(std::fabs(u_out[e] - want) <= tol * (1 + umax))) { expect(false, what, u_out[e], want); break; } ++checks; }
    if (want_acc) { double amax = 1e-30; for (double v : acc) amax = std::max(amax, std::fabs(v));
        for (size_t e = 0; e < acc.size(); ++e) { double want = 0.5 + acc[e]; if (!(std::fabs(acc_out[e] - want) <= tol * (1 + amax))) { expect(false, what, acc_out[e], want); break; } ++checks; } }
    else for (size_t e = 0; e < acc_out.size(); ++e) if (acc_out[e] != 0.5f) { expect(false, what, acc_out[e], 0.5); break; }
    if (mode == 0 || mode == 3) for (int p = 0; p < n_rows; ++p) for (int j = 0; j < c; ++j) close(row_out[p * c + j], ro[p * c + j], tol, what);
    if (mode == 2 || mode == 4) { for (int p = 0; p < n_rows; ++p) close(row_out[p], ro[p * c], tol, what); for (size_t e = n_rows; e < row_out.size(); ++e) expect(row_out[e] == -7.f, what); }
    if (mode == 2 && loss == 2) for (int p = 0; p < n_rows; ++p) for (int j = 0; j < c; ++j) close(row_out2[p * c + j], ro2[p * c + j], tol, what);
    else for (float v : row_out2) expect(v == -7.f, what);
    if (mode == 0) close(loss_out, 0.25 + lsum, 1e-6, what);
}

template <int KMAX, class XT>
static void glm_suite() {
    const int ks[] = {KMAX, KMAX / 2 + 1};
    for (int kk : ks) {
        if (kk > KMAX) continue;
        for (int d : {1, 37, 300, 64}) for (int nr : {1, 13, 50}) {
            unsigned grid = 1 + (rng() % 4);
            bool rows = rng() % 2, w = rng() % 2, zin = (rng() % 4) == 0;
            int n_total = nr + 5;
            // mode 0 / 3 / 2 with softmax (c = kk), single-output losses when kk == 1
            for (int mode : {0, 2, 3}) {
                if (kk == 1) { for (int loss : {0, 1}) run_glm<KMAX, XT>(n_total, nr, d, 1, 1, mode, loss, rows, w, zin, true, grid); }
                if (kk >= 2) run_glm<KMAX, XT>(n_total, nr, d, kk, kk, mode, 2, rows, w, zin, true, grid);
            }
            // HVP: aux null with k = kk; with aux: c divides k
            run_glm<KMAX, XT>(n_total, nr, d, kk, 1, 1, 0, rows, w, zin, true, grid);
            for (int c = 2; c <= kk; ++c) if (kk % c == 0 && (c == 2 || c == kk || c == 3 || c == 5)) run_glm<KMAX, XT>(n_total, nr, d, kk, c, 1, 2, rows, w, zin, true, grid);
            run_glm<KMAX, XT>(n_total, nr, d, kk, kk, 4, 2, rows, w, zin, false, grid);
        }
    }
    printf("glm suite KMAX=%d bf16=%d done: %d checks, %d fails\n", KMAX, (int)(sizeof(XT) == 2), checks, fails);
}

static void test_fisher() {
    const int b = 5, d = 11, c = 3, n = 9;
    auto x = randv(n * d), g = randv(b * c), sc = randv(b);
    std::vector<unsigned short> xb(n * d); for (int e = 0; e < n * d; ++e) xb[e] = to_bf16(x[e]);
    std::vector<int> rows = {3, 0, 8, 3, 5};
    for (int bf = 0; bf < 2; ++bf) for (int s = 0; s < 2; ++s) for (unsigned grid : {1u, 2u}) {
        std::vector<float> out(b * c * d, -1.f);
        if (bf) launch(g1(grid), g1(256), [&] { kgb::hg_per_sample_grads_bf16(xb.data(), rows.data(), b, d, g.data(), c, s ? sc.data() : nullptr, out.data()); });
        else launch(g1(grid), g1(256), [&] { kgb::hg_per_sample_grads_f32(x.data(), rows.data(), b, d, g.data(), c, s ? sc.data() : nullptr, out.data()); });
        for (int p = 0; p < b; ++p) for (int k = 0; k < c; ++k) for (int t = 0; t < d; ++t) {
            float xv = bf ? from_bf16(xb[rows[p] * d + t]) : x[rows[p] * d + t];
            float a = s ? sc[p] * g[p * c + k] : g[p * c + k];
            expect(out[p * c * d + k * d + t] == a * xv, "per_sample_grads");
        }
        std::vector<float> ga(b * d, -1.f);
        if (bf) launch(g1(grid), g1(256), [&] { kb::hg_gather_rows_bf16(xb.data(), rows.data(), b, d, ga.data()); });
        else launch(g1(grid), g1(256), [&] { kb::hg_gather_rows_f32(x.data(), rows.data(), b, d, ga.data()); });
        for (int p = 0; p < b; ++p) for (int t = 0; t < d; ++t) expect(ga[p * d + t] == (bf ? from_bf16(xb[rows[p] * d + t]) : x[rows[p] * d + t]), "gather");
    }
    // set_diag: the diagonal only, set (0), set inverted (1) or added to (2)
    for (int pp : {1, 7, 300}) for (int mode : {0, 1, 2}) {
        std::vector<float> A((size_t)pp * pp, 3.f); auto dg = randv(pp);
        for (auto& v : dg) v = 0.5f + std::fabs(v);
        launch(g1((pp + 255) / 256), g1(256), [&] { kf::hg_set_diag(A.data(), dg.data(), pp, mode); });
        for (int i = 0; i < pp; ++i) for (int j = 0; j < pp; ++j) {
            const float diag = mode == 2 ? 3.f + dg[i] : (mode == 1 ? 1.0f / dg[i] : dg[i]);
            expect(A[i * pp + j] == (i != j ? 3.f : diag), "set_diag");
        }
    }
    // kfac_damp: traces, π and the damped diagonals against the formula in double
    for (auto [d, c] : std::vector<std::pair<int, int>>{{1, 1}, {45, 3}, {300, 10}}) {
        auto X = randv(d * d); auto G = randv(c * c); auto lam = randv(c);
        for (int j = 0; j < d; ++j) X[j * d + j] = 0.5f + std::fabs(X[j * d + j]);
        for (int k = 0; k < c; ++k) { G[k * c + k] = 0.25f + std::fabs(G[k * c + k]); lam[k] = 0.1f + std::fabs(lam[k]); }
        double tx = 0, tg = 0, tl = 0;
        for (int j = 0; j < d; ++j) tx += X[j * d + j];
        for (int k = 0; k < c; ++k) { tg += G[k * c + k]; tl += lam[k]; }
        const double pi = std::sqrt((tl / c) * (tx / d) / (tg / c));
        auto X0 = X; auto G0 = G;
        launch(g1(1), g1(256), [&] { kf::hg_kfac_damp(X.data(), d, G.data(), c, lam.data()); });
        // The block sums in another order than here: equal to f32 rounding (one ulp).
        auto near = [](float got, double want) { return std::fabs(got - want) <= 1.2e-7 * std::fabs(want) + 1e-30; };
        for (int i = 0; i < d; ++i) for (int j = 0; j < d; ++j)
            expect(i != j ? X[i * d + j] == X0[i * d + j] : near(X[i * d + j], (double)X0[i * d + j] + pi), "kfac_damp XX");
        for (int k = 0; k < c; ++k) for (int l = 0; l < c; ++l)
            expect(k != l ? G[k * c + l] == G0[k * c + l] : near(G[k * c + l], (double)G0[k * c + k] + (double)lam[k] / pi), "kfac_damp GG");
    }
    // keep_failure: the first failure stays, success never clears it
    {
        int flag = 0, ok = 0, bad = 7, worse = 9;
        launch(g1(1), g1(1), [&] { kf::hg_keep_failure(&ok, &flag); });
        expect(flag == 0, "keep_failure: success leaves the flag");
        launch(g1(1), g1(1), [&] { kf::hg_keep_failure(&bad, &flag); });
        expect(flag == 7, "keep_failure: a failure is kept");
        launch(g1(1), g1(1), [&] { kf::hg_keep_failure(&worse, &flag); });
        launch(g1(1), g1(1), [&] { kf::hg_keep_failure(&ok, &flag); });
        expect(flag == 7, "keep_failure: the first failure stays");
    }
    // add_diag
    {
        const int bb = 5; auto A = randv(bb * bb), A0 = A;
        launch(g1(1), g1(256), [&] { kf::hg_add_diag(A.data(), bb, 0.5f); });
        for (int e = 0; e < bb * bb; ++e) expect(A[e] == (e / bb == e % bb ? A0[e] + 0.5f : A0[e]), "add_diag");
    }
    // kfac_gg
    const int kb_ = 20, kc = 7;
    auto gg0 = randv(kc * kc), G = randv(kb_ * kc), S2 = randv(kb_);
    for (float beta : {0.0f, 0.3f}) for (int s = 0; s < 2; ++s) {
        auto gg = gg0; if (beta == 0) gg[3] = NAN;
        launch(g1(1), g1(256), [&] { kgb::hg_kfac_gg(G.data(), s ? S2.data() : nullptr, kb_, kc, 0.5f, beta, gg.data()); });
        for (int k = 0; k < kc; ++k) for (int l = 0; l < kc; ++l) { double sum = 0; for (int p = 0; p < kb_; ++p) sum += (s ? S2[p] : 1.0) * G[p * kc + k] * G[p * kc + l]; close(gg[k * kc + l], 0.5 * sum + beta * gg0[k * kc + l] * (beta != 0), 1e-5, "kfac_gg"); }
    }
}

// ---- mlp.cu: the network's row steps against double references written from
// src/backend/mlp/cpu.rs (the CPU twin evaluates the same expressions in f64) ----
static double phi_d1(int act, double a) { return act == 0 ? 1 - a * a : (a > 0 ? 1.0 : 0.0); }
static double phi_d2(int act, double a) { return act == 0 ? -2 * a * (1 - a * a) : 0.0; }

static void test_mlp() {
    for (int act : {0, 1}) for (int w : {1, 5, 33}) for (unsigned grid : {1u, 3u}) {
        const int n = 13;
        char what[160];
        snprintf(what, sizeof what, "mlp act=%d w=%d grid=%u", act, w, grid);
        // hg_mlp_activate: [φ(Z) | 1] in place, φ evaluated in double and rounded once.
        auto a = randv((size_t)n * (w + 1), -3, 3), z = a;
        launch(g1(grid), g1(256), [&] { km::hg_mlp_activate(a.data(), n, w, act); });
        for (int p = 0; p < n; ++p) for (int k = 0; k <= w; ++k) {
            const double zz = z[p * (w + 1) + k];
            const float want = k == w ? 1.0f : (float)(act == 0 ? std::tanh(zz) : std::max(zz, 0.0));
            expect(a[p * (w + 1) + k] == want, what, a[p * (w + 1) + k], want);
        }
        // hg_mlp_derivative_times, out of place and in place: (float)φ'(a) · x in f32.
        auto x = randv((size_t)n * w), out = randv((size_t)n * w);
        launch(g1(grid), g1(256), [&] { km::hg_mlp_derivative_times(x.data(), a.data(), n, w, act, out.data()); });
        auto in_place = x;
        launch(g1(grid), g1(256), [&] { km::hg_mlp_derivative_times(in_place.data(), a.data(), n, w, act, in_place.data()); });
        for (int p = 0; p < n; ++p) for (int k = 0; k < w; ++k) {
            const float want = (float)phi_d1(act, a[p * (w + 1) + k]) * x[p * w + k];
            expect(out[p * w + k] == want, "mlp derivative_times", out[p * w + k], want);
            expect(in_place[p * w + k] == want, "mlp derivative_times in place", in_place[p * w + k], want);
        }
        // hg_mlp_backprop_r: R T ⊙ φ'(a) + T ⊙ φ''(a) ⊙ R z in double.
        auto rt = randv((size_t)n * w), t = randv((size_t)n * w), rz = randv((size_t)n * w), rt0 = rt;
        launch(g1(grid), g1(256), [&] { km::hg_mlp_backprop_r(rt.data(), t.data(), a.data(), rz.data(), n, w, act, rt.data()); });
        for (int p = 0; p < n; ++p) for (int k = 0; k < w; ++k) {
            const double ak = a[p * (w + 1) + k], e = (size_t)p * w + k;
            const double want = rt0[e] * phi_d1(act, ak) + (double)t[e] * phi_d2(act, ak) * rz[e];
            close(rt[e], want, 1e-7, "mlp backprop_r");
        }
    }
    for (int c : {2, 3, 10, 37}) for (int use_rows : {0, 1}) for (unsigned grid : {1u, 2u}) {
        const int n = 11, n_total = 15;
        std::vector<int> rows(n);
        for (int p = 0; p < n; ++p) rows[p] = use_rows ? (int)(rng() % n_total) : p;
        const int* rp = use_rows ? rows.data() : nullptr;
        std::vector<float> y(n_total), s = randv(n_total, 0.1, 2);
        for (auto& v : y) v = (float)(rng() % c);
        auto row = [&](int p) { return use_rows ? rows[p] : p; };
        // hg_mlp_softmax_ce: probabilities in place and CE = logsumexp − z_y, in double.
        auto zp = randv((size_t)n * c, -4, 4), z = zp;
        std::vector<float> losses(n, -7.f);
        launch(g1(grid), g1(256), [&] { km::hg_mlp_softmax_ce(zp.data(), y.data(), rp, n, c, losses.data()); });
        for (int p = 0; p < n; ++p) {
            double mx = -1e300, sum = 0;
            for (int k = 0; k < c; ++k) mx = std::max(mx, (double)z[p * c + k]);
            for (int k = 0; k < c; ++k) sum += exp(z[p * c + k] - mx);
            for (int k = 0; k < c; ++k) close(zp[p * c + k], exp(z[p * c + k] - mx) / sum, 1e-7, "mlp softmax");
            close(losses[p], mx + log(sum) - z[p * c + (int)y[row(p)]], 1e-7, "mlp cross-entropy");
        }
        // hg_mlp_weighted_sum: Σ s_i ℓ_p in double, with and without weights.
        for (int weighted : {0, 1}) {
            double got = 0.5, want = 0.5;
            launch(g1(grid), g1(256), [&] { km::hg_mlp_weighted_sum(losses.data(), weighted ? s.data() : nullptr, rp, n, &got); });
            for (int p = 0; p < n; ++p) want += (weighted ? (double)s[row(p)] : 1.0) * losses[p];
            close(got, want, 1e-12, "mlp weighted_sum");
        }
        // hg_mlp_output_delta: p − e_y exactly.
        std::vector<float> delta((size_t)n * c, -7.f);
        launch(g1(grid), g1(256), [&] { km::hg_mlp_output_delta(zp.data(), y.data(), rp, n, c, delta.data()); });
        for (int p = 0; p < n; ++p) for (int k = 0; k < c; ++k) {
            const float want = k == (int)y[row(p)] ? zp[p * c + k] - 1.0f : zp[p * c + k];
            expect(delta[p * c + k] == want, "mlp output_delta", delta[p * c + k], want);
        }
        // hg_mlp_directional: Σ_k (p_k − 1[k = y]) R z_k in double.
        auto rz = randv((size_t)n * c);
        std::vector<double> dir(n, -7.0);
        launch(g1(grid), g1(256), [&] { km::hg_mlp_directional(zp.data(), y.data(), rp, rz.data(), n, c, dir.data()); });
        for (int p = 0; p < n; ++p) {
            double want = 0;
            for (int k = 0; k < c; ++k) want += ((double)zp[p * c + k] - (k == (int)y[row(p)])) * rz[p * c + k];
            close(dir[p], want, 1e-12, "mlp directional");
        }
        // hg_mlp_softmax_r: p ⊙ (R z − pᵀ R z) in place, in double.
        auto r = rz;
        launch(g1(grid), g1(256), [&] { km::hg_mlp_softmax_r(zp.data(), r.data(), n, c); });
        for (int p = 0; p < n; ++p) {
            double mean = 0;
            for (int k = 0; k < c; ++k) mean += (double)zp[p * c + k] * rz[p * c + k];
            for (int k = 0; k < c; ++k) close(r[p * c + k], zp[p * c + k] * (rz[p * c + k] - mean), 1e-7, "mlp softmax_r");
        }
        // hg_mlp_scale_rows: s_i · x exactly.
        auto xs = randv((size_t)n * c), scaled = xs;
        launch(g1(grid), g1(256), [&] { km::hg_mlp_scale_rows(xs.data(), s.data(), rp, n, c, scaled.data()); });
        for (int p = 0; p < n; ++p) for (int k = 0; k < c; ++k) expect(scaled[p * c + k] == xs[p * c + k] * s[row(p)], "mlp scale_rows");
        // A label that is not a class index makes its row's loss, δ and directional NaN.
        auto bad = y;
        bad[row(0)] = (float)c;
        auto zb = z;
        launch(g1(grid), g1(256), [&] { km::hg_mlp_softmax_ce(zb.data(), bad.data(), rp, n, c, losses.data()); });
        launch(g1(grid), g1(256), [&] { km::hg_mlp_output_delta(zb.data(), bad.data(), rp, n, c, delta.data()); });
        launch(g1(grid), g1(256), [&] { km::hg_mlp_directional(zb.data(), bad.data(), rp, rz.data(), n, c, dir.data()); });
        expect(std::isnan(losses[0]) && std::isnan(delta[0]) && std::isnan(dir[0]), "mlp invalid label gives NaN");
    }
    // hg_mlp_outer_rows: one layer's block of every per-sample gradient, other entries untouched.
    for (int use_coef : {0, 1}) for (unsigned grid : {1u, 4u}) {
        const int n = 6, fo = 4, in_w = 7, offset = 5, dim = offset + fo * in_w + 3;
        auto delta = randv(n * fo), input = randv(n * in_w), coef = randv(n);
        std::vector<float> out((size_t)n * dim, -7.f);
        launch(g1(grid), g1(256), [&] { km::hg_mlp_outer_rows(delta.data(), fo, input.data(), in_w, use_coef ? coef.data() : nullptr, n, dim, offset, out.data()); });
        for (int p = 0; p < n; ++p) for (int e = 0; e < dim; ++e) {
            float want = -7.f;
            if (e >= offset && e < offset + fo * in_w) {
                const int k = (e - offset) / in_w, j = (e - offset) % in_w;
                const float dk = use_coef ? coef[p] * delta[p * fo + k] : delta[p * fo + k];
                want = dk * input[p * in_w + j];
            }
            expect(out[(size_t)p * dim + e] == want, "mlp outer_rows", out[(size_t)p * dim + e], want);
        }
    }
    // hg_mlp_bias_shift: out_b += shift · (Σ_k v_b) / c on the strided bias entries only.
    for (int c : {3, 37}) {
        const int start = 4, stride = 5, len = start + c * stride + 2;
        auto v = randv(len), out = randv(len), out0 = out;
        launch(g1(1), g1(32), [&] { km::hg_mlp_bias_shift(v.data(), out.data(), start, stride, c, 0.75f); });
        double sum = 0;
        for (int k = 0; k < c; ++k) sum += v[start + k * stride];
        const float add = (float)(0.75 * sum / c);
        for (int e = 0; e < len; ++e) {
            const bool bias = e >= start && (e - start) % stride == 0 && (e - start) / stride < c;
            close(out[e], bias ? (double)(out0[e] + add) : (double)out0[e], 1e-7, "mlp bias_shift");
        }
    }
}


// ℓ1 kernels (cuda/prox.cu) against double references of the CPU twins (src/backend/prox/cpu.rs):
// the prox step and Jacobian and the column gemv bit for bit (same f32 operations per entry),
// the column products and the sweeps of coordinate descent within f32 accuracy (their dot
// products are summed in double here, sequentially in f32 there).
static double soft_d(double z, double t) { return z > t ? z - t : (z < -t ? z + t : 0.0); }
static double relerr(const std::vector<float>& a, const std::vector<double>& b) {
    double num = 0, den = 1e-12;
    for (size_t i = 0; i < a.size(); ++i) { num = std::max(num, std::fabs(a[i] - b[i])); den = std::max(den, std::fabs(b[i])); }
    return num / den;
}
static void test_prox() {
    const int n = 50, d = 12;
    // Column-major design with some zero entries (a densified sparse design).
    std::vector<float> x(n * d);
    for (auto& v : x) v = unif() < 0.3 ? 0.0f : (float)unif();
    auto y = randv(n);
    std::vector<double> xd(x.begin(), x.end());
    auto col_dot = [&](int j, const std::vector<double>& v) { double s = 0; for (int i = 0; i < n; ++i) s += xd[i + j * n] * v[i]; return s; };
    auto col_axpy = [&](int j, double a, std::vector<double>& v) { for (int i = 0; i < n; ++i) v[i] += a * xd[i + j * n]; };
    std::vector<float> lips(d); std::vector<double> lipsd(d);
    for (int j = 0; j < d; ++j) { double s = 0; for (int i = 0; i < n; ++i) s += xd[i + j * n] * xd[i + j * n]; lipsd[j] = s / n; lips[j] = (float)lipsd[j]; lipsd[j] = lips[j]; }
    lips[3] = 0.0f; lipsd[3] = 0.0;  // a zero column is skipped
    std::vector<int> coords = {0, 2, 3, 5, 7, 8, 11};
    const int m = (int)coords.size();
    // prox step and Jacobian: bit-exact against the twin's expressions.
    {
        auto v = randv(d), g = randv(d), l1 = randv(d, 0, 0.5), jv = randv(2 * d), dg = randv(2 * d), dl1 = randv(2 * d), gsm = randv(d);
        std::vector<float> w(d), jw(2 * d), coef = {-0.05f, 0.01f, 0.2f, -0.1f};
        const float eta = 0.7f;
        launch(g1(1), g1(256), [&] { kp::hg_prox_step(v.data(), g.data(), l1.data(), d, eta, w.data()); });
        for (int j = 0; j < d; ++j) {
            float z = v[j] - eta * g[j], t = eta * l1[j];
            expect(w[j] == (z > t ? z - t : (z < -t ? z + t : 0.0f)), "prox_step bit-exact");
        }
        launch(g1(2), g1(256), [&] { kp::hg_prox_jacobian(w.data(), v.data(), jv.data(), dg.data(), gsm.data(), l1.data(), dl1.data(), d, 2, eta, coef.data(), jw.data()); });
        for (int k = 0; k < 2; ++k) for (int j = 0; j < d; ++j) {
            int e = k * d + j; float want = 0.0f;
            if (w[j] != 0.0f) {
                float s = w[j] > 0 ? 1.0f : -1.0f, gg = dg[e] + coef[2 + k] * v[j];
                want = (jv[e] - eta * gg - gsm[j] * coef[k]) - s * (l1[j] * coef[k] + eta * dl1[e]);
            }
            expect(jw[e] == want, "prox_jacobian bit-exact", jw[e], want);
        }
    }
    // gemv on a coordinate subset: bit-exact (same order per entry); gemv_t within f32.
    {
        auto v = randv(m), out = randv(n), out0 = out;
        v[2] = 0.0f;
        launch(g1(1), g1(64), [&] { kp::hg_cols_gemv(x.data(), n, coords.data(), m, -0.7f, v.data(), out.data()); });
        for (int i = 0; i < n; ++i) {
            float acc = out0[i];
            for (int a = 0; a < m; ++a) if (v[a] != 0.0f) acc = acc + (-0.7f * v[a]) * x[i + coords[a] * n];
            expect(out[i] == acc, "cols_gemv bit-exact", out[i], acc);
        }
        for (unsigned grid : {1u, 5u}) {
            std::vector<float> xt(d);
            launch(g1(grid), g1(64), [&] { kp::hg_cols_gemv_t(x.data(), n, nullptr, d, y.data(), xt.data()); });
            std::vector<double> yd(y.begin(), y.end()), want(d);
            for (int j = 0; j < d; ++j) want[j] = col_dot(j, yd);
            close(relerr(xt, want), 0, 1e-6, "cols_gemv_t");
        }
    }
    auto l1 = randv(d, 0.01, 0.1);
    for (int kind = 0; kind < 3; ++kind) {
        const float l2 = kind == 1 ? 0.05f : 0.0f;
        const int p = kind == 0 ? 1 : (kind == 1 ? 2 : d);
        // Two full sweeps and one over the subset, against the double loop.
        for (unsigned block : {64u, 256u}) {
            std::vector<float> w(d, 0.f), r = y, st(2);
            std::vector<double> wd(d, 0.0), rd(y.begin(), y.end());
            for (int pass = 0; pass < 3; ++pass) {
                const int* c = pass < 2 ? nullptr : coords.data();
                int cnt = pass < 2 ? d : m;
                launch(g1(1), g1(block), [&] { kp::hg_cd_sweep(x.data(), n, c, cnt, lips.data(), l1.data(), l2, w.data(), r.data(), st.data()); });
                double mc = 0, mw = 0;
                for (int a = 0; a < cnt; ++a) {
                    int j = c ? c[a] : a;
                    if (!(lipsd[j] > 0)) continue;
                    double old = wd[j], u = col_dot(j, rd) / n + lipsd[j] * old;
                    double nw = soft_d(u, l1[j]) / (lipsd[j] + l2);
                    col_axpy(j, old - nw, rd); wd[j] = nw;
                    mc = std::max(mc, std::fabs(nw - old)); mw = std::max(mw, std::fabs(nw));
                }
                close(relerr(w, wd), 0, 1e-4, "cd_sweep w");
                close(relerr(r, rd), 0, 1e-4, "cd_sweep r");
                close(st[1], mw, 1e-4 * (mw + 1e-12), "cd_sweep max |w|");
            }
        }
        // Three forward sweeps with the Jacobian.
        {
            std::vector<float> w(d, 0.f), r = y, jac(p * d, 0.f), jr(p * n, 0.f), live(p, kind == 2 ? 0.f : 1.f);
            std::vector<double> wd(d, 0.0), rd(y.begin(), y.end()), jd(p * d, 0.0), jrd(p * n, 0.0);
            std::vector<bool> lived(p, kind != 2);
            for (int pass = 0; pass < 3; ++pass) {
                launch(g1(1), g1(64), [&] { kp::hg_cd_forward_sweep(x.data(), n, d, kind, p, lips.data(), l1.data(), l2, w.data(), r.data(), jac.data(), jr.data(), live.data()); });
                for (int j = 0; j < d; ++j) {
                    if (!(lipsd[j] > 0)) continue;
                    double old = wd[j], u = col_dot(j, rd) / n + lipsd[j] * old;
                    double nw = soft_d(u, l1[j]) / (lipsd[j] + l2);
                    col_axpy(j, old - nw, rd); wd[j] = nw;
                    if (kind == 2 && nw != 0) lived[j] = true;
                    for (int k = 0; k < p; ++k) {
                        if (!lived[k]) continue;
                        std::vector<double> rk(jrd.begin() + k * n, jrd.begin() + (k + 1) * n);
                        double dn = 0;
                        if (nw != 0) {
                            double dl1 = ((kind == 2) ? k == j : k == 0) ? (double)l1[j] : 0.0;
                            double dl2 = (kind == 1 && k == 1) ? (double)l2 : 0.0;
                            dn = (col_dot(j, rk) / n + lipsd[j] * jd[k * d + j] - (nw > 0 ? 1 : -1) * dl1 - nw * dl2) / (lipsd[j] + l2);
                        }
                        double delta = dn - jd[k * d + j];
                        for (int i = 0; i < n; ++i) jrd[k * n + i] -= delta * xd[i + j * n];
                        jd[k * d + j] = dn;
                    }
                }
            }
            close(relerr(w, wd), 0, 1e-4, "cd_forward_sweep w");
            close(relerr(jac, jd), 0, 1e-3, "cd_forward_sweep J");
            close(relerr(jr, jrd), 0, 1e-3, "cd_forward_sweep R");
            for (int k = 0; k < p; ++k) expect((live[k] != 0) == lived[k], "cd_forward_sweep live");
        }
    }
    // Four Jacobian sweeps on the subset, two columns.
    {
        std::vector<float> lc(m); std::vector<double> lcd(m);
        for (int a = 0; a < m; ++a) { lc[a] = lips[coords[a]] > 0 ? lips[coords[a]] : 1.0f; lcd[a] = lc[a]; }
        auto bv = randv(2 * m);
        std::vector<float> jac(2 * m, 0.f), res(2 * n, 0.f), st(2);
        std::vector<double> jd(2 * m, 0.0), rd(2 * n, 0.0);
        const float l2 = 0.05f;
        for (int pass = 0; pass < 4; ++pass) {
            launch(g1(1), g1(64), [&] { kp::hg_cd_jacobian_sweep(x.data(), n, coords.data(), m, 2, lc.data(), bv.data(), l2, jac.data(), res.data(), st.data()); });
            for (int k = 0; k < 2; ++k) for (int a = 0; a < m; ++a) {
                int j = coords[a];
                std::vector<double> rk(rd.begin() + k * n, rd.begin() + (k + 1) * n);
                double nw = (col_dot(j, rk) / n + lcd[a] * jd[k * m + a] - bv[k * m + a]) / (lcd[a] + l2);
                double delta = nw - jd[k * m + a];
                for (int i = 0; i < n; ++i) rd[k * n + i] -= delta * xd[i + j * n];
                jd[k * m + a] = nw;
            }
        }
        close(relerr(jac, jd), 0, 1e-4, "cd_jacobian_sweep J");
        close(relerr(res, rd), 0, 1e-4, "cd_jacobian_sweep R");
    }
}

// "rows SEED N K0 COUNT": the row stream's kernel (cuda/rows.cu) prints rows k0..k0+count−1
// (and the advanced offset), for tests/kernel_emulation.rs to compare with
// src/data/row_stream.rs bit for bit. Grid 3 × 256 threads, so the grid-stride loop wraps.
static int print_rows(char** argv) {
    const unsigned long long seed = std::stoull(argv[2]);
    const unsigned n = (unsigned)std::stoul(argv[3]);
    unsigned long long offset = std::stoull(argv[4]);
    const unsigned count = (unsigned)std::stoul(argv[5]);
    std::vector<unsigned> rows(count, 0xffffffffu);
    launch(g1(3), g1(256), [&] { kr::hg_stream_rows(seed, n, &offset, count, rows.data()); });
    launch(g1(1), g1(32), [&] { kr::hg_stream_advance(&offset, count); });
    for (unsigned r : rows) printf("%u ", r);
    printf("\noffset %llu\n", offset);
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 6 && std::string(argv[1]) == "rows") return print_rows(argv);
    bool quick = argc > 1 && std::string(argv[1]) == "quick";
    test_blas1(); printf("blas1: %d checks, %d fails\n", checks, fails);
    test_fisher(); printf("fisher: %d checks, %d fails\n", checks, fails);
    test_mlp(); printf("mlp: %d checks, %d fails\n", checks, fails);
    test_prox(); printf("prox: %d checks, %d fails\n", checks, fails);
    glm_suite<1, float>(); glm_suite<8, float>(); glm_suite<32, float>();
    glm_suite<4, unsigned short>();
    if (!quick) {
        glm_suite<2, float>(); glm_suite<4, float>(); glm_suite<16, float>();
        glm_suite<1, unsigned short>(); glm_suite<32, unsigned short>();
    }
    printf("TOTAL: %d checks, %d fails\n", checks, fails);
    return fails != 0;
}
