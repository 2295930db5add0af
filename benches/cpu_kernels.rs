//! CPU kernel benchmarks on a logreg-shaped problem, n = 100,000 × d = 1,000 in f32 (400 MB):
//! the batched Hessian-vector product (k = 1 and k = 8 vectors), the fused loss + gradient,
//! and two ceilings measured in the same run on the same bytes — a plain copy of the matrix
//! (read + write counted, the STREAM convention) and a plain read (sum) of it.
//!
//! Throughput is bytes of X moved per second, so the kernels' GB/s compare directly with the
//! read ceiling. Run: `cargo bench --bench cpu_kernels` (set HYPERGRAD_BENCH_N to shrink n).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hypergrad::backend::cpu::{dot, CpuBackend, CpuMatrix};
use hypergrad::backend::{Backend, GlmOps, Loss};
use hypergrad::data::synthetic;
use rayon::prelude::*;

const D: usize = 1000;

fn rows() -> usize {
    std::env::var("HYPERGRAD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn kernels(c: &mut Criterion) {
    let n = rows();
    let (data, _) = synthetic::logistic(n, D, 0.0, 3.0, 1);
    let backend = CpuBackend::<f32>::new();
    let x: CpuMatrix<f32> = backend.upload_design(&data.x).expect("upload");
    drop(data.x);
    let y = backend.upload(&data.y).expect("labels");
    let bytes = (n * D * std::mem::size_of::<f32>()) as u64;
    let w = backend.upload(&vec![0.01; D]).expect("w");
    let curvature = backend
        .glm_curvature(&x, Loss::Logistic, &y, None, &w, 1.0 / n as f64)
        .expect("curvature");

    let mut group = c.benchmark_group(format!("cpu_f32_n{n}_d{D}"));
    group.sample_size(10);

    let mut copy = vec![0f32; x.data.len()];
    group.throughput(Throughput::Bytes(2 * bytes));
    group.bench_function("copy_ceiling(read+write)", |b| {
        b.iter(|| {
            copy.par_chunks_mut(1 << 16)
                .zip(x.data.par_chunks(1 << 16))
                .for_each(|(dst, src)| dst.copy_from_slice(src));
            black_box(&copy);
        })
    });
    drop(copy);

    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("read_ceiling(sum)", |b| {
        b.iter(|| {
            // Sum of squares with the kernels' vectorised dot: every byte of X read once.
            let s: f32 = x.data.par_chunks(1 << 16).map(|c| dot(c, c)).sum();
            black_box(s)
        })
    });

    for k in [1usize, 8] {
        let v = backend.upload(&vec![0.5; k * D]).expect("v");
        let mut out = backend.zeros(k * D).expect("out");
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("hvp_k{k}"), |b| {
            b.iter(|| backend.glm_hvp(&x, &curvature, &v, &mut out).expect("hvp"))
        });
    }

    let mut grad = backend.zeros(D).expect("grad");
    group.bench_function("loss_grad", |b| {
        b.iter(|| {
            backend
                .glm_value_grad(
                    &x,
                    Loss::Logistic,
                    &y,
                    None,
                    &w,
                    1.0 / n as f64,
                    Some(&mut grad),
                )
                .expect("grad")
        })
    });
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
