//! [`ProxOps`] on the CUDA backend: launches of `cuda/prox.cu`. The design is densified on
//! the device, column-major f32 (see the module documentation of [`super`] for why).

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::{
    check_forward_sweep, check_jacobian, check_step, check_sweep, coords_len, ProxOps, SweepPenalty,
};
use crate::backend::cuda::{grid_1d, int, Arg, CudaBackend, CudaRows, NULL};
use crate::backend::shape::check_len;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::l1::{Design, L1Kind};

/// A design on the device, dense column-major f32: entry (i, j) at `i + j·n`.
pub struct CudaCols {
    n: usize,
    d: usize,
    data: CudaSlice<f32>,
}

/// One block of 256 threads: the launch of the sequential sweeps.
fn one_block() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per column, at most 4096 (the kernel loops over the rest).
fn block_per_column(m: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (m.clamp(1, 4096) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    /// The device address of a coordinate set (null for all d columns), checked against d.
    fn coords_arg(&self, coords: Option<&CudaRows>, d: usize) -> Result<Arg> {
        match coords {
            None => Ok(NULL),
            Some(c) => {
                c.check_fits(d)?;
                Ok(Arg::Ptr(self.rows_ptr(c)))
            }
        }
    }

    /// Reads back the two maxima a sweep leaves in `stats`.
    fn sweep_stats(&self, stats: &CudaSlice<f32>) -> Result<(f64, f64)> {
        let host = self.download(stats)?;
        Ok((host[0], host[1]))
    }
}

fn kind_code(kind: L1Kind) -> i32 {
    match kind {
        L1Kind::Lasso => 0,
        L1Kind::Enet => 1,
        L1Kind::Wlasso => 2,
    }
}

impl ProxOps for CudaBackend {
    type Cols = CudaCols;

    fn upload_cols(&self, x: &Design) -> Result<CudaCols> {
        let (n, d) = (x.n(), x.d());
        int("design rows", n)?;
        int("design columns", d)?;
        let bytes = (n as u64).saturating_mul(d as u64).saturating_mul(4);
        if let Some((room, _)) = self.memory_room() {
            if bytes > room {
                return Err(Error::Backend(format!(
                    "the {n}×{d} design densified on the device needs {bytes} bytes, {room} are free; use --device cpu, which keeps it sparse"
                )));
            }
        }
        let mut host = vec![0.0f32; n * d];
        match x {
            Design::Dense { data, .. } => {
                host.iter_mut().zip(data).for_each(|(h, v)| *h = *v as f32);
            }
            Design::Sparse(m) => {
                for j in 0..d {
                    let (idx, val) = m.col(j);
                    for (&i, v) in idx.iter().zip(val) {
                        host[i + j * n] = *v as f32;
                    }
                }
            }
        }
        Ok(CudaCols {
            n,
            d,
            data: self.upload_f32(&host)?,
        })
    }

    fn cols_shape(&self, x: &CudaCols) -> (usize, usize) {
        (x.n, x.d)
    }

    fn cols_gemv(
        &self,
        x: &CudaCols,
        coords: Option<&CudaRows>,
        alpha: f64,
        v: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let m = coords_len(self, coords, x.d);
        check_len("cols_gemv v", v.len(), m)?;
        check_len("cols_gemv out", out.len(), x.n)?;
        let c = self.coords_arg(coords, x.d)?;
        self.launch(
            "hg_cols_gemv",
            grid_1d(x.n),
            &[
                Arg::Ptr(self.ptr(&x.data)),
                Arg::I32(int("n", x.n)?),
                c,
                Arg::I32(int("m", m)?),
                Arg::F32(alpha as f32),
                Arg::Ptr(self.ptr(v)),
                Arg::Ptr(self.ptr(out)),
            ],
        )
    }

    fn cols_gemv_t(
        &self,
        x: &CudaCols,
        coords: Option<&CudaRows>,
        r: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let m = coords_len(self, coords, x.d);
        check_len("cols_gemv_t r", r.len(), x.n)?;
        check_len("cols_gemv_t out", out.len(), m)?;
        let c = self.coords_arg(coords, x.d)?;
        self.launch(
            "hg_cols_gemv_t",
            block_per_column(m),
            &[
                Arg::Ptr(self.ptr(&x.data)),
                Arg::I32(int("n", x.n)?),
                c,
                Arg::I32(int("m", m)?),
                Arg::Ptr(self.ptr(r)),
                Arg::Ptr(self.ptr(out)),
            ],
        )
    }

    fn cd_sweep(
        &self,
        x: &CudaCols,
        coords: Option<&CudaRows>,
        lips: &CudaSlice<f32>,
        pen: &SweepPenalty<Self>,
        w: &mut CudaSlice<f32>,
        r: &mut CudaSlice<f32>,
    ) -> Result<(f64, f64)> {
        check_sweep(self, "cd_sweep", (x.n, x.d), [lips, pen.l1, w], r)?;
        let m = coords_len(self, coords, x.d);
        let c = self.coords_arg(coords, x.d)?;
        let stats = self.zeros(2)?;
        self.launch(
            "hg_cd_sweep",
            one_block(),
            &[
                Arg::Ptr(self.ptr(&x.data)),
                Arg::I32(int("n", x.n)?),
                c,
                Arg::I32(int("m", m)?),
                Arg::Ptr(self.ptr(lips)),
                Arg::Ptr(self.ptr(pen.l1)),
                Arg::F32(pen.l2 as f32),
                Arg::Ptr(self.ptr(w)),
                Arg::Ptr(self.ptr(r)),
                Arg::Ptr(self.ptr(&stats)),
            ],
        )?;
        self.sweep_stats(&stats)
    }

    fn cd_forward_sweep(
        &self,
        x: &CudaCols,
        lips: &CudaSlice<f32>,
        pen: &SweepPenalty<Self>,
        w: &mut CudaSlice<f32>,
        r: &mut CudaSlice<f32>,
        jac: &mut CudaSlice<f32>,
        jr: &mut CudaSlice<f32>,
        live: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (n, d) = (x.n, x.d);
        let p = check_forward_sweep(
            self,
            pen.kind,
            (n, d),
            [lips, pen.l1, w, r],
            [jac, jr, live],
        )?;
        self.launch(
            "hg_cd_forward_sweep",
            one_block(),
            &[
                Arg::Ptr(self.ptr(&x.data)),
                Arg::I32(int("n", n)?),
                Arg::I32(int("d", d)?),
                Arg::I32(kind_code(pen.kind)),
                Arg::I32(int("p", p)?),
                Arg::Ptr(self.ptr(lips)),
                Arg::Ptr(self.ptr(pen.l1)),
                Arg::F32(pen.l2 as f32),
                Arg::Ptr(self.ptr(w)),
                Arg::Ptr(self.ptr(r)),
                Arg::Ptr(self.ptr(jac)),
                Arg::Ptr(self.ptr(jr)),
                Arg::Ptr(self.ptr(live)),
            ],
        )
    }

    fn cd_jacobian_sweep(
        &self,
        x: &CudaCols,
        coords: &CudaRows,
        lips: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        l2: f64,
        jac: &mut CudaSlice<f32>,
        res: &mut CudaSlice<f32>,
    ) -> Result<(f64, f64)> {
        let s = coords_len(self, Some(coords), x.d);
        check_len("cd_jacobian_sweep lips", lips.len(), s)?;
        if s == 0 {
            return Ok((0.0, 0.0));
        }
        let c = jac.len() / s;
        check_len("cd_jacobian_sweep jac", jac.len(), c * s)?;
        check_len("cd_jacobian_sweep b", b.len(), c * s)?;
        check_len("cd_jacobian_sweep res", res.len(), c * x.n)?;
        let coords_ptr = self.coords_arg(Some(coords), x.d)?;
        let stats = self.zeros(2)?;
        self.launch(
            "hg_cd_jacobian_sweep",
            one_block(),
            &[
                Arg::Ptr(self.ptr(&x.data)),
                Arg::I32(int("n", x.n)?),
                coords_ptr,
                Arg::I32(int("s", s)?),
                Arg::I32(int("c", c)?),
                Arg::Ptr(self.ptr(lips)),
                Arg::Ptr(self.ptr(b)),
                Arg::F32(l2 as f32),
                Arg::Ptr(self.ptr(jac)),
                Arg::Ptr(self.ptr(res)),
                Arg::Ptr(self.ptr(&stats)),
            ],
        )?;
        self.sweep_stats(&stats)
    }

    fn prox_step(
        &self,
        v: &CudaSlice<f32>,
        grad: &CudaSlice<f32>,
        l1: &CudaSlice<f32>,
        eta: f64,
        w: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let d = check_step(self, [v, grad, l1], w)?;
        self.launch(
            "hg_prox_step",
            grid_1d(d),
            &[
                Arg::Ptr(self.ptr(v)),
                Arg::Ptr(self.ptr(grad)),
                Arg::Ptr(self.ptr(l1)),
                Arg::I32(int("len", d)?),
                Arg::F32(eta as f32),
                Arg::Ptr(self.ptr(w)),
            ],
        )
    }

    fn prox_jacobian(
        &self,
        w: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        jv: &CudaSlice<f32>,
        dgrad: &CudaSlice<f32>,
        gsm: &CudaSlice<f32>,
        l1: &CudaSlice<f32>,
        dl1: &CudaSlice<f32>,
        eta: f64,
        deta: &[f64],
        dl2: &[f64],
        jw: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (d, m) = check_jacobian(self, [w, v, gsm, l1], [jv, dgrad, dl1, jw], deta, dl2)?;
        let host: Vec<f32> = deta.iter().chain(dl2).map(|&x| x as f32).collect();
        let coef_dev = self.upload_f32(&host)?;
        self.launch(
            "hg_prox_jacobian",
            grid_1d(d * m),
            &[
                Arg::Ptr(self.ptr(w)),
                Arg::Ptr(self.ptr(v)),
                Arg::Ptr(self.ptr(jv)),
                Arg::Ptr(self.ptr(dgrad)),
                Arg::Ptr(self.ptr(gsm)),
                Arg::Ptr(self.ptr(l1)),
                Arg::Ptr(self.ptr(dl1)),
                Arg::I32(int("len", d)?),
                Arg::I32(int("m", m)?),
                Arg::F32(eta as f32),
                Arg::Ptr(self.ptr(&coef_dev)),
                Arg::Ptr(self.ptr(jw)),
            ],
        )
    }
}
