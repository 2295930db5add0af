//! Skinny products of the CPU backend's row kernels: a block of design rows `X_b` (r×d)
//! against a few rows of a matrix `M` (k×d, k ≤ [`SKINNY_MAX_WIDTH`]):
//!
//! * [`rows_times`]: `Z = X_b Mᵀ` (r×k), every row's k dot products sharing its loads;
//! * [`add_outer`]: `acc += Uᵀ X_b` (acc k×d, U r×k), four rows of X per pass over acc.
//!
//! Why not a GEMM library: at these shapes (k = 1 … 32 columns, d in the hundreds) a general
//! GEMM spends more time packing X_b than multiplying it (perf, MNIST-shaped NHGD, f32: 30% of
//! the run in `matrixmultiply`'s packing, 25% in its kernel, BENCHMARKS.md). These loops read
//! X_b once per product, unpacked.
//!
//! The crate is built for baseline x86-64 (SSE2), so each product is compiled three times —
//! for AVX-512, for AVX2 + FMA and for the baseline — and the widest the CPU supports is
//! chosen at run time. The bodies are plain Rust over fixed-size lane arrays, which the
//! compiler vectorises for each target; the FMA builds fuse multiply and add.

use super::real::Real;

/// Widest `M` (rows) the skinny products are used for; wider products go to the GEMM.
pub const SKINNY_MAX_WIDTH: usize = 32;

/// Partial sums per dot product: two 256-bit vectors of f32 (independent chains hide the
/// latency of the adds).
const LANES: usize = 16;

/// `z[i·k + j] = Σ_t x[i·d + t] m[j·d + t]` for the `r = x.len() / d` rows of `x`.
pub fn rows_times<T: Real>(x: &[T], d: usize, m: &[T], z: &mut [T]) {
    let k = m.len().checked_div(d).unwrap_or(0);
    debug_assert_eq!(x.len() % d.max(1), 0);
    debug_assert_eq!(z.len(), (x.len() / d.max(1)) * k);
    if d == 0 {
        z.iter_mut().for_each(|v| *v = T::zero());
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { rows_times_avx512(x, d, m, z) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { rows_times_avx2(x, d, m, z) };
        }
    }
    rows_times_body::<T, false>(x, d, m, z)
}

/// `acc[j·d + t] += Σ_i u[i·k + j] x[i·d + t]` for the `r = x.len() / d` rows of `x`.
pub fn add_outer<T: Real>(u: &[T], k: usize, x: &[T], d: usize, acc: &mut [T]) {
    debug_assert_eq!(acc.len(), k * d);
    debug_assert_eq!(u.len(), (x.len() / d.max(1)) * k);
    if d == 0 || k == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { add_outer_avx512(u, k, x, d, acc) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { add_outer_avx2(u, k, x, d, acc) };
        }
    }
    add_outer_body::<T, false>(u, k, x, d, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_times_avx512<T: Real>(x: &[T], d: usize, m: &[T], z: &mut [T]) {
    rows_times_body::<T, true>(x, d, m, z)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_times_avx2<T: Real>(x: &[T], d: usize, m: &[T], z: &mut [T]) {
    rows_times_body::<T, true>(x, d, m, z)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn add_outer_avx512<T: Real>(u: &[T], k: usize, x: &[T], d: usize, acc: &mut [T]) {
    add_outer_body::<T, true>(u, k, x, d, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_outer_avx2<T: Real>(u: &[T], k: usize, x: &[T], d: usize, acc: &mut [T]) {
    add_outer_body::<T, true>(u, k, x, d, acc)
}

/// `a·b + c`, fused where the target has FMA (`FUSE`), else a multiply and an add (the
/// baseline's `mul_add` would be a library call).
#[inline(always)]
fn madd<T: Real, const FUSE: bool>(a: T, b: T, c: T) -> T {
    if FUSE {
        a.fused_mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn rows_times_body<T: Real, const FUSE: bool>(x: &[T], d: usize, m: &[T], z: &mut [T]) {
    let k = m.len() / d;
    for (xi, zi) in x.chunks_exact(d).zip(z.chunks_exact_mut(k)) {
        // Four rows of M per pass over x_i: each loaded chunk of x_i feeds four dot products.
        let mut quads = m.chunks_exact(4 * d);
        let mut zq = zi.chunks_exact_mut(4);
        for (mq, zj) in (&mut quads).zip(&mut zq) {
            let (m0, rest) = mq.split_at(d);
            let (m1, rest) = rest.split_at(d);
            let (m2, m3) = rest.split_at(d);
            zj.copy_from_slice(&dots4::<T, FUSE>(xi, m0, m1, m2, m3));
        }
        for (mj, zj) in quads.remainder().chunks_exact(d).zip(zq.into_remainder()) {
            *zj = dot_body::<T, FUSE>(xi, mj);
        }
    }
}

/// Pairwise sum of the lanes.
#[inline(always)]
fn lane_sum<T: Real>(mut a: [T; LANES]) -> T {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            let hi = a[l + width];
            a[l] += hi;
        }
    }
    a[0]
}

/// `[xᵀm0, xᵀm1, xᵀm2, xᵀm3]`, each with [`LANES`] partial sums.
#[inline(always)]
fn dots4<T: Real, const FUSE: bool>(x: &[T], m0: &[T], m1: &[T], m2: &[T], m3: &[T]) -> [T; 4] {
    let (mut a0, mut a1, mut a2, mut a3) = (
        [T::zero(); LANES],
        [T::zero(); LANES],
        [T::zero(); LANES],
        [T::zero(); LANES],
    );
    let chunks = x
        .chunks_exact(LANES)
        .zip(m0.chunks_exact(LANES))
        .zip(m1.chunks_exact(LANES))
        .zip(m2.chunks_exact(LANES))
        .zip(m3.chunks_exact(LANES));
    for ((((xc, c0), c1), c2), c3) in chunks {
        for l in 0..LANES {
            a0[l] = madd::<T, FUSE>(xc[l], c0[l], a0[l]);
            a1[l] = madd::<T, FUSE>(xc[l], c1[l], a1[l]);
            a2[l] = madd::<T, FUSE>(xc[l], c2[l], a2[l]);
            a3[l] = madd::<T, FUSE>(xc[l], c3[l], a3[l]);
        }
    }
    let body = x.len() - x.len() % LANES;
    let mut out = [lane_sum(a0), lane_sum(a1), lane_sum(a2), lane_sum(a3)];
    for t in body..x.len() {
        out[0] = madd::<T, FUSE>(x[t], m0[t], out[0]);
        out[1] = madd::<T, FUSE>(x[t], m1[t], out[1]);
        out[2] = madd::<T, FUSE>(x[t], m2[t], out[2]);
        out[3] = madd::<T, FUSE>(x[t], m3[t], out[3]);
    }
    out
}

/// `xᵀm` with [`LANES`] partial sums.
#[inline(always)]
fn dot_body<T: Real, const FUSE: bool>(x: &[T], m: &[T]) -> T {
    let mut a = [T::zero(); LANES];
    for (xc, mc) in x.chunks_exact(LANES).zip(m.chunks_exact(LANES)) {
        for l in 0..LANES {
            a[l] = madd::<T, FUSE>(xc[l], mc[l], a[l]);
        }
    }
    let body = x.len() - x.len() % LANES;
    let mut out = lane_sum(a);
    for t in body..x.len() {
        out = madd::<T, FUSE>(x[t], m[t], out);
    }
    out
}

#[inline(always)]
fn add_outer_body<T: Real, const FUSE: bool>(u: &[T], k: usize, x: &[T], d: usize, acc: &mut [T]) {
    // Four rows of X per pass over acc: each loaded chunk of acc_j takes four products.
    let mut quads = x.chunks_exact(4 * d);
    let mut uq = u.chunks_exact(4 * k);
    for (xq, u4) in (&mut quads).zip(&mut uq) {
        let (x0, rest) = xq.split_at(d);
        let (x1, rest) = rest.split_at(d);
        let (x2, x3) = rest.split_at(d);
        for (j, acc_j) in acc.chunks_exact_mut(d).enumerate() {
            let coef = [u4[j], u4[k + j], u4[2 * k + j], u4[3 * k + j]];
            axpy4::<T, FUSE>(coef, x0, x1, x2, x3, acc_j);
        }
    }
    for (xi, ui) in quads
        .remainder()
        .chunks_exact(d)
        .zip(uq.remainder().chunks_exact(k))
    {
        for (acc_j, &a) in acc.chunks_exact_mut(d).zip(ui) {
            for (y, &v) in acc_j.iter_mut().zip(xi) {
                *y = madd::<T, FUSE>(a, v, *y);
            }
        }
    }
}

/// `y += c0 x0 + c1 x1 + c2 x2 + c3 x3`.
#[inline(always)]
fn axpy4<T: Real, const FUSE: bool>(
    c: [T; 4],
    x0: &[T],
    x1: &[T],
    x2: &[T],
    x3: &[T],
    y: &mut [T],
) {
    let rows = y.iter_mut().zip(x0).zip(x1).zip(x2).zip(x3);
    for ((((yt, &v0), &v1), &v2), &v3) in rows {
        let mut v = madd::<T, FUSE>(c[0], v0, *yt);
        v = madd::<T, FUSE>(c[1], v1, v);
        v = madd::<T, FUSE>(c[2], v2, v);
        *yt = madd::<T, FUSE>(c[3], v3, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    /// Every width 1..=9 and lengths around the lane count, in f32 and f64, against f64 loops.
    #[test]
    fn skinny_products_match_plain_loops() {
        for &d in &[1, 3, 15, 16, 17, 40, 785] {
            for &k in &[1, 2, 3, 4, 5, 9] {
                for &r in &[1, 3, 4, 7] {
                    let x = filled(r * d, (d * 31 + k * 7 + r) as u64);
                    let m = filled(k * d, (d + k * 3 + r * 11) as u64);
                    let mut want_z = vec![0.0; r * k];
                    for i in 0..r {
                        for j in 0..k {
                            want_z[i * k + j] =
                                (0..d).map(|t| x[i * d + t] * m[j * d + t]).sum::<f64>();
                        }
                    }
                    let acc0 = filled(k * d, 99);
                    let mut want_acc = acc0.clone();
                    for i in 0..r {
                        for j in 0..k {
                            for t in 0..d {
                                want_acc[j * d + t] += want_z[i * k + j] * x[i * d + t];
                            }
                        }
                    }
                    for (name, times, outer) in variants::<f64>() {
                        let case = (d, k, &x[..], &m[..], &want_z[..], &acc0[..], &want_acc[..]);
                        check_variant(name, times, outer, case, 1e-12);
                    }
                    for (name, times, outer) in variants::<f32>() {
                        let case = (d, k, &x[..], &m[..], &want_z[..], &acc0[..], &want_acc[..]);
                        check_variant(name, times, outer, case, 2e-5);
                    }
                }
            }
        }
    }

    type Times<T> = fn(&[T], usize, &[T], &mut [T]);
    type Outer<T> = fn(&[T], usize, &[T], usize, &mut [T]);

    /// The dispatching entry points and every build this CPU can run.
    fn variants<T: Real>() -> Vec<(&'static str, Times<T>, Outer<T>)> {
        let mut all: Vec<(&'static str, Times<T>, Outer<T>)> = vec![
            ("dispatch", rows_times::<T>, add_outer::<T>),
            (
                "baseline",
                rows_times_body::<T, false>,
                add_outer_body::<T, false>,
            ),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push((
                    "avx2",
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    |x, d, m, z| unsafe { rows_times_avx2(x, d, m, z) },
                    |u, k, x, d, acc| unsafe { add_outer_avx2(u, k, x, d, acc) },
                ));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push((
                    "avx512",
                    // SAFETY: the CPU has AVX-512F (checked above).
                    |x, d, m, z| unsafe { rows_times_avx512(x, d, m, z) },
                    |u, k, x, d, acc| unsafe { add_outer_avx512(u, k, x, d, acc) },
                ));
            }
        }
        all
    }

    /// `(d, k, X, M, Z, acc before, acc after)` in f64.
    type Case<'a> = (
        usize,
        usize,
        &'a [f64],
        &'a [f64],
        &'a [f64],
        &'a [f64],
        &'a [f64],
    );

    /// One build's products against the f64 loops, in precision `T`.
    fn check_variant<T: Real>(
        name: &str,
        times: Times<T>,
        outer: Outer<T>,
        (d, k, x, m, want_z, acc0, want_acc): Case<'_>,
        tol: f64,
    ) {
        let cast = |v: &[f64]| v.iter().map(|&a| T::from_f64(a)).collect::<Vec<T>>();
        let (xt, mt) = (cast(x), cast(m));
        let mut z = vec![T::zero(); want_z.len()];
        times(&xt, d, &mt, &mut z);
        let scale = (d as f64).sqrt();
        for (e, (&got, &want)) in z.iter().zip(want_z).enumerate() {
            assert!(
                (got.to_f64() - want).abs() <= tol * scale,
                "{name} {} rows_times d={d} k={k} entry {e}: {} vs {want}",
                T::PRECISION,
                got.to_f64()
            );
        }
        // Accumulate the exact Z (as T) so that only add_outer's rounding is measured.
        let zt = cast(want_z);
        let mut acc = cast(acc0);
        outer(&zt, k, &xt, d, &mut acc);
        for (e, (&got, &want)) in acc.iter().zip(want_acc).enumerate() {
            assert!(
                (got.to_f64() - want).abs() <= tol * scale * (1.0 + want.abs()),
                "{name} {} add_outer d={d} k={k} entry {e}: {} vs {want}",
                T::PRECISION,
                got.to_f64()
            );
        }
    }
}
