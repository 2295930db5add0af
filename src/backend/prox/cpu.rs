//! CPU twins of `cuda/prox.cu` ([`ProxOps`] for the CPU backend): the same expressions in
//! the same order, in the backend's precision `T`.

use super::{check_jacobian, check_step, ProxOps};
use crate::backend::cpu::{CpuBackend, Real};
use crate::error::Result;

impl<T: Real> ProxOps for CpuBackend<T> {
    fn prox_step(
        &self,
        v: &Vec<T>,
        grad: &Vec<T>,
        l1: &Vec<T>,
        eta: f64,
        w: &mut Vec<T>,
    ) -> Result<()> {
        let d = check_step(self, [v, grad, l1], w)?;
        let eta = T::from_f64(eta);
        let zero = T::from_f64(0.0);
        for j in 0..d {
            let z = v[j] - eta * grad[j];
            let t = eta * l1[j];
            w[j] = if z > t {
                z - t
            } else if z < zero - t {
                z + t
            } else {
                zero
            };
        }
        Ok(())
    }

    fn prox_jacobian(
        &self,
        w: &Vec<T>,
        v: &Vec<T>,
        jv: &Vec<T>,
        dgrad: &Vec<T>,
        gsm: &Vec<T>,
        l1: &Vec<T>,
        dl1: &Vec<T>,
        eta: f64,
        deta: &[f64],
        dl2: &[f64],
        jw: &mut Vec<T>,
    ) -> Result<()> {
        let (d, _) = check_jacobian(self, [w, v, gsm, l1], [jv, dgrad, dl1, jw], deta, dl2)?;
        let eta = T::from_f64(eta);
        let zero = T::from_f64(0.0);
        for (k, (&dk, &d2)) in deta.iter().zip(dl2).enumerate() {
            let dk = T::from_f64(dk);
            let d2 = T::from_f64(d2);
            for j in 0..d {
                let e = k * d + j;
                jw[e] = if w[j] != zero {
                    let s = if w[j] > zero {
                        T::from_f64(1.0)
                    } else {
                        T::from_f64(-1.0)
                    };
                    let g = dgrad[e] + d2 * v[j];
                    let dz = jv[e] - eta * g - gsm[j] * dk;
                    let shrink = l1[j] * dk + eta * dl1[e];
                    dz - s * shrink
                } else {
                    zero
                };
            }
        }
        Ok(())
    }
}
