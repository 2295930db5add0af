//! CPU twins of `cuda/prox.cu` ([`ProxOps`] for the CPU backend): the same expressions in
//! the same order, in the backend's precision `T`. The design stays the host's [`Design`]
//! (dense column-major or CSC, values in f64, rounded to `T` as they are read), so that a
//! sparse design is never densified on the CPU; in f64 the sweeps are the host loops of
//! coordinate descent exactly.

use super::{
    check_forward_sweep, check_jacobian, check_step, check_sweep, coords_len, dl1_factor,
    dl2_factor, ProxOps, SweepPenalty,
};
use crate::backend::cpu::{CpuBackend, Real};
use crate::backend::shape::check_len;
use crate::error::{Error, Result};
use crate::l1::Design;

/// `x_jᵀ v` in `T`.
#[inline]
fn col_dot<T: Real>(x: &Design, j: usize, v: &[T]) -> T {
    let mut acc = T::from_f64(0.0);
    match x {
        Design::Dense { n, data, .. } => {
            for (a, b) in data[j * n..(j + 1) * n].iter().zip(v) {
                acc += T::from_f64(*a) * *b;
            }
        }
        Design::Sparse(m) => {
            let (idx, val) = m.col(j);
            for (&i, a) in idx.iter().zip(val) {
                acc += T::from_f64(*a) * v[i];
            }
        }
    }
    acc
}

/// `v ← v + a·x_j` in `T`.
#[inline]
fn col_axpy<T: Real>(x: &Design, j: usize, a: T, v: &mut [T]) {
    match x {
        Design::Dense { n, data, .. } => {
            for (vi, c) in v.iter_mut().zip(&data[j * n..(j + 1) * n]) {
                *vi += a * T::from_f64(*c);
            }
        }
        Design::Sparse(m) => {
            let (idx, val) = m.col(j);
            for (&i, c) in idx.iter().zip(val) {
                v[i] += a * T::from_f64(*c);
            }
        }
    }
}

/// `ST(z, t)` in `T`.
#[inline]
fn soft<T: Real>(z: T, t: T) -> T {
    let zero = T::from_f64(0.0);
    if z > t {
        z - t
    } else if z < zero - t {
        z + t
    } else {
        zero
    }
}

/// The coordinate step of both sweeps: `u = x_jᵀr/n + L_j w_j`, `w_j⁺ = ST(u, λ_j)/(L_j + λ₂)`,
/// `r ← r − x_j(w_j⁺ − w_j)`. Returns `(w_j, w_j⁺)`.
#[inline]
fn cd_step<T: Real>(
    x: &Design,
    j: usize,
    (lj, l1j, l2): (T, T, T),
    w: &mut [T],
    r: &mut [T],
) -> (T, T) {
    let old = w[j];
    let u = col_dot(x, j, r) / T::from_f64(r.len() as f64) + lj * old;
    let new = soft(u, l1j) / (lj + l2);
    if new != old {
        col_axpy(x, j, old - new, r);
        w[j] = new;
    }
    (old, new)
}

fn abs<T: Real>(a: T) -> f64 {
    a.to_f64().abs()
}

fn sign<T: Real>(a: T) -> T {
    T::from_f64(if a > T::from_f64(0.0) { 1.0 } else { -1.0 })
}

/// The column indices of a coordinate set (all d when `None`), checked against d.
fn columns(coords: Option<&Vec<usize>>, d: usize) -> Result<Vec<usize>> {
    match coords {
        Some(c) => match c.iter().find(|&&j| j >= d) {
            Some(j) => Err(Error::Dimension(format!("column {j} is not below {d}"))),
            None => Ok(c.clone()),
        },
        None => Ok((0..d).collect()),
    }
}

impl<T: Real> ProxOps for CpuBackend<T> {
    type Cols = Design;

    fn upload_cols(&self, x: &Design) -> Result<Design> {
        Ok(x.clone())
    }

    fn cols_shape(&self, x: &Design) -> (usize, usize) {
        (x.n(), x.d())
    }

    fn cols_gemv(
        &self,
        x: &Design,
        coords: Option<&Vec<usize>>,
        alpha: f64,
        v: &Vec<T>,
        out: &mut Vec<T>,
    ) -> Result<()> {
        let cols = columns(coords, x.d())?;
        check_len("cols_gemv v", v.len(), cols.len())?;
        check_len("cols_gemv out", out.len(), x.n())?;
        let alpha = T::from_f64(alpha);
        let zero = T::from_f64(0.0);
        for (&j, &va) in cols.iter().zip(v.iter()) {
            if va != zero {
                col_axpy(x, j, alpha * va, out);
            }
        }
        Ok(())
    }

    fn cols_gemv_t(
        &self,
        x: &Design,
        coords: Option<&Vec<usize>>,
        r: &Vec<T>,
        out: &mut Vec<T>,
    ) -> Result<()> {
        let cols = columns(coords, x.d())?;
        check_len("cols_gemv_t r", r.len(), x.n())?;
        check_len("cols_gemv_t out", out.len(), cols.len())?;
        for (o, &j) in out.iter_mut().zip(&cols) {
            *o = col_dot(x, j, r);
        }
        Ok(())
    }

    fn cd_sweep(
        &self,
        x: &Design,
        coords: Option<&Vec<usize>>,
        lips: &Vec<T>,
        pen: &SweepPenalty<Self>,
        w: &mut Vec<T>,
        r: &mut Vec<T>,
    ) -> Result<(f64, f64)> {
        check_sweep(self, "cd_sweep", (x.n(), x.d()), [lips, pen.l1, w], r)?;
        let cols = columns(coords, x.d())?;
        let (l2, zero) = (T::from_f64(pen.l2), T::from_f64(0.0));
        let (mut max_change, mut max_w) = (0.0f64, 0.0f64);
        for j in cols {
            let lj = lips[j];
            if !(lj > zero) {
                continue;
            }
            let (old, new) = cd_step(x, j, (lj, pen.l1[j], l2), w, r);
            max_change = max_change.max(abs(new - old));
            max_w = max_w.max(abs(new));
        }
        Ok((max_change, max_w))
    }

    fn cd_forward_sweep(
        &self,
        x: &Design,
        lips: &Vec<T>,
        pen: &SweepPenalty<Self>,
        w: &mut Vec<T>,
        r: &mut Vec<T>,
        jac: &mut Vec<T>,
        jr: &mut Vec<T>,
        live: &mut Vec<T>,
    ) -> Result<()> {
        let (n, d) = (x.n(), x.d());
        let p = check_forward_sweep(
            self,
            pen.kind,
            (n, d),
            [lips, pen.l1, w, r],
            [jac, jr, live],
        )?;
        let (nf, l2, zero, one) = (
            T::from_f64(n as f64),
            T::from_f64(pen.l2),
            T::from_f64(0.0),
            T::from_f64(1.0),
        );
        let wlasso = pen.kind == crate::l1::L1Kind::Wlasso;
        for j in 0..d {
            let lj = lips[j];
            if !(lj > zero) {
                continue;
            }
            let (_, new) = cd_step(x, j, (lj, pen.l1[j], l2), w, r);
            if wlasso && new != zero {
                live[j] = one;
            }
            for k in 0..p {
                if live[k] == zero {
                    continue;
                }
                let e = k * d + j;
                let dnew = if new != zero {
                    let du = col_dot(x, j, &jr[k * n..(k + 1) * n]) / nf + lj * jac[e];
                    let dl1 = if dl1_factor(pen.kind, j, k) {
                        pen.l1[j]
                    } else {
                        zero
                    };
                    let dl2 = if dl2_factor(pen.kind, k) { l2 } else { zero };
                    (du - sign(new) * dl1 - new * dl2) / (lj + l2)
                } else {
                    zero
                };
                let delta = dnew - jac[e];
                if delta != zero {
                    col_axpy(x, j, zero - delta, &mut jr[k * n..(k + 1) * n]);
                    jac[e] = dnew;
                }
            }
        }
        Ok(())
    }

    fn cd_jacobian_sweep(
        &self,
        x: &Design,
        coords: &Vec<usize>,
        lips: &Vec<T>,
        b: &Vec<T>,
        l2: f64,
        jac: &mut Vec<T>,
        res: &mut Vec<T>,
    ) -> Result<(f64, f64)> {
        let n = x.n();
        let support = columns(Some(coords), x.d())?;
        let s = coords_len(self, Some(coords), x.d());
        check_len("cd_jacobian_sweep lips", lips.len(), s)?;
        if s == 0 {
            return Ok((0.0, 0.0));
        }
        let c = jac.len() / s;
        check_len("cd_jacobian_sweep jac", jac.len(), c * s)?;
        check_len("cd_jacobian_sweep b", b.len(), c * s)?;
        check_len("cd_jacobian_sweep res", res.len(), c * n)?;
        let (nf, l2, zero) = (T::from_f64(n as f64), T::from_f64(l2), T::from_f64(0.0));
        let (mut max_change, mut max_entry) = (0.0f64, 0.0f64);
        for k in 0..c {
            let rk = &mut res[k * n..(k + 1) * n];
            for (a, &j) in support.iter().enumerate() {
                let e = k * s + a;
                let new = (col_dot(x, j, rk) / nf + lips[a] * jac[e] - b[e]) / (lips[a] + l2);
                let delta = new - jac[e];
                if delta != zero {
                    col_axpy(x, j, zero - delta, rk);
                    jac[e] = new;
                }
                max_change = max_change.max(abs(delta));
                max_entry = max_entry.max(abs(new));
            }
        }
        Ok((max_change, max_entry))
    }

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
