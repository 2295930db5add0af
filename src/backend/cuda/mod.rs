//! The CUDA backend: the core [`crate::backend::Backend`] (buffers, streams, BLAS-1 as kernels
//! of `cuda/blas1.cu`, GEMM and SYRK by cuBLAS) on one NVIDIA GPU, in f32 (designs optionally
//! stored as bf16), and the launch, allocation and GEMM helpers that the op families' CUDA
//! implementations (`src/backend/{glm,fisher,mlp,prox}/cuda.rs`) are written with.
//!
//! All data stays on the device. The only host transfers are the ones the trait's signature
//! asks for (`upload`, `download`, and the scalar results of reductions such as `dot`); the
//! backend counts them ([`CudaBackend::host_traffic`]) so tests can assert that a loop makes
//! none. The driver library is loaded at run time: [`probe`] looks for it before a context
//! is created (cudarc panics on a missing library), so a machine without a GPU gets an error,
//! never a crash.

mod kernels;
mod ops;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, LaunchConfig};

pub use kernels::{KernelBuild, KernelForm, KERNEL_BUILD};

use crate::error::{Error, Result};
use kernels::Kernels;

/// Storage precision of design matrices on the device (compute is always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    F32,
    /// bfloat16: half the memory traffic, about 3 significant digits per entry.
    Bf16,
}

/// How batched HVPs and loss gradients are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowPath {
    /// The fused `glm_rows` kernel: X read once per batch of vectors (the default).
    Fused,
    /// Two cuBLAS GEMMs around a transform kernel: X read twice (kept for comparison, and
    /// used automatically when a batch's accumulator does not fit in shared memory).
    Cublas,
}

/// A GPU found by [`probe`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub memory_bytes: usize,
    pub multiprocessors: u32,
}

/// What [`probe`] found: the devices, or why there are none.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Probe {
    pub devices: Vec<DeviceInfo>,
    /// Why no device is usable (when `devices` is empty).
    pub reason: Option<String>,
}

/// Looks for NVIDIA GPUs without ever panicking: checks that the driver library can be
/// loaded before asking it anything.
pub fn probe() -> Probe {
    // SAFETY: probing for a shared library only loads it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Probe {
            devices: Vec::new(),
            reason: Some("no NVIDIA driver library (libcuda.so) was found".into()),
        };
    }
    let count = match CudaContext::device_count() {
        Ok(count) => count.max(0) as usize,
        Err(e) => {
            return Probe {
                devices: Vec::new(),
                reason: Some(format!("the CUDA driver reports no usable device ({e})")),
            }
        }
    };
    let mut devices = Vec::new();
    let mut reason = (count == 0).then(|| "the CUDA driver found no GPU".to_string());
    for ordinal in 0..count {
        match device_info(ordinal) {
            Ok(info) => devices.push(info),
            Err(e) => reason = Some(e.to_string()),
        }
    }
    Probe { devices, reason }
}

fn device_info(ordinal: usize) -> Result<DeviceInfo> {
    let ctx = CudaContext::new(ordinal).map_err(driver_error)?;
    Ok(DeviceInfo {
        ordinal,
        name: ctx.name().map_err(driver_error)?,
        compute_capability: ctx.compute_capability().map_err(driver_error)?,
        memory_bytes: ctx.total_mem().map_err(driver_error)?,
        multiprocessors: ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_error)? as u32,
    })
}

/// Whether the device's memory pool keeps freed memory (`true`, the default) or returns it to
/// the driver at every synchronisation (`HYPERGRAD_CUDA_POOL=trim`, the driver's own default,
/// kept so that a GPU check can time one against the other).
pub fn pool_keeps_memory() -> bool {
    std::env::var("HYPERGRAD_CUDA_POOL").map_or(true, |v| v != "trim")
}

/// Lets the device's default memory pool keep the memory its buffers free. cudarc allocates
/// with `cuMemAllocAsync` from that pool, whose release threshold is 0 unless set: every
/// synchronisation (each `download`, each reduction read back, the end of every outer step)
/// then hands the freed memory back to the driver, and the next allocations map it again, on
/// the host's critical path. The loops here allocate their temporaries per step (a network's
/// tape, a solver's scratch), which is what a caching pool is for: the threshold is set to
/// "never release", as PyTorch's caching allocator and JAX's pool behave. The memory stays
/// the process's until it exits.
fn keep_pool_memory(ctx: &Arc<CudaContext>) -> Result<()> {
    use cudarc::driver::result::{device, mem_pool};
    use cudarc::driver::sys::CUmemPool_attribute;
    if !ctx.has_async_alloc() || !pool_keeps_memory() {
        return Ok(());
    }
    let mut threshold: u64 = u64::MAX;
    // SAFETY: the device handle is the context's own, and RELEASE_THRESHOLD takes a cuuint64_t,
    // which `threshold` is and outlives the call.
    unsafe {
        let pool = device::get_default_mem_pool(ctx.cu_device()).map_err(driver_error)?;
        mem_pool::set_attribute(
            pool,
            CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .map_err(driver_error)
    }
}

/// The markers of a stream: events without timing, created once (recording one is cheap).
fn stream_markers(stream: &Arc<CudaStream>) -> Result<Vec<CudaEvent>> {
    (0..crate::backend::QUEUE_MARKERS)
        .map(|_| {
            stream
                .context()
                .new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))
                .map_err(driver_error)
        })
        .collect()
}

pub(crate) fn driver_error(e: impl std::fmt::Display) -> Error {
    Error::Backend(format!("CUDA: {e}"))
}

/// Host syncs and transfers made by a backend (for tests that assert a loop makes none).
#[derive(Debug, Default)]
struct HostTraffic {
    /// Calls that wait for the device (downloads, scalar reductions).
    syncs: AtomicU64,
    /// Host↔device copies.
    transfers: AtomicU64,
}

/// Resident blocks a multiprocessor, by kernel name: `(shared-memory bytes, blocks)` pairs.
type ResidentBlocks = std::collections::HashMap<String, Vec<(usize, u32)>>;

/// A design matrix on the device.
pub struct CudaDesign {
    pub(in crate::backend) n: usize,
    pub(in crate::backend) d: usize,
    pub(in crate::backend) data: DesignData,
    /// `0, 1, …, n−1`: the row indices of the whole design, for kernels that take a list.
    pub(in crate::backend) iota: CudaSlice<i32>,
}

pub(in crate::backend) enum DesignData {
    F32(CudaSlice<f32>),
    /// bf16 bit patterns.
    Bf16(CudaSlice<u16>),
}

/// A mini-batch of row indices on the device: `len` indices from entry `offset` of a shared
/// buffer, so the T batches of an inner loop can come in one host copy
/// ([`crate::backend::Backend::upload_batches`]).
pub struct CudaRows {
    pub(in crate::backend) len: usize,
    offset: usize,
    idx: Arc<CudaSlice<i32>>,
    /// The number of design rows the indices were checked against when uploaded (each is
    /// below it), so that a primitive can refuse them for a smaller design without reading
    /// them back.
    pub(in crate::backend) bound: usize,
}

impl CudaRows {
    /// Refuses indices uploaded for more rows than a design of `n` has. They were checked
    /// against `bound` when uploaded; reading them back to check them again would cost a sync
    /// every step.
    pub(in crate::backend) fn check_fits(&self, n: usize) -> Result<()> {
        if self.bound > n {
            return Err(Error::Dimension(format!(
                "the mini-batch's row indices were uploaded for {} rows, the design has {n}",
                self.bound
            )));
        }
        Ok(())
    }
}

/// The CUDA backend on one device. Clones share the context, stream and counters;
/// [`crate::backend::Backend::fork`] gives a handle on a second stream (same context,
/// buffers, kernels and counters) with its own cuBLAS handle and markers.
#[derive(Clone)]
pub struct CudaBackend {
    pub(in crate::backend) stream: Arc<CudaStream>,
    /// Markers of this handle's stream (`Backend::signal` / `wait_for`), timing disabled.
    events: Arc<Vec<CudaEvent>>,
    pub(in crate::backend) blas: Arc<CudaBlas>,
    pub(in crate::backend) kernels: Arc<Kernels>,
    pub(in crate::backend) info: DeviceInfo,
    /// Largest dynamic shared memory a block may opt into.
    pub(in crate::backend) max_shared_bytes: usize,
    storage: Storage,
    row_path: Arc<AtomicU8>,
    traffic: Arc<HostTraffic>,
    /// This handle's cuSOLVER context, made on first use (so that a machine without
    /// libcusolver runs everything else), bound to this handle's stream.
    solver: Arc<std::sync::OnceLock<cudarc::cusolver::DnHandle>>,
    /// The SGD step's gradient buffer, kept between steps so that the inner loop allocates
    /// nothing (one per handle: each stream uses its own).
    pub(in crate::backend) sgd_scratch: Arc<std::sync::Mutex<Option<CudaSlice<f32>>>>,
    /// Resident `glm_rows` blocks a multiprocessor, by kernel name and shared-memory bytes
    /// (shared by every handle: it depends on the kernel only).
    pub(in crate::backend) resident: Arc<std::sync::Mutex<ResidentBlocks>>,
    /// Set by device-side checks that cannot report at once (a Cholesky pivot ≤ 0 in the
    /// Woodbury update or `spd_solve`); read after every synchronising call.
    pub(in crate::backend) health: Arc<std::sync::Mutex<CudaSlice<i32>>>,
}

impl CudaBackend {
    /// Creates the backend on device `ordinal`, loading (or NVRTC-compiling) every kernel.
    /// Fails with a clear error, never a panic, when no usable GPU, driver or cuBLAS is there.
    pub fn new(ordinal: usize, storage: Storage) -> Result<Self> {
        let probe = probe();
        if probe.devices.iter().all(|d| d.ordinal != ordinal) {
            return Err(Error::Backend(format!(
                "no usable CUDA device {ordinal}: {}",
                probe.reason.unwrap_or_else(|| "it does not exist".into())
            )));
        }
        // SAFETY: probing for a shared library only loads it.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Backend(
                "cuBLAS (libcublas.so) was not found; install the CUDA 13 libraries".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_error)?;
        // SAFETY: called before any buffer exists. Without cudarc's per-buffer events (two
        // per allocation, recorded at every use) nothing orders streams but what this backend
        // does: a forked handle's work is ordered against the main one only by the markers
        // (`signal`, `wait_for`), and a buffer is freed (`cuMemFreeAsync`) on the stream that
        // allocated it, in that stream's order, without waiting for any other stream. So a
        // caller that lets another stream read a buffer keeps it alive until its own stream
        // has waited for that stream's marker (NHGD's loops do; see `ptr`).
        unsafe { ctx.disable_event_tracking() };
        keep_pool_memory(&ctx)?;
        let info = device_info(ordinal)?;
        let max_shared_bytes = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(driver_error)? as usize;
        // A created (non-blocking) stream, not the legacy default stream: CUDA cannot capture
        // work on the legacy stream into a graph, and the legacy stream synchronises with every
        // other blocking stream of the context (issue 23).
        let stream = ctx.new_stream().map_err(driver_error)?;
        let blas = CudaBlas::new(stream.clone()).map_err(driver_error)?;
        let kernels = Kernels::load(&ctx)?;
        let health = stream.alloc_zeros::<i32>(1).map_err(driver_error)?;
        let events = Arc::new(stream_markers(&stream)?);
        Ok(CudaBackend {
            stream,
            events,
            blas: Arc::new(blas),
            kernels: Arc::new(kernels),
            info,
            max_shared_bytes,
            storage,
            row_path: Arc::new(AtomicU8::new(0)),
            traffic: Arc::default(),
            solver: Arc::default(),
            sgd_scratch: Arc::default(),
            resident: Arc::default(),
            health: Arc::new(std::sync::Mutex::new(health)),
        })
    }

    /// The device this backend runs on.
    pub fn device(&self) -> &DeviceInfo {
        &self.info
    }

    /// `(syncs, transfers)` with the host since the backend was created.
    pub fn host_traffic(&self) -> (u64, u64) {
        (
            self.traffic.syncs.load(Ordering::Relaxed),
            self.traffic.transfers.load(Ordering::Relaxed),
        )
    }

    /// A handle on a new stream of the same context: it shares every buffer, kernel and
    /// counter, and starts after the work queued so far on this handle.
    pub fn fork_stream(&self) -> Result<Self> {
        let stream = self.stream.fork().map_err(driver_error)?;
        let blas = CudaBlas::new(stream.clone()).map_err(driver_error)?;
        let events = Arc::new(stream_markers(&stream)?);
        Ok(CudaBackend {
            stream,
            events,
            blas: Arc::new(blas),
            solver: Arc::default(),
            sgd_scratch: Arc::default(),
            ..self.clone()
        })
    }

    /// Records marker `slot` at the current end of this handle's stream.
    pub fn signal(&self, slot: usize) -> Result<()> {
        self.marker(slot)?
            .record(&self.stream)
            .map_err(driver_error)
    }

    /// Makes this handle's stream wait (on the device) for marker `slot` of `other`.
    pub fn wait_for(&self, other: &CudaBackend, slot: usize) -> Result<()> {
        self.stream.wait(other.marker(slot)?).map_err(driver_error)
    }

    fn marker(&self, slot: usize) -> Result<&CudaEvent> {
        self.events.get(slot).ok_or_else(|| {
            Error::Backend(format!(
                "queue marker {slot} does not exist (there are {})",
                self.events.len()
            ))
        })
    }

    /// Chooses how batched HVPs and gradients run (for benchmarks and parity tests).
    pub fn set_row_path(&self, path: RowPath) {
        self.row_path.store(path as u8, Ordering::Relaxed);
    }

    pub(in crate::backend) fn row_path(&self) -> RowPath {
        match self.row_path.load(Ordering::Relaxed) {
            0 => RowPath::Fused,
            _ => RowPath::Cublas,
        }
    }

    /// Waits for the device; fails if a device-side check has tripped.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_error)?;
        self.traffic.syncs.fetch_add(1, Ordering::Relaxed);
        self.check_health()
    }

    pub(in crate::backend) fn check_health(&self) -> Result<()> {
        let mut health = self
            .health
            .lock()
            .map_err(|_| Error::Backend("the device health flag was poisoned".into()))?;
        let flag = self.stream.clone_dtoh(&*health).map_err(driver_error)?;
        if flag.first().copied().unwrap_or(0) != 0 {
            self.stream
                .memset_zeros(&mut *health)
                .map_err(driver_error)?;
            return Err(Error::Numerical(format!(
                "a Cholesky factorisation on the device (a Woodbury capacitance matrix, a K-FAC \
                 factor or F + R) met a matrix that is not positive definite (pivot {})",
                flag[0]
            )));
        }
        Ok(())
    }

    /// The raw device address of a buffer. The context runs without cudarc's cross-stream
    /// events (see [`CudaBackend::new`]): uses on this handle's stream are ordered by the
    /// stream, uses on a fork by the markers its caller places. (With the events on, the
    /// read marker would be recorded here, before the launch that reads the address.)
    pub(in crate::backend) fn ptr<T>(&self, buf: &CudaSlice<T>) -> u64 {
        let (ptr, _record) = buf.device_ptr(&self.stream);
        ptr
    }

    /// The address of entry `offset` of a buffer of `T`.
    pub(in crate::backend) fn ptr_at<T>(&self, buf: &CudaSlice<T>, offset: usize) -> u64 {
        self.ptr(buf) + (offset * std::mem::size_of::<T>()) as u64
    }

    /// The cuSOLVER handle of this handle's stream, created on first use.
    pub(in crate::backend) fn solver(&self) -> Result<&cudarc::cusolver::DnHandle> {
        if let Some(handle) = self.solver.get() {
            return Ok(handle);
        }
        // SAFETY: probing for a shared library only loads it (cudarc panics on a missing one).
        if !unsafe { cudarc::cusolver::sys::is_culib_present() } {
            return Err(Error::Backend(
                "cuSOLVER (libcusolver.so) was not found; install the CUDA 13 libraries".into(),
            ));
        }
        let handle = cudarc::cusolver::DnHandle::new(self.stream.clone()).map_err(driver_error)?;
        Ok(self.solver.get_or_init(|| handle))
    }

    /// The address of a mini-batch's first index.
    pub(in crate::backend) fn rows_ptr(&self, rows: &CudaRows) -> u64 {
        self.ptr_at(&*rows.idx, rows.offset)
    }

    pub(in crate::backend) fn count_transfer(&self) {
        self.traffic.transfers.fetch_add(1, Ordering::Relaxed);
    }

    pub(in crate::backend) fn count_sync(&self) {
        self.traffic.syncs.fetch_add(1, Ordering::Relaxed);
    }
}

/// A kernel argument: a device address or a scalar.
#[derive(Clone, Copy, Debug)]
pub(in crate::backend) enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

/// The null device pointer, for an absent optional buffer.
pub(in crate::backend) const NULL: Arg = Arg::Ptr(0);

/// One-dimensional launch over `n` elements with grid-stride loops: 256 threads a block, at
/// most 4096 blocks.
pub(in crate::backend) fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 4096) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A size as the kernels' `int`, checked.
pub(in crate::backend) fn int(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::Dimension(format!("{what} = {v} exceeds the kernels' 32-bit sizes")))
}
