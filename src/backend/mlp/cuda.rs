//! [`MlpOps`] for [`CudaBackend`]: the CPU twin's passes ([`super::cpu`]) on the device, in
//! f32. Every matrix product is one cuBLAS GEMM over the `n` rows of the pass; the steps
//! between them (activation, softmax and cross-entropy, `δ_L = p − e_y`, the `φ'`/`φ''` row
//! products of the R-operator, per-sample outer products) are the kernels of `cuda/mlp.cu`.
//!
//! Nothing crosses to the host but what a signature returns: the loss (one double) and the
//! directional derivatives (n doubles). Mini-batch rows are gathered on the device into the
//! tape's input `X̃_B` once per forward pass (blas1.cu's `hg_gather_rows`).
//!
//! Layout on the device, as on the CPU: row-major, a hidden layer's tape `Ã_l = [φ(Z_l) | 1]`
//! (`n × (n_l+1)`; its GEMM writes `Z_l` straight into the first `n_l` columns and the
//! activation kernel runs in place). Where a formula uses `Θ_l` without its bias column
//! (what the backward pass sends down, `[R a; 0]` products), the GEMM reads the first
//! `n_{l−1}` columns of the block in place (a row stride of `n_{l−1}+1`), so neither the
//! bias column nor the CPU twin's zero column of `R Ã` is ever formed.
//!
//! Designs stored as bf16 are widened (exactly) into an f32 tape input by the same gather,
//! also for a pass over the whole design: the GEMMs are f32. K-FAC's factors are full
//! symmetric matrices as on the CPU, from one GEMM each (`Aᵀ A`, not SYRK: SYRK fills one
//! triangle, and mirroring it is another pass over the factor that costs what SYRK saves at
//! the batch sizes of an SGD step).

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::{
    check_pass_rows, check_pass_shapes, Activation, Deltas, MlpData, MlpOps, Network, Tape,
};
use crate::backend::cuda::{grid_1d, int, Arg, CudaBackend, CudaDesign, DesignData, NULL};
use crate::backend::shape::check_len;
use crate::error::{Error, Result};

type Buf = CudaSlice<f32>;
type Data<'a> = MlpData<'a, CudaBackend>;

/// `act` of the kernels.
fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Tanh => 0,
        Activation::Relu => 1,
    }
}

/// A launch of one warp (`hg_mlp_bias_shift`).
const ONE_WARP: LaunchConfig = LaunchConfig {
    grid_dim: (1, 1, 1),
    block_dim: (32, 1, 1),
    shared_mem_bytes: 0,
};

impl CudaBackend {
    /// The shapes every primitive checks (as the CPU twin), and the rows of the pass.
    pub(super) fn mlp_check(&self, net: &Network, data: Data<'_>, w: &Buf) -> Result<usize> {
        let x = data.x;
        check_pass_shapes(
            net,
            (x.n, x.d),
            w.len(),
            data.y.len(),
            data.weights.map(|s| s.len()),
        )?;
        if let Some(rows) = data.rows {
            rows.check_fits(x.n)?;
        }
        let n = check_pass_rows(data.rows.map_or(x.n, |r| r.len))?;
        int("rows of a network pass", n)?;
        int("network parameters", net.dim())?;
        Ok(n)
    }

    /// The mini-batch's row indices as a kernel argument (null: the whole design).
    fn mlp_rows(&self, data: Data<'_>) -> Arg {
        data.rows.map_or(NULL, |r| Arg::Ptr(self.rows_ptr(r)))
    }

    /// The tape's input `X̃_B`: the batch's rows gathered (widened to f32 from bf16), or the
    /// whole bf16 design widened; `None` for an f32 design read in place.
    fn mlp_gather(&self, data: Data<'_>) -> Result<Option<Buf>> {
        let x = data.x;
        let (rows, count) = match (data.rows, &x.data) {
            (Some(rows), _) => (self.rows_ptr(rows), rows.len),
            (None, DesignData::Bf16(_)) => (self.ptr(&x.iota), x.n),
            (None, DesignData::F32(_)) => return Ok(None),
        };
        self.gather_rows(x, rows, count).map(Some)
    }

    /// The address of `Ã_{l−1}`, layer `l`'s input (`n × (n_{l−1}+1)`).
    fn mlp_input(&self, x: &CudaDesign, tape: &Tape<Self>, l: usize) -> Result<u64> {
        if l > 0 {
            return Ok(self.ptr(&tape.hidden[l - 1]));
        }
        match (&tape.input, &x.data) {
            (Some(input), _) => Ok(self.ptr(input)),
            (None, DesignData::F32(buf)) => Ok(self.ptr(buf)),
            (None, DesignData::Bf16(_)) => Err(Error::Backend(
                "internal: a tape over a bf16 design has no f32 input".into(),
            )),
        }
    }

    /// `out = s ⊙ x` row by row (`x` n×width, `s` the design rows' weights).
    fn mlp_scale_rows(
        &self,
        data: Data<'_>,
        s: &Buf,
        x: &Buf,
        n: usize,
        width: usize,
    ) -> Result<Buf> {
        let out = self.alloc_written_f32(n * width)?;
        self.launch(
            "hg_mlp_scale_rows",
            grid_1d(n * width),
            &[
                Arg::Ptr(self.ptr(x)),
                Arg::Ptr(self.ptr(s)),
                self.mlp_rows(data),
                Arg::I32(n as i32),
                Arg::I32(int("layer width", width)?),
                Arg::Ptr(self.ptr(&out)),
            ],
        )?;
        Ok(out)
    }

    /// `s ⊙ δ_l` when the loss is weighted, else `None` (use `δ_l`).
    pub(super) fn mlp_weighted(
        &self,
        data: Data<'_>,
        delta: &Buf,
        n: usize,
        width: usize,
    ) -> Result<Option<Buf>> {
        data.weights
            .map(|s| self.mlp_scale_rows(data, s, delta, n, width))
            .transpose()
    }

    /// `out = φ'(a) ⊙ x` (`x`, `out` n×width; `a` a tape `Ã`, n×(width+1)); in place when
    /// `out` is `x`.
    fn mlp_derivative_times(
        &self,
        act: Activation,
        x: u64,
        a: &Buf,
        n: usize,
        width: usize,
        out: u64,
    ) -> Result<()> {
        self.launch(
            "hg_mlp_derivative_times",
            grid_1d(n * width),
            &[
                Arg::Ptr(x),
                Arg::Ptr(self.ptr(a)),
                Arg::I32(n as i32),
                Arg::I32(int("layer width", width)?),
                Arg::I32(act_code(act)),
                Arg::Ptr(out),
            ],
        )
    }

    /// `T_l = δ_l Θ_l[:, :n_{l−1}]` (n×n_{l−1}), what the backward pass sends below layer
    /// `l ≥ 1`: the block read without its bias column.
    fn mlp_sent_down(&self, net: &Network, w: &Buf, delta: u64, n: usize, l: usize) -> Result<Buf> {
        let (fi, fo) = net.fans(l);
        let t = self.alloc_written_f32(n * fi)?;
        self.gemm_strided(
            false,
            false,
            (n, fi, fo),
            1.0,
            (delta, fo),
            (self.ptr_at(w, net.offset(l)), fi + 1),
            0.0,
            (self.ptr(&t), fi),
        )?;
        Ok(t)
    }

    /// The forward R-pass along a joint direction of the weights (the vector at `v`, P
    /// entries) and of the input rows (the matrix at `u`, n×d, the appended 1 not included);
    /// `None` is 0, and at least one must be given:
    /// `R z_l = Ã_{l−1} V_lᵀ + R a_{l−1} Θ_l[:, :n_{l−1}]ᵀ` with `R a_0 = U`,
    /// `R a_l = φ'(z_l) ⊙ R z_l`. Returns `R z_l` (n×n_l) for every layer and `R a_l` (n×n_l)
    /// for the hidden ones.
    fn mlp_forward_r(
        &self,
        net: &Network,
        x: &CudaDesign,
        tape: &Tape<Self>,
        w: &Buf,
        v: Option<u64>,
        u: Option<u64>,
    ) -> Result<(Vec<Buf>, Vec<Buf>)> {
        let n = tape.n;
        let layers = net.layers();
        let mut rz: Vec<Buf> = Vec::with_capacity(layers);
        let mut ra: Vec<Buf> = Vec::with_capacity(layers - 1);
        for l in 0..layers {
            let (fi, fo) = net.fans(l);
            let z = self.alloc_written_f32(n * fo)?;
            let mut beta = 0.0;
            if let Some(v) = v {
                self.gemm_strided(
                    false,
                    true,
                    (n, fo, fi + 1),
                    1.0,
                    (self.mlp_input(x, tape, l)?, fi + 1),
                    (v + 4 * net.offset(l) as u64, fi + 1),
                    0.0,
                    (self.ptr(&z), fo),
                )?;
                beta = 1.0;
            }
            let r_input = if l == 0 {
                u
            } else {
                Some(self.ptr(&ra[l - 1]))
            };
            match r_input {
                Some(r_input) => self.gemm_strided(
                    false,
                    true,
                    (n, fo, fi),
                    1.0,
                    (r_input, fi),
                    (self.ptr_at(w, net.offset(l)), fi + 1),
                    beta,
                    (self.ptr(&z), fo),
                )?,
                None if beta == 0.0 => {
                    return Err(Error::Backend(
                        "internal: an R-pass along no direction".into(),
                    ))
                }
                None => {}
            }
            if l + 1 < layers {
                let r = self.alloc_written_f32(n * fo)?;
                self.mlp_derivative_times(
                    net.activation(),
                    self.ptr(&z),
                    &tape.hidden[l],
                    n,
                    fo,
                    self.ptr(&r),
                )?;
                ra.push(r);
            }
            rz.push(z);
        }
        Ok((rz, ra))
    }

    /// What the backward R-pass reuses for every direction: `s ⊙ δ_l` (`None`: unweighted,
    /// use `δ_l`) and `T_l = δ_l Θ_l[:, :n_{l−1}]` for `l ≥ 1` (`sent[l − 1]`).
    pub(super) fn mlp_r_fixed(
        &self,
        net: &Network,
        data: Data<'_>,
        deltas: &Deltas<Self>,
        w: &Buf,
        n: usize,
    ) -> Result<RPassFixed> {
        let weighted = (0..net.layers())
            .map(|l| self.mlp_weighted(data, &deltas.layers[l], n, net.fans(l).1))
            .collect::<Result<Vec<_>>>()?;
        let sent = (1..net.layers())
            .map(|l| self.mlp_sent_down(net, w, self.ptr(&deltas.layers[l]), n, l))
            .collect::<Result<Vec<_>>>()?;
        Ok(RPassFixed { weighted, sent })
    }

    /// The R-pass of the per-row gradients along the weights `v` and the input rows `u` (the
    /// CPU twin's `r_pass`): the forward R-pass, `R δ_L = (diag p − p pᵀ) R z_L`, then down
    /// the layers `R δ_{l−1} = R T_l ⊙ φ'(a_{l−1}) + T_l ⊙ φ''(a_{l−1}) ⊙ R z_{l−1}` with
    /// `R T_l = R δ_l Θ_l + δ_l V_l` (bias columns left out). With `out = (α, o)` it writes
    /// `o_{Θ_l} ← α Σ_i s_i (R δ_l ⊗ ã_{l−1} + δ_l ⊗ [R a_{l−1}; 0])` (P entries at `o`,
    /// `R a_0 = U`). Returns `R δ_1` (n×n₁), where the input's derivatives start.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mlp_r_pass(
        &self,
        net: &Network,
        data: Data<'_>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Buf,
        fixed: &RPassFixed,
        (v, u): (Option<u64>, Option<u64>),
        out: Option<(f64, u64)>,
    ) -> Result<Buf> {
        let n = tape.n;
        let layers = net.layers();
        let c = net.outputs();
        let (mut rz, ra) = self.mlp_forward_r(net, data.x, tape, w, v, u)?;
        // R δ_L = (diag p − p pᵀ) R z_L, in place, row by row.
        let mut rd = rz
            .pop()
            .ok_or_else(|| Error::Backend("internal: no layers".into()))?;
        self.launch(
            "hg_mlp_softmax_r",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(&tape.probs)),
                Arg::Ptr(self.ptr(&rd)),
                Arg::I32(n as i32),
                Arg::I32(int("classes", c)?),
            ],
        )?;
        for l in (0..layers).rev() {
            let (fi, fo) = net.fans(l);
            if let Some((scale, o)) = out {
                let block = o + 4 * net.offset(l) as u64;
                // (R ∇ℓ)_{Θ_l} = Rδ_l ⊗ ã_{l−1} + δ_l ⊗ [R a_{l−1}; 0], rows weighted by s.
                let rd_weighted = self.mlp_weighted(data, &rd, n, fo)?;
                self.gemm_strided(
                    true,
                    false,
                    (fo, fi + 1, n),
                    scale,
                    (self.ptr(rd_weighted.as_ref().unwrap_or(&rd)), fo),
                    (self.mlp_input(data.x, tape, l)?, fi + 1),
                    0.0,
                    (block, fi + 1),
                )?;
                let r_input = if l == 0 {
                    u
                } else {
                    Some(self.ptr(&ra[l - 1]))
                };
                if let Some(r_input) = r_input {
                    let delta = fixed.weighted[l].as_ref().unwrap_or(&deltas.layers[l]);
                    // The [R a; 0] term leaves the bias column alone: only the first n_{l−1}.
                    self.gemm_strided(
                        true,
                        false,
                        (fo, fi, n),
                        scale,
                        (self.ptr(delta), fo),
                        (r_input, fi),
                        1.0,
                        (block, fi + 1),
                    )?;
                }
            }
            if l == 0 {
                break;
            }
            // R T = Rδ_l Θ_l + δ_l V_l (without bias columns), then in place
            // R δ_{l−1} = R T ⊙ φ'(a) + T ⊙ φ''(a) ⊙ R z_{l−1}.
            let rt = self.alloc_written_f32(n * fi)?;
            self.gemm_strided(
                false,
                false,
                (n, fi, fo),
                1.0,
                (self.ptr(&rd), fo),
                (self.ptr_at(w, net.offset(l)), fi + 1),
                0.0,
                (self.ptr(&rt), fi),
            )?;
            if let Some(v) = v {
                self.gemm_strided(
                    false,
                    false,
                    (n, fi, fo),
                    1.0,
                    (self.ptr(&deltas.layers[l]), fo),
                    (v + 4 * net.offset(l) as u64, fi + 1),
                    1.0,
                    (self.ptr(&rt), fi),
                )?;
            }
            self.launch(
                "hg_mlp_backprop_r",
                grid_1d(n * fi),
                &[
                    Arg::Ptr(self.ptr(&rt)),
                    Arg::Ptr(self.ptr(&fixed.sent[l - 1])),
                    Arg::Ptr(self.ptr(&tape.hidden[l - 1])),
                    Arg::Ptr(self.ptr(&rz[l - 1])),
                    Arg::I32(n as i32),
                    Arg::I32(int("layer width", fi)?),
                    Arg::I32(act_code(net.activation())),
                    Arg::Ptr(self.ptr(&rt)),
                ],
            )?;
            rd = rt;
        }
        Ok(rd)
    }
}

/// What the backward R-pass reuses for every direction ([`CudaBackend::mlp_r_fixed`]).
pub(super) struct RPassFixed {
    /// `s ⊙ δ_l` per layer, `None` when the loss is unweighted.
    pub(super) weighted: Vec<Option<Buf>>,
    /// `T_l = δ_l Θ_l[:, :n_{l−1}]` for `l = 1, …, L−1` (index `l − 1`).
    pub(super) sent: Vec<Buf>,
}

impl MlpOps for CudaBackend {
    fn mlp_forward(&self, net: &Network, data: Data<'_>, w: &Buf) -> Result<Tape<Self>> {
        let n = self.mlp_check(net, data, w)?;
        let x = data.x;
        let layers = net.layers();
        let c = net.outputs();
        let mut tape = Tape {
            n,
            input: self.mlp_gather(data)?,
            hidden: Vec::with_capacity(layers - 1),
            probs: self.alloc_written_f32(n * c)?,
            losses: self.alloc_written_f32(n)?,
        };
        for l in 0..layers {
            let (fi, fo) = net.fans(l);
            let input = self.mlp_input(x, &tape, l)?;
            let block = (self.ptr_at(w, net.offset(l)), fi + 1);
            if l + 1 < layers {
                // Z_l = Ã_{l−1} Θ_lᵀ into the first n_l columns of Ã_l, then [φ(Z_l) | 1].
                let a = self.alloc_written_f32(n * (fo + 1))?;
                self.gemm_strided(
                    false,
                    true,
                    (n, fo, fi + 1),
                    1.0,
                    (input, fi + 1),
                    block,
                    0.0,
                    (self.ptr(&a), fo + 1),
                )?;
                self.launch(
                    "hg_mlp_activate",
                    grid_1d(n * (fo + 1)),
                    &[
                        Arg::Ptr(self.ptr(&a)),
                        Arg::I32(n as i32),
                        Arg::I32(int("layer width", fo)?),
                        Arg::I32(act_code(net.activation())),
                    ],
                )?;
                tape.hidden.push(a);
            } else {
                // The logits, replaced in place by their softmax below.
                self.gemm_strided(
                    false,
                    true,
                    (n, c, fi + 1),
                    1.0,
                    (input, fi + 1),
                    block,
                    0.0,
                    (self.ptr(&tape.probs), c),
                )?;
            }
        }
        self.launch(
            "hg_mlp_softmax_ce",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(&tape.probs)),
                Arg::Ptr(self.ptr(data.y)),
                self.mlp_rows(data),
                Arg::I32(n as i32),
                Arg::I32(int("classes", c)?),
                Arg::Ptr(self.ptr(&tape.losses)),
            ],
        )?;
        Ok(tape)
    }

    fn mlp_loss(&self, data: Data<'_>, tape: &Tape<Self>) -> Result<f64> {
        check_len("tape losses", tape.losses.len(), tape.n)?;
        if let Some(s) = data.weights {
            check_len("row weights", s.len(), data.x.n)?;
        }
        let total = self.alloc_f64_zeros(1)?;
        self.launch(
            "hg_mlp_weighted_sum",
            grid_1d(tape.n),
            &[
                Arg::Ptr(self.ptr(&tape.losses)),
                self.opt(data.weights),
                self.mlp_rows(data),
                Arg::I32(int("rows", tape.n)?),
                Arg::Ptr(self.ptr(&total)),
            ],
        )?;
        Ok(self.read_f64(&total)?[0])
    }

    fn mlp_backward(
        &self,
        net: &Network,
        data: Data<'_>,
        tape: &Tape<Self>,
        w: &Buf,
    ) -> Result<Deltas<Self>> {
        let n = self.mlp_check(net, data, w)?;
        let c = net.outputs();
        check_len("tape probabilities", tape.probs.len(), n * c)?;
        let layers = net.layers();
        // δ_L = p − e_y, then δ_{l−1} = φ'(a_{l−1}) ⊙ δ_l Θ_l[:, :n_{l−1}], top down.
        let top = self.alloc_written_f32(n * c)?;
        self.launch(
            "hg_mlp_output_delta",
            grid_1d(n * c),
            &[
                Arg::Ptr(self.ptr(&tape.probs)),
                Arg::Ptr(self.ptr(data.y)),
                self.mlp_rows(data),
                Arg::I32(n as i32),
                Arg::I32(int("classes", c)?),
                Arg::Ptr(self.ptr(&top)),
            ],
        )?;
        let mut above = self.ptr(&top);
        let mut top_down = vec![top];
        for l in (1..layers).rev() {
            let (fi, _) = net.fans(l);
            let below = self.mlp_sent_down(net, w, above, n, l)?;
            above = self.ptr(&below);
            self.mlp_derivative_times(net.activation(), above, &tape.hidden[l - 1], n, fi, above)?;
            top_down.push(below);
        }
        top_down.reverse();
        Ok(Deltas { layers: top_down })
    }

    fn mlp_gradient(
        &self,
        net: &Network,
        data: Data<'_>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        scale: f64,
        grad: &mut Buf,
    ) -> Result<()> {
        check_len("gradient", grad.len(), net.dim())?;
        check_deltas(net, deltas, tape.n)?;
        let n = tape.n;
        for l in 0..net.layers() {
            let (fi, fo) = net.fans(l);
            let weighted = self.mlp_weighted(data, &deltas.layers[l], n, fo)?;
            let delta = weighted.as_ref().unwrap_or(&deltas.layers[l]);
            // ∇_{Θ_l} = scale · (s ⊙ δ_l)ᵀ Ã_{l−1}.
            self.gemm_strided(
                true,
                false,
                (fo, fi + 1, n),
                scale,
                (self.ptr(delta), fo),
                (self.mlp_input(data.x, tape, l)?, fi + 1),
                0.0,
                (self.ptr_at(grad, net.offset(l)), fi + 1),
            )?;
        }
        Ok(())
    }

    fn mlp_per_sample_gradients(
        &self,
        net: &Network,
        data: Data<'_>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        coef: Option<&Buf>,
        out: &mut Buf,
    ) -> Result<()> {
        let n = tape.n;
        let dim = net.dim();
        check_len("per-sample gradients", out.len(), n * dim)?;
        if let Some(c) = coef {
            check_len("per-sample coefficients", c.len(), n)?;
        }
        check_deltas(net, deltas, n)?;
        for l in 0..net.layers() {
            let (fi, fo) = net.fans(l);
            self.launch(
                "hg_mlp_outer_rows",
                grid_1d(n * net.block_len(l)),
                &[
                    Arg::Ptr(self.ptr(&deltas.layers[l])),
                    Arg::I32(int("layer width", fo)?),
                    Arg::Ptr(self.mlp_input(data.x, tape, l)?),
                    Arg::I32(int("layer input width", fi + 1)?),
                    self.opt(coef),
                    Arg::I32(int("rows", n)?),
                    Arg::I32(int("network parameters", dim)?),
                    Arg::I32(int("layer offset", net.offset(l))?),
                    Arg::Ptr(self.ptr(out)),
                ],
            )?;
        }
        Ok(())
    }

    fn mlp_directional(
        &self,
        net: &Network,
        data: Data<'_>,
        tape: &Tape<Self>,
        w: &Buf,
        q: &Buf,
    ) -> Result<Vec<f64>> {
        let n = self.mlp_check(net, data, w)?;
        check_len("direction", q.len(), net.dim())?;
        let c = net.outputs();
        let (rz, _) = self.mlp_forward_r(net, data.x, tape, w, Some(self.ptr(q)), None)?;
        let out = self.alloc_f64_zeros(n)?;
        self.launch(
            "hg_mlp_directional",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(&tape.probs)),
                Arg::Ptr(self.ptr(data.y)),
                self.mlp_rows(data),
                Arg::Ptr(self.ptr(&rz[net.layers() - 1])),
                Arg::I32(n as i32),
                Arg::I32(int("classes", c)?),
                Arg::Ptr(self.ptr(&out)),
            ],
        )?;
        let mut r = self.read_f64(&out)?;
        r.truncate(n);
        Ok(r)
    }

    fn mlp_hvp(
        &self,
        net: &Network,
        data: Data<'_>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Buf,
        scale: f64,
        shift: f64,
        v: &Buf,
        out: &mut Buf,
    ) -> Result<()> {
        let n = self.mlp_check(net, data, w)?;
        let dim = net.dim();
        check_len("hvp output", out.len(), v.len())?;
        if v.len() % dim != 0 {
            return Err(Error::Dimension(format!(
                "hvp batch: {} entries are not a multiple of P = {dim}",
                v.len()
            )));
        }
        check_deltas(net, deltas, n)?;
        let c = net.outputs();
        let fixed = self.mlp_r_fixed(net, data, deltas, w, n)?;
        let (bias_start, bias_stride) = net.output_bias();
        for b in 0..v.len() / dim {
            let (vb, ob) = (self.ptr_at(v, b * dim), self.ptr_at(out, b * dim));
            self.mlp_r_pass(
                net,
                data,
                tape,
                deltas,
                w,
                &fixed,
                (Some(vb), None),
                Some((scale, ob)),
            )?;
            if shift != 0.0 {
                // shift (uᵀv) u with u = 1/√c on the output bias.
                self.launch(
                    "hg_mlp_bias_shift",
                    ONE_WARP,
                    &[
                        Arg::Ptr(vb),
                        Arg::Ptr(ob),
                        Arg::I32(int("output bias", bias_start)?),
                        Arg::I32(int("output bias stride", bias_stride)?),
                        Arg::I32(int("classes", c)?),
                        Arg::F32(shift as f32),
                    ],
                )?;
            }
        }
        Ok(())
    }

    fn mlp_kfac_factors(
        &self,
        net: &Network,
        data: Data<'_>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        alpha: f64,
        beta: f64,
        aa: &mut [Buf],
        gg: &mut [Buf],
    ) -> Result<()> {
        let layers = net.layers();
        if aa.len() != layers || gg.len() != layers {
            return Err(Error::Dimension(format!(
                "K-FAC factors: {} input and {} gradient factors for {layers} layers",
                aa.len(),
                gg.len()
            )));
        }
        let n = tape.n;
        check_deltas(net, deltas, n)?;
        for l in 0..layers {
            let (fi, fo) = net.fans(l);
            check_len("K-FAC input factor", aa[l].len(), (fi + 1) * (fi + 1))?;
            check_len("K-FAC gradient factor", gg[l].len(), fo * fo)?;
            let input = self.mlp_input(data.x, tape, l)?;
            // AA_l ← α Ã_{l−1}ᵀ Ã_{l−1} + β AA_l.
            self.gemm_strided(
                true,
                false,
                (fi + 1, fi + 1, n),
                alpha,
                (input, fi + 1),
                (input, fi + 1),
                beta,
                (self.ptr(&aa[l]), fi + 1),
            )?;
            // GG_l ← α (s ⊙ δ_l)ᵀ δ_l + β GG_l.
            let delta = &deltas.layers[l];
            let weighted = self.mlp_weighted(data, delta, n, fo)?;
            self.gemm_strided(
                true,
                false,
                (fo, fo, n),
                alpha,
                (self.ptr(weighted.as_ref().unwrap_or(delta)), fo),
                (self.ptr(delta), fo),
                beta,
                (self.ptr(&gg[l]), fo),
            )?;
        }
        Ok(())
    }

    fn copy_range(
        &self,
        src: &Buf,
        src_offset: usize,
        dst: &mut Buf,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        if src_offset + len > src.len() || dst_offset + len > dst.len() {
            return Err(Error::Dimension(format!(
                "copy_range: {len} entries from {src_offset} of {} into {dst_offset} of {}",
                src.len(),
                dst.len()
            )));
        }
        if len == 0 {
            return Ok(());
        }
        self.stream
            .memcpy_dtod(
                &src.slice(src_offset..src_offset + len),
                &mut dst.slice_mut(dst_offset..dst_offset + len),
            )
            .map_err(crate::backend::cuda::driver_error)
    }
}

/// The deltas of a pass: one buffer of n×n_l per layer.
pub(super) fn check_deltas(net: &Network, deltas: &Deltas<CudaBackend>, n: usize) -> Result<()> {
    if deltas.layers.len() != net.layers() {
        return Err(Error::Dimension(format!(
            "{} layers of pre-activation gradients for a network of {}",
            deltas.layers.len(),
            net.layers()
        )));
    }
    for (l, d) in deltas.layers.iter().enumerate() {
        check_len("pre-activation gradients", d.len(), n * net.fans(l).1)?;
    }
    Ok(())
}
