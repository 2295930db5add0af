//! The scalar type of the CPU backend (`f32` or `f64`), in a module of its own so that the
//! vectorised kernels of [`super::skinny`] and the backend that calls them both depend on it
//! rather than on each other.

use super::Precision;
use crate::linalg;

/// Scalar type of the CPU backend (`f32` or `f64`).
pub trait Real:
    ndarray::LinalgScalar
    + linalg::Scalar
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
    + 'static
{
    const PRECISION: Precision;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// `self·a + b` rounded once (an FMA instruction where the target has one, a slow
    /// library call where it does not: see `skinny::madd`).
    fn fused_mul_add(self, a: Self, b: Self) -> Self;
    /// `√self`, correctly rounded (IEEE 754, as CUDA's `__fsqrt_rn`).
    fn square_root(self) -> Self;
}

impl Real for f32 {
    const PRECISION: Precision = Precision::F32;
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn fused_mul_add(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
    #[inline]
    fn square_root(self) -> Self {
        self.sqrt()
    }
}

impl Real for f64 {
    const PRECISION: Precision = Precision::F64;
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn fused_mul_add(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
    #[inline]
    fn square_root(self) -> Self {
        self.sqrt()
    }
}
