//! [`MlpInputOps`] for [`CudaBackend`]: both products are the Hessian-vector product's R-pass
//! of [`super::cuda`] along another direction (module docs of [`super::input`]), so they are
//! its cuBLAS GEMMs and `cuda/mlp.cu` kernels and nothing new:
//!
//! * `∂_x ∇_w ℓ [u]`: the R-pass with the weights fixed and the input moved, `R a₀ = U`
//!   (n×d, read in place as the first d columns of `R Ã₀ = [U | 0]`, which is never formed);
//! * `∇_x ⟨∇_w ℓ, q⟩`: the R-pass along `q` down to `R δ_1`, then one more step through the
//!   first layer without an activation, `(R δ_1 Θ_1 + δ_1 Q_1)[:, :d]`: two GEMMs that read
//!   the blocks without their bias column and write the n×d output directly. The rows'
//!   weights and the scale enter through the GEMMs' left operands (`s ⊙ R δ_1`, the pass's
//!   `s ⊙ δ_1`) and their α.
//!
//! Parity with the CPU twin in `tests/mlp_cuda_parity.rs` (`input_cross`).

use cudarc::driver::CudaSlice;

use super::cuda::check_deltas;
use super::input::MlpInputOps;
use super::{Deltas, MlpData, Network, Tape};
use crate::backend::cuda::CudaBackend;
use crate::backend::shape::check_len;
use crate::error::Result;

type Buf = CudaSlice<f32>;
type Data<'a> = MlpData<'a, CudaBackend>;

impl MlpInputOps for CudaBackend {
    fn mlp_input_cross(
        &self,
        net: &Network,
        data: Data<'_>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Buf,
        scale: f64,
        u: &Buf,
        out: &mut Buf,
    ) -> Result<()> {
        let n = self.mlp_check(net, data, w)?;
        check_len("input perturbation", u.len(), n * net.inputs())?;
        check_len("input cross derivative", out.len(), net.dim())?;
        check_deltas(net, deltas, n)?;
        let fixed = self.mlp_r_fixed(net, data, deltas, w, n)?;
        self.mlp_r_pass(
            net,
            data,
            tape,
            deltas,
            w,
            &fixed,
            (None, Some(self.ptr(u))),
            Some((scale, self.ptr(out))),
        )?;
        Ok(())
    }

    fn mlp_input_cross_t(
        &self,
        net: &Network,
        data: Data<'_>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Buf,
        scale: f64,
        q: &Buf,
        out: &mut Buf,
    ) -> Result<()> {
        let n = self.mlp_check(net, data, w)?;
        let d = net.inputs();
        check_len("weight direction", q.len(), net.dim())?;
        check_len("input cross derivative", out.len(), n * d)?;
        check_deltas(net, deltas, n)?;
        let fixed = self.mlp_r_fixed(net, data, deltas, w, n)?;
        let rd1 = self.mlp_r_pass(
            net,
            data,
            tape,
            deltas,
            w,
            &fixed,
            (Some(self.ptr(q)), None),
            None,
        )?;
        // out = scale · s ⊙ (R δ_1 Θ_1 + δ_1 Q_1)[:, :d]: R_q{∇_x ℓ}, no activation at the input.
        let n1 = net.fans(0).1;
        let rd1_weighted = self.mlp_weighted(data, &rd1, n, n1)?;
        let delta1 = fixed.weighted[0].as_ref().unwrap_or(&deltas.layers[0]);
        self.gemm_strided(
            false,
            false,
            (n, d, n1),
            scale,
            (self.ptr(rd1_weighted.as_ref().unwrap_or(&rd1)), n1),
            (self.ptr(w), d + 1),
            0.0,
            (self.ptr(out), d),
        )?;
        self.gemm_strided(
            false,
            false,
            (n, d, n1),
            scale,
            (self.ptr(delta1), n1),
            (self.ptr(q), d + 1),
            1.0,
            (self.ptr(out), d),
        )
    }
}
