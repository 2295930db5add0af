//! [`ProxOps`] on the CUDA backend: launches of `cuda/prox.cu`.

use cudarc::driver::CudaSlice;

use super::{check_jacobian, check_step, ProxOps};
use crate::backend::cuda::{grid_1d, int, Arg, CudaBackend};
use crate::error::Result;

impl ProxOps for CudaBackend {
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
