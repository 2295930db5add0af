//! [`ProxOps`] on the CUDA backend: launches of `cuda/prox.cu`.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::ProxOps;
use crate::backend::cuda::{driver_error, grid_1d, int, Arg, CudaBackend};
use crate::backend::shape::{check_len, check_prox};
use crate::error::{Error, Result};

impl CudaBackend {
    /// Launches a kernel of `cuda/prox.cu` (the same as `ops.rs`'s launcher).
    fn launch_prox(&self, name: &str, n: usize, args: &[Arg]) -> Result<()> {
        let function = self.kernels.get(name)?;
        let mut builder = self.stream.launch_builder(function);
        for arg in args {
            match arg {
                Arg::Ptr(p) => builder.arg(p),
                Arg::I32(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
            };
        }
        // SAFETY: the callers below pass the arguments in the order and with the types of
        // the kernel signatures in cuda/prox.cu, after checking every buffer's length against
        // the sizes passed.
        unsafe { builder.launch(grid_1d(n)) }
            .map(|_| ())
            .map_err(|e| Error::Backend(format!("launching {name}: {e}")))
    }
}

impl ProxOps for CudaBackend {
    fn prox_step(
        &self,
        v: &CudaSlice<f32>,
        grad: &CudaSlice<f32>,
        l1: &CudaSlice<f32>,
        eta: f64,
        w: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let d = w.len();
        check_prox(
            "prox_step",
            d,
            0,
            &[("v", v.len()), ("grad", grad.len()), ("l1", l1.len())],
            &[],
        )?;
        self.launch_prox(
            "hg_prox_step",
            d,
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
        let d = w.len();
        let m = deta.len();
        check_len("prox_jacobian dl2", dl2.len(), m)?;
        check_prox(
            "prox_jacobian",
            d,
            m,
            &[("v", v.len()), ("gsm", gsm.len()), ("l1", l1.len())],
            &[
                ("jv", jv.len()),
                ("dgrad", dgrad.len()),
                ("dl1", dl1.len()),
                ("jw", jw.len()),
            ],
        )?;
        let host: Vec<f32> = deta.iter().chain(dl2).map(|&x| x as f32).collect();
        let coef_dev = self.stream.clone_htod(&host).map_err(driver_error)?;
        self.count_transfer();
        self.launch_prox(
            "hg_prox_jacobian",
            d * m,
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
