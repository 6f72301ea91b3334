//! The burn backends resid trains and evaluates on, chosen at compile time.
//!
//! CPU: burn's pure-Rust `Flex` backend (rayon-parallel, SIMD kernels). With
//! the `cuda` cargo feature the same model code runs on burn's CUDA backend.

use burn::backend::Autodiff;

#[cfg(not(feature = "cuda"))]
mod chosen {
    /// The forward-only backend.
    pub type Infer = burn::backend::Flex;
    /// Its device.
    pub fn device() -> burn::backend::flex::FlexDevice {
        Default::default()
    }
    /// A one-line description for logs.
    pub const NAME: &str = "burn flex (CPU)";
}

#[cfg(feature = "cuda")]
mod chosen {
    /// The forward-only backend.
    pub type Infer = burn::backend::Cuda;
    /// Its device.
    pub fn device() -> burn::backend::cuda::CudaDevice {
        Default::default()
    }
    /// A one-line description for logs.
    pub const NAME: &str = "burn cuda";
}

pub use chosen::{device, Infer, NAME};

/// The training backend: the forward backend with reverse-mode autodiff.
pub type Train = Autodiff<Infer>;

/// The device type of both backends.
pub type Device = burn::tensor::Device<Infer>;
