//! Dense CPU algebra, before and after faer (issue 10), in one run so the pairs compare:
//!
//! * GEMM `C = A·B` in f32 and f64 at 1024³ and at 512×785×785, by `hypergrad::linalg::gemm`
//!   (faer, on one thread and on all rayon threads) and by ndarray's `general_mat_mul`
//!   (matrixmultiply, one thread), which the CPU backend used before;
//! * Cholesky factorisation and SPD inverse of a random 785×785 SPD matrix (the K-FAC input
//!   factor of MNIST-sized data), by `linalg` and by the scalar row-major code it replaced
//!   (kept below verbatim).
//!
//! Throughput is reported in elements/s where an element is one flop (2mnk for GEMM, n³/3 for
//! Cholesky, n³ for factorisation + inverse). Run: `cargo bench --bench dense`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hypergrad::data::rng::Rng;
use hypergrad::linalg;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

/// The scalar routines `linalg` had before faer.
#[path = "../tests/reference/scalar_linalg.rs"]
mod scalar;

fn random<T: From<f32>>(rng: &mut Rng, len: usize) -> Vec<T> {
    (0..len).map(|_| T::from(rng.normal() as f32)).collect()
}

/// `XᵀX / n + I` for a random n×d X: SPD, like K-FAC's damped input factor.
fn random_spd(rng: &mut Rng, d: usize) -> Vec<f64> {
    let n = 2 * d;
    let x: Vec<f64> = random(rng, n * d);
    let mut a = vec![0.0; d * d];
    linalg::syrk(1.0 / n as f64, &x, n, 0.0, &mut a);
    for i in 0..d {
        a[i * d + i] += 1.0;
    }
    a
}

fn gemm_pair<T>(c: &mut Criterion, name: &str, (m, n, k): (usize, usize, usize))
where
    T: linalg::Scalar + ndarray::LinalgScalar,
{
    let mut rng = Rng::new(1);
    let a: Vec<T> = random(&mut rng, m * k);
    let b: Vec<T> = random(&mut rng, k * n);
    let mut out = vec![T::from(0.0); m * n];
    let mut group = c.benchmark_group(format!("gemm_{name}_{m}x{n}x{k}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements((2 * m * n * k) as u64));
    group.bench_function("ndarray(before)", |bench| {
        let av = ArrayView2::from_shape((m, k), &a).unwrap();
        let bv = ArrayView2::from_shape((k, n), &b).unwrap();
        bench.iter(|| {
            let mut cv = ArrayViewMut2::from_shape((m, n), &mut out).unwrap();
            general_mat_mul(T::one(), &av, &bv, T::zero(), &mut cv);
        })
    });
    let (one, zero) = (T::from(1.0), T::from(0.0));
    // matrixmultiply runs on one thread here (ndarray without its threading feature), so faer
    // on one thread is timed too: the per-core comparison, which other load on the machine
    // disturbs less than the two-thread one.
    faer::set_global_parallelism(faer::Par::Seq);
    group.bench_function("faer_1thread(after)", |bench| {
        bench.iter(|| {
            linalg::gemm(false, false, (m, n, k), one, &a, &b, zero, &mut out);
            black_box(&out);
        })
    });
    faer::set_global_parallelism(faer::Par::rayon(0));
    group.bench_function("faer(after)", |bench| {
        bench.iter(|| {
            linalg::gemm(false, false, (m, n, k), one, &a, &b, zero, &mut out);
            black_box(&out);
        })
    });
    group.finish();
}

fn gemms(c: &mut Criterion) {
    for shape in [(1024, 1024, 1024), (512, 785, 785)] {
        gemm_pair::<f32>(c, "f32", shape);
        gemm_pair::<f64>(c, "f64", shape);
    }
}

fn factorisations(c: &mut Criterion) {
    let d = 785;
    let a = random_spd(&mut Rng::new(2), d);
    let cube = (d * d * d) as u64;

    let mut group = c.benchmark_group(format!("cholesky_{d}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(cube / 3));
    group.bench_function("scalar(before)", |bench| {
        bench.iter(|| {
            let mut l = a.clone();
            scalar::cholesky(&mut l, d).unwrap();
            black_box(l)
        })
    });
    group.bench_function("faer(after)", |bench| {
        bench.iter(|| {
            let mut l = a.clone();
            linalg::cholesky(&mut l, d).unwrap();
            black_box(l)
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("spd_inverse_{d}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(cube));
    group.bench_function("scalar(before)", |bench| {
        bench.iter(|| black_box(scalar::spd_inverse(a.clone(), d)))
    });
    group.bench_function("faer(after)", |bench| {
        bench.iter(|| black_box(linalg::spd_inverse(&a, d).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, gemms, factorisations);
criterion_main!(benches);
