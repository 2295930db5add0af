//! The CPU twin of [`MlpInputOps`]: both products are the Hessian-vector product's R-pass of
//! [`super::cpu`] along another direction (module docs of [`super::input`]).

use super::cpu::{check_data, r_pass, r_sent_down, row_weights, zip_rows, RDirection, RPassFixed};
use super::input::MlpInputOps;
use super::{Deltas, MlpData, Network, Tape};
use crate::backend::cpu::{CpuBackend, Real};
use crate::backend::shape::check_len;
use crate::error::Result;

impl<T: Real> MlpInputOps for CpuBackend<T> {
    fn mlp_input_cross(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Vec<T>,
        scale: f64,
        u: &Vec<T>,
        out: &mut Vec<T>,
    ) -> Result<()> {
        let n = check_data(net, data, w)?;
        let d = net.inputs();
        check_len("input perturbation", u.len(), n * d)?;
        check_len("input cross derivative", out.len(), net.dim())?;
        // R Ã₀ = [U | 0]: the appended 1 does not move.
        let mut ra0 = vec![T::zero(); n * (d + 1)];
        zip_rows(&mut ra0, d + 1, u, d, |_, r, ur| r[..d].copy_from_slice(ur));
        let fixed = RPassFixed::new(net, data, deltas, w, n);
        let direction = RDirection {
            weights: None,
            input: Some(&ra0),
        };
        let scale = T::from_f64(scale);
        r_pass(
            net,
            data,
            tape,
            deltas,
            w,
            &fixed,
            direction,
            Some((scale, out.as_mut_slice())),
        );
        Ok(())
    }

    fn mlp_input_cross_t(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Vec<T>,
        scale: f64,
        q: &Vec<T>,
        out: &mut Vec<T>,
    ) -> Result<()> {
        let n = check_data(net, data, w)?;
        let d = net.inputs();
        check_len("weight direction", q.len(), net.dim())?;
        check_len("input cross derivative", out.len(), n * d)?;
        let fixed = RPassFixed::new(net, data, deltas, w, n);
        let direction = RDirection {
            weights: Some(q),
            input: None,
        };
        // R δ_1 along q, then one more step down: R_q{Θ_1ᵀ δ_1} = Θ_1ᵀ R δ_1 + Q_1ᵀ δ_1, whose
        // first d entries are R_q{∇_x ℓ} (no activation at the input).
        let rd1 = r_pass(net, data, tape, deltas, w, &fixed, direction, None);
        let rt = r_sent_down(net, deltas, w, Some(q), &rd1, n, 0);
        let s = row_weights(data, n);
        let scale = T::from_f64(scale);
        zip_rows(out, d, &rt, d + 1, |i, o, r| {
            let si = s.as_ref().map_or(T::one(), |s| s[i]);
            for (ok, &rk) in o.iter_mut().zip(&r[..d]) {
                *ok = scale * si * rk;
            }
        });
        Ok(())
    }
}
