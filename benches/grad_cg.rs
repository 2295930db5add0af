//! End to end: `grad --method cg` (Newton-CG inner solve + CG linear solve) on logreg with
//! n = 100,000 × d = 1,000 in f32, the same problem as `cpu_kernels`.
//!
//! The run streams X many times (one pass per gradient or Hessian-vector product); the
//! backend counts those bytes, so the throughput reported is the achieved GB/s of the whole
//! hypergradient, comparable with `cpu_kernels`' read ceiling. The pass count and the
//! hypergradient's diagnostics are printed once before timing.
//! Run: `cargo bench --bench grad_cg` (HYPERGRAD_BENCH_N shrinks n).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::Precision;
use hypergrad::data::{split, synthetic};
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::problem::{Bilevel, GlmBilevel, HyperLayout, ProblemKind};

const D: usize = 1000;

fn grad_cg(c: &mut Criterion) {
    let n: usize = std::env::var("HYPERGRAD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    // 100,000 training rows plus a validation set a quarter that size.
    let (data, _) = synthetic::logistic(n + n / 4, D, 0.0, 3.0, 1);
    let parts = split(&data, &[0.8, 0.2], 0).expect("split");
    drop(data);
    let backend = CpuBackend::<f32>::new();
    let mut problem = GlmBilevel::new(
        backend.clone(),
        ProblemKind::Logreg,
        HyperLayout::Shared,
        &parts[0],
        &parts[1],
        0.0,
    )
    .expect("problem");
    problem.set_theta(&[-4.0]).expect("theta");
    let opts = Options::new(Method::Cg, Precision::F32);

    let (passes_before, bytes_before) = backend.design_traffic();
    let probe = compute(&problem, &opts, None).expect("hypergradient");
    let (passes_after, bytes_after) = backend.design_traffic();
    let bytes = bytes_after - bytes_before;
    eprintln!(
        "grad cg: {} passes over X ({:.2} GB), {} Newton iterations, {} CG iterations, \
         ‖∇g‖ = {:.2e}, residual = {:?}, bound = {:?}, h = {:?}, {:.2} s",
        passes_after - passes_before,
        bytes as f64 / 1e9,
        probe.inner_iters,
        probe.linear_iters,
        probe.inner_grad_norm,
        probe.residual_norm,
        probe.error_bound,
        probe.hypergradient,
        probe.seconds
    );

    let mut group = c.benchmark_group(format!("grad_cg_logreg_f32_n{}_d{D}", parts[0].n()));
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("grad_cg", |b| {
        b.iter(|| compute(&problem, &opts, None).expect("hypergradient"))
    });
    group.finish();
}

criterion_group!(benches, grad_cg);
criterion_main!(benches);
