//! A training set held by a backend ([`Resident`]): the design by columns, the labels, the
//! coordinate Lipschitz constants, and the few host scalars the solvers steer by. The solvers
//! and the hypergradients of [`super::solver`] and [`super::hypergrad`] are written once over
//! it, for every backend ([`ProxOps`]): on the CPU in f64 they are the host algorithms (the
//! sparse design stays sparse), on CUDA the same loops with the design densified on the
//! device (see [`crate::backend::prox`]).

use super::problem::{L1Data, Penalty};
use super::solver::{coordinate_lipschitz, gap_from};
use crate::backend::prox::ProxOps;
use crate::Result;

/// A training set on a backend: upload once, solve at many penalties (CV folds, searches).
pub struct Resident<B: ProxOps> {
    /// The design, by columns.
    pub x: B::Cols,
    /// The labels `y`.
    pub y: B::Buf,
    /// `L_j = ‖x_j‖²/n`, on the backend and on the host.
    pub lips: B::Buf,
    pub lips_host: Vec<f64>,
    /// The host copy of the data (the labels for the gap; the design for the estimate of
    /// `‖X‖₂²` and the warm-started Jacobian's residual).
    pub data: L1Data,
    /// `‖X‖₂²` (power iteration on the host, once: the step of ISTA/FISTA).
    spectral: std::sync::OnceLock<f64>,
}

impl<B: ProxOps> Resident<B> {
    /// Copies `data` to the backend. Errors: a design the backend cannot hold.
    pub fn new(b: &B, data: &L1Data) -> Result<Resident<B>> {
        let lips_host = coordinate_lipschitz(&data.x);
        Ok(Resident {
            x: b.upload_cols(&data.x)?,
            y: b.upload(&data.y)?,
            lips: b.upload(&lips_host)?,
            lips_host,
            data: data.clone(),
            spectral: std::sync::OnceLock::new(),
        })
    }

    /// n.
    pub fn n(&self) -> usize {
        self.data.y.len()
    }

    /// d.
    pub fn d(&self) -> usize {
        self.data.x.d()
    }

    /// An estimate of `‖X‖₂²` from above ([`super::Design::spectral_norm_sq`], 50 steps).
    pub fn spectral_norm_sq(&self) -> f64 {
        *self
            .spectral
            .get_or_init(|| self.data.x.spectral_norm_sq(50))
    }

    /// `r ← y − Xw`.
    pub fn residual(&self, b: &B, w: &B::Buf, r: &mut B::Buf) -> Result<()> {
        let mut xw = b.zeros(self.n())?;
        b.cols_gemv(&self.x, None, 1.0, w, &mut xw)?;
        b.copy(&self.y, r)?;
        b.axpy(-1.0, &xw, r)
    }

    /// The duality gap at `w` with residual `r = y − Xw` ([`super::solver`]'s documentation),
    /// and the host copies of `w` and `r` it was computed from.
    pub fn gap(
        &self,
        b: &B,
        pen: &Penalty,
        w: &B::Buf,
        r: &B::Buf,
    ) -> Result<(f64, Vec<f64>, Vec<f64>)> {
        let mut xtr = b.zeros(self.d())?;
        b.cols_gemv_t(&self.x, None, r, &mut xtr)?;
        let (xtr, w, r) = (b.download(&xtr)?, b.download(w)?, b.download(r)?);
        Ok((gap_from(&self.data, pen, &w, &r, &xtr), w, r))
    }
}
