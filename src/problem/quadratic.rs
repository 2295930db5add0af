//! `quadratic`: Ehrhardt & Roberts' test problem (SPEC §9), after Li, Gu & Huang (2022, §6.1):
//!
//! ```text
//! x*(w) = argmin_x g(x, w) = ‖C w + D x − e‖²      (lower level; inner variable x ∈ R^nx)
//! F(w)  = f(x*(w))         = ‖A x*(w) − b‖²        (upper level; θ = w ∈ R^nw)
//! ```
//!
//! with A, b, C, D, e drawn from a seed ([`crate::data::synthetic::QuadraticSpec::generate`]). The losses are the sums
//! of squares their code states, not means over rows, so that every constant, hypergradient
//! and error is on their scale and comparable with their numbers. In SPEC §1's notation the
//! inner variable (there `w`) is `x`, and θ is this `w`.
//!
//! # Derivatives
//!
//! `∇_x g = 2Dᵀ(Cw + Dx − e)`, `H = ∇²_xx g = 2DᵀD` and `B = ∂(∇_x g)/∂w = 2DᵀC`, both
//! constant; `∇f = 2Aᵀ(Ax − b)`. So `∂x*/∂w = −H⁻¹B = −(DᵀD)⁻¹DᵀC` and
//! `∇F = −Bᵀ H⁻¹ ∇f(x*) = 2 (∂x*/∂w)ᵀ Aᵀ(Ax* − b)` ([`QuadraticBilevel::closed_form`]).
//!
//! # Constants of the error bound (SPEC §4)
//!
//! `μ = 2σ_min(D)²` (the smallest eigenvalue of H), `L_H = 0` and `L_B = 0` (H and B do not
//! depend on x), `L_f = 2σ_max(A)²` (∇f is 2AᵀA-Lipschitz) and `‖B‖ = 2σ_max(DᵀC)`; the
//! largest curvature, for the step sizes, is `2σ_max(D)²`. The singular values come from a
//! backward-stable SVD: each is exact for a matrix within `c·u·σ_max` of the true one, so each
//! is moved by [`Precision::rounding_allowance`] of `σ_max` in the safe direction (σ_min down, σ_max up).
//!
//! The problem lives on the CPU in f64 (`CpuBackend<f64>`): its matrices are small (m×10) and
//! its point is to compare errors down to the f64 rounding floor.

use crate::backend::cpu::CpuBackend;
use crate::backend::Precision;
use crate::data::synthetic::QuadraticData;
use crate::error::{Error, Result};
use crate::linalg;
use crate::problem::{Bilevel, BoundConstants, InnerProblem};

/// Where Ehrhardt & Roberts evaluate the hypergradient: `w = (1, …, 1)`.
pub const THETA_DEFAULT: f64 = 1.0;

/// The constants of the problem that do not depend on w (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct QuadraticConstants {
    /// `2σ_min(D)²`, the strong convexity of g.
    pub mu: f64,
    /// `2σ_max(D)²`, the largest curvature of g.
    pub l_g: f64,
    /// `2σ_max(A)²`, the Lipschitz constant of ∇f.
    pub l_f: f64,
    /// `2σ_max(DᵀC) = ‖B‖₂`.
    pub b_norm: f64,
}

/// The closed form of SPEC §9's problem at the current w, by dense least squares (QR of D),
/// independent of every hypergradient method.
#[derive(Clone, Debug)]
pub struct ClosedForm {
    /// `x*(w) = argmin ‖Dx − (e − Cw)‖`.
    pub x: Vec<f64>,
    /// `∂x*/∂w = −D⁺C` (nx×nw, row-major).
    pub jacobian: Vec<f64>,
    /// `∇F(w) = 2 (∂x*/∂w)ᵀ Aᵀ(Ax* − b)`.
    pub hypergradient: Vec<f64>,
    /// `∇f(x*) = 2Aᵀ(Ax* − b)`.
    pub outer_grad: Vec<f64>,
}

/// The quadratic bilevel problem (see the module docs).
pub struct QuadraticBilevel {
    backend: CpuBackend<f64>,
    data: QuadraticData,
    /// `DᵀD` (nx×nx) and `DᵀC` (nx×nw), row-major.
    dtd: Vec<f64>,
    dtc: Vec<f64>,
    constants: QuadraticConstants,
    /// θ = w, and `Cw − e` at it (m entries).
    w: Vec<f64>,
    cw_minus_e: Vec<f64>,
}

impl QuadraticBilevel {
    /// Builds the problem from its matrices; θ starts at [`THETA_DEFAULT`]. Errors: shapes
    /// that disagree, non-finite entries, or a D without full column rank (then g is not
    /// strongly convex and x*(w) is not unique).
    pub fn new(data: QuadraticData) -> Result<Self> {
        let spec = data.spec;
        let (m, nx, nw) = (spec.m, spec.nx, spec.nw);
        let shapes = [
            ("A", data.a.len(), m * nx),
            ("b", data.b.len(), m),
            ("C", data.c.len(), m * nw),
            ("D", data.d.len(), m * nx),
            ("e", data.e.len(), m),
        ];
        for (name, len, want) in shapes {
            if len != want {
                return Err(Error::Dimension(format!(
                    "quadratic: {name} has {len} entries, m = {m}, nx = {nx}, nw = {nw} need {want}"
                )));
            }
        }
        let all = [&data.a, &data.b, &data.c, &data.d, &data.e];
        if all.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
            return Err(Error::Numerical(
                "quadratic: the matrices hold a non-finite entry".into(),
            ));
        }
        if m < nx || nx == 0 || nw == 0 {
            return Err(Error::Dimension(format!(
                "quadratic needs m ≥ nx ≥ 1 and nw ≥ 1, got m = {m}, nx = {nx}, nw = {nw}"
            )));
        }
        let mut dtd = vec![0.0; nx * nx];
        linalg::gemm(
            true,
            false,
            (nx, nx, m),
            1.0,
            &data.d,
            &data.d,
            0.0,
            &mut dtd,
        );
        let mut dtc = vec![0.0; nx * nw];
        linalg::gemm(
            true,
            false,
            (nx, nw, m),
            1.0,
            &data.d,
            &data.c,
            0.0,
            &mut dtc,
        );
        let constants = constants(&data, &dtc)?;
        let mut problem = QuadraticBilevel {
            backend: CpuBackend::new(),
            data,
            dtd,
            dtc,
            constants,
            w: Vec::new(),
            cw_minus_e: Vec::new(),
        };
        problem.set_theta(&vec![THETA_DEFAULT; nw])?;
        Ok(problem)
    }

    /// The matrices (and the spec they came from).
    pub fn data(&self) -> &QuadraticData {
        &self.data
    }

    pub fn constants(&self) -> QuadraticConstants {
        self.constants
    }

    /// `x*(w)`, `∂x*/∂w`, `∇f(x*)` and `∇F(w)` in closed form at the current w.
    pub fn closed_form(&self) -> ClosedForm {
        let QuadraticData {
            a,
            b,
            c,
            d,
            e,
            spec,
        } = &self.data;
        let (m, nx, nw) = (spec.m, spec.nx, spec.nw);
        // e − Cw, formed from C and w directly (not from the stored Cw − e) to keep this
        // computation independent of the one the methods use.
        let target: Vec<f64> = (0..m)
            .map(|i| e[i] - dot(&c[i * nw..(i + 1) * nw], &self.w))
            .collect();
        let x = linalg::least_squares(d, (m, nx), &target, 1);
        let minus_jacobian = linalg::least_squares(d, (m, nx), c, nw);
        let jacobian: Vec<f64> = minus_jacobian.iter().map(|v| -v).collect();
        let residual: Vec<f64> = (0..m)
            .map(|i| dot(&a[i * nx..(i + 1) * nx], &x) - b[i])
            .collect();
        let outer_grad = transpose_times(a, nx, &residual, 2.0);
        let hypergradient = transpose_times(&jacobian, nw, &outer_grad, 1.0);
        ClosedForm {
            x,
            jacobian,
            hypergradient,
            outer_grad,
        }
    }

    fn spec_dims(&self) -> (usize, usize, usize) {
        let s = self.data.spec;
        (s.m, s.nx, s.nw)
    }

    /// Refuses a buffer whose length is not a whole number of inner vectors.
    fn check_batch(&self, what: &str, len: usize) -> Result<usize> {
        let nx = self.data.spec.nx;
        if len == 0 || len % nx != 0 {
            return Err(Error::Dimension(format!(
                "quadratic: {what} has {len} entries, not a multiple of nx = {nx}"
            )));
        }
        Ok(len / nx)
    }
}

/// μ, the largest curvature, L_f and ‖B‖ from the singular values of D, A and DᵀC, each moved
/// by its rounding allowance in the safe direction (see the module docs).
fn constants(data: &QuadraticData, dtc: &[f64]) -> Result<QuadraticConstants> {
    let spec = data.spec;
    let (m, nx, nw) = (spec.m, spec.nx, spec.nw);
    let svd = |what: &str, a: &[f64], rows: usize, cols: usize| -> Result<(f64, f64)> {
        let s = linalg::singular_values(a, rows, cols)
            .map_err(|e| Error::Numerical(format!("quadratic: singular values of {what}: {e}")))?;
        let largest = s.first().copied().unwrap_or(0.0);
        let smallest = s.last().copied().unwrap_or(0.0);
        let slack = Precision::F64.rounding_allowance(rows.max(cols), largest);
        Ok((smallest - slack, largest + slack))
    };
    let (d_min, d_max) = svd("D", &data.d, m, nx)?;
    if !(d_min > 0.0) {
        return Err(Error::Numerical(format!(
            "quadratic: D (m×nx) is numerically rank-deficient (σ_min = {:.3e} ≤ its rounding \
             allowance), so the inner problem is not strongly convex; use more rows m",
            d_min + Precision::F64.rounding_allowance(m.max(nx), d_max)
        )));
    }
    let (_, a_max) = svd("A", &data.a, m, nx)?;
    let (_, dtc_max) = svd("DᵀC", dtc, nx, nw)?;
    Ok(QuadraticConstants {
        mu: 2.0 * d_min * d_min,
        l_g: 2.0 * d_max * d_max,
        l_f: 2.0 * a_max * a_max,
        b_norm: 2.0 * dtc_max,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `α Mᵀ v` for a row-major `M` with `cols` columns.
fn transpose_times(m: &[f64], cols: usize, v: &[f64], alpha: f64) -> Vec<f64> {
    let mut out = vec![0.0; cols];
    for (row, vi) in m.chunks_exact(cols).zip(v) {
        for (o, mij) in out.iter_mut().zip(row) {
            *o += alpha * mij * vi;
        }
    }
    out
}

impl InnerProblem for QuadraticBilevel {
    type B = CpuBackend<f64>;
    /// H = 2DᵀD does not depend on x: nothing to compute per point.
    type Hessian = ();

    fn backend(&self) -> &CpuBackend<f64> {
        &self.backend
    }

    fn inner_dim(&self) -> usize {
        self.data.spec.nx
    }

    /// `g = ‖r‖²`, `∇g = 2Dᵀr` with `r = Dx + (Cw − e)` formed row by row, so that the
    /// gradient near x* is the product of D with a small residual, not a difference of large
    /// Gram-matrix terms.
    fn inner_value_grad(&self, x: &Vec<f64>, grad: Option<&mut Vec<f64>>) -> Result<f64> {
        let (_, nx, _) = self.spec_dims();
        if x.len() != nx {
            return Err(Error::Dimension(format!(
                "quadratic: x has {} entries, nx = {nx}",
                x.len()
            )));
        }
        let r: Vec<f64> = self
            .data
            .d
            .chunks_exact(nx)
            .zip(&self.cw_minus_e)
            .map(|(row, c)| dot(row, x) + c)
            .collect();
        if let Some(grad) = grad {
            *grad = transpose_times(&self.data.d, nx, &r, 2.0);
        }
        Ok(dot(&r, &r))
    }

    fn hessian(&self, _x: &Vec<f64>) -> Result<()> {
        Ok(())
    }

    /// H itself: it is the same at every x, so it majorises itself.
    fn majorant(&self) -> Result<()> {
        Ok(())
    }

    /// `out_b = 2 DᵀD v_b` for each vector of the batch.
    fn hvp(&self, _h: &(), v: &Vec<f64>, out: &mut Vec<f64>) -> Result<()> {
        let nx = self.data.spec.nx;
        let k = self.check_batch("the HVP batch", v.len())?;
        if out.len() != v.len() {
            return Err(Error::Dimension(format!(
                "quadratic: HVP output has {} entries, the batch {}",
                out.len(),
                v.len()
            )));
        }
        // Row b of the k×nx batch times the symmetric DᵀD is (DᵀD v_b)ᵀ.
        linalg::gemm(false, false, (k, nx, nx), 2.0, v, &self.dtd, 0.0, out);
        Ok(())
    }

    fn strong_convexity(&self) -> f64 {
        self.constants.mu
    }

    fn smoothness_bound(&self) -> f64 {
        self.constants.l_g
    }
}

impl Bilevel for QuadraticBilevel {
    fn hyper_dim(&self) -> usize {
        self.data.spec.nw
    }

    fn theta(&self) -> &[f64] {
        &self.w
    }

    fn set_theta(&mut self, theta: &[f64]) -> Result<()> {
        let (m, _, nw) = self.spec_dims();
        if theta.len() != nw {
            return Err(Error::Dimension(format!(
                "θ has {} entries but quadratic needs p = nw = {nw}",
                theta.len()
            )));
        }
        if let Some(i) = theta.iter().position(|t| !t.is_finite()) {
            return Err(Error::Numerical(format!(
                "θ[{i}] = {} is not finite",
                theta[i]
            )));
        }
        let c = &self.data.c;
        self.cw_minus_e = (0..m)
            .map(|i| dot(&c[i * nw..(i + 1) * nw], theta) - self.data.e[i])
            .collect();
        self.w = theta.to_vec();
        Ok(())
    }

    /// `f = ‖Ax − b‖²`, `∇f = 2Aᵀ(Ax − b)`.
    fn outer_value_grad(&self, x: &Vec<f64>, grad: Option<&mut Vec<f64>>) -> Result<f64> {
        let (_, nx, _) = self.spec_dims();
        if x.len() != nx {
            return Err(Error::Dimension(format!(
                "quadratic: x has {} entries, nx = {nx}",
                x.len()
            )));
        }
        let r: Vec<f64> = self
            .data
            .a
            .chunks_exact(nx)
            .zip(&self.data.b)
            .map(|(row, bi)| dot(row, x) - bi)
            .collect();
        if let Some(grad) = grad {
            *grad = transpose_times(&self.data.a, nx, &r, 2.0);
        }
        Ok(dot(&r, &r))
    }

    /// `Bᵀq = 2 (DᵀC)ᵀ q`.
    fn cross_t(&self, _x: &Vec<f64>, q: &Vec<f64>) -> Result<Vec<f64>> {
        let (_, nx, nw) = self.spec_dims();
        if q.len() != nx {
            return Err(Error::Dimension(format!(
                "quadratic: q has {} entries, nx = {nx}",
                q.len()
            )));
        }
        Ok(transpose_times(&self.dtc, nw, q, 2.0))
    }

    /// Column j of B is `2 (DᵀC)_{:,j}`.
    fn cross_add(&self, _x: &Vec<f64>, alpha: f64, batch: &mut Vec<f64>) -> Result<()> {
        let (_, nx, nw) = self.spec_dims();
        if batch.len() != nx * nw {
            return Err(Error::Dimension(format!(
                "quadratic: the batch of B's columns has {} entries, nx·nw = {}",
                batch.len(),
                nx * nw
            )));
        }
        for (j, column) in batch.chunks_exact_mut(nx).enumerate() {
            for (i, v) in column.iter_mut().enumerate() {
                *v += alpha * 2.0 * self.dtc[i * nw + j];
            }
        }
        Ok(())
    }

    fn bound_constants(&self, _x: &Vec<f64>) -> Result<Option<BoundConstants>> {
        let c = self.constants;
        Ok(Some(BoundConstants {
            mu: c.mu,
            l_h: 0.0,
            l_b: 0.0,
            l_f: c.l_f,
            b_norm: c.b_norm,
        }))
    }
}
