//! The one place where a `--backend` choice becomes a concrete burn backend and device.
//!
//! Everything else in firempo is generic over `B: AutodiffBackend`; a [`BackendTask`] is run on
//! the backend the user picked. Backends are cargo features (`ndarray` default, `flex`, `wgpu`,
//! `cuda`), so a binary may lack one: that is a clear [`BackendError::NotCompiled`], never a panic.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use serde::{Deserialize, Serialize};

/// A compute backend the user can choose with `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// CPU through ndarray (f32): deterministic, always available in default builds.
    #[default]
    Ndarray,
    /// CPU through burn-flex (f32): gemm matmul, SIMD elementwise ops, rayon threads
    /// (`RAYON_NUM_THREADS`), fused softmax/layer norm; burn's intended successor of ndarray.
    Flex,
    /// GPU through wgpu: Vulkan, Metal or DX12 (or Mesa lavapipe on a CPU-only Linux box).
    Wgpu,
    /// NVIDIA GPU through CUDA (kernels compiled at run time by NVRTC).
    Cuda,
}

impl BackendKind {
    /// All backends, compiled in or not.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Ndarray,
        BackendKind::Flex,
        BackendKind::Wgpu,
        BackendKind::Cuda,
    ];

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            BackendKind::Ndarray => "ndarray",
            BackendKind::Flex => "flex",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Ndarray => cfg!(feature = "ndarray"),
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.feature())
    }
}

/// The CPU backend firempo's own tests run on, as a type: ndarray f32, or flex when built with
/// the `test-flex` feature (`cargo test --workspace --features test-flex` runs the suite on flex).
/// f64 reference tests name `NdArray<f64>` themselves: flex implements `Backend` for f32 only.
#[cfg(all(feature = "ndarray", not(feature = "test-flex")))]
pub type TestCpu = burn::backend::NdArray<f32>;
/// The CPU backend firempo's own tests run on: flex (`--features test-flex`).
#[cfg(feature = "test-flex")]
pub type TestCpu = burn::backend::Flex;

/// [`TestCpu`] as a `--backend` choice, for tests that run a [`BackendTask`] with [`run_on`].
#[cfg(not(feature = "test-flex"))]
pub const TEST_CPU: BackendKind = BackendKind::Ndarray;
/// [`TestCpu`] as a `--backend` choice: flex (`--features test-flex`).
#[cfg(feature = "test-flex")]
pub const TEST_CPU: BackendKind = BackendKind::Flex;

/// Why a backend could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The binary was built without the backend's cargo feature.
    #[error(
        "this firempo binary was built without the `{backend}` backend; rebuild with \
         `cargo build --release --features {backend}` (compiled in: {compiled})"
    )]
    NotCompiled {
        backend: BackendKind,
        compiled: String,
    },
    /// The backend is compiled in but found no usable device.
    #[error("the `{backend}` backend found no usable device: {reason}")]
    NoDevice {
        backend: BackendKind,
        reason: String,
    },
}

/// Work that runs on whichever autodiff backend the user selected.
pub trait BackendTask {
    /// What the task returns.
    type Output;
    /// Runs the task on backend `B` and its default device.
    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

/// Fails with [`BackendError::NotCompiled`] unless the binary has the backend.
pub fn require_compiled(kind: BackendKind) -> Result<(), BackendError> {
    if kind.is_compiled() {
        Ok(())
    } else {
        Err(not_compiled(kind))
    }
}

/// Runs `task` on the backend `kind`, with that backend's default device.
pub fn run_on<T: BackendTask>(kind: BackendKind, task: T) -> anyhow::Result<T::Output> {
    require_compiled(kind)?;
    match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => run_with::<burn::backend::NdArray<f32>, T>(
            cpu_kernels::<burn::backend::NdArray<f32>>,
            task,
        ),
        #[cfg(feature = "flex")]
        BackendKind::Flex => {
            run_with::<burn::backend::Flex, T>(cpu_kernels::<burn::backend::Flex>, task)
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            probe(BackendKind::Wgpu)?;
            run_with::<burn::backend::Wgpu, T>(gpu_kernels::<burn::backend::Wgpu>, task)
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            probe(BackendKind::Cuda)?;
            run_with::<burn::backend::Cuda, T>(gpu_kernels::<burn::backend::Cuda>, task)
        }
        #[allow(unreachable_patterns)]
        _ => Err(not_compiled(kind).into()),
    }
}

/// Runs `task` on `Autodiff<I>` after `register` chose `I`'s kernels: [`gpu_kernels`] or
/// [`cpu_kernels`].
#[allow(dead_code)] // unused when no backend feature is compiled in
fn run_with<I, T>(register: fn(), task: T) -> anyhow::Result<T::Output>
where
    I: burn::tensor::backend::Backend,
    T: BackendTask,
{
    register();
    task.run::<burn::backend::Autodiff<I>>(Default::default())
}

/// A GPU backend's kernels: the decoder's blocked attention trained through its own backward op
/// (one log-sum-exp per row kept instead of the `[heads, L, L]` scores; see
/// `firempo_models::register_fused_attention`).
#[allow(dead_code)]
fn gpu_kernels<I: burn::tensor::backend::Backend>() {
    firempo_models::register_fused_attention::<I>();
}

/// A CPU backend's kernels: that attention op, and the inference attention, run by the host
/// kernel on the f32 data (`firempo_models::register_host_attention`), and LoRA dropout masks
/// drawn on the host (`firempo_models::register_host_dropout`), and the MLP's SwiGLU gate and the
/// rotary embedding as host ops (`firempo_models::register_host_swiglu`, `register_host_rope`).
#[allow(dead_code)]
fn cpu_kernels<I: burn::tensor::backend::Backend>() {
    firempo_models::register_host_attention::<I>();
    firempo_models::register_host_dropout::<I>();
    firempo_models::register_host_swiglu::<I>();
    firempo_models::register_host_rope::<I>();
}

fn not_compiled(backend: BackendKind) -> BackendError {
    let compiled: Vec<&str> = BackendKind::ALL
        .iter()
        .filter(|k| k.is_compiled())
        .map(|k| k.feature())
        .collect();
    BackendError::NotCompiled {
        backend,
        compiled: if compiled.is_empty() {
            "none".into()
        } else {
            compiled.join(", ")
        },
    }
}

/// Checks that the backend can run a tiny computation on its default device.
///
/// burn panics when wgpu finds no adapter or CUDA no driver; the panic is caught (and its message
/// kept) so callers get a [`BackendError::NoDevice`] with the reason instead.
pub fn probe(kind: BackendKind) -> Result<String, BackendError> {
    if !kind.is_compiled() {
        return Err(not_compiled(kind));
    }
    let computation: fn() -> String = match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => sum_of_ones::<burn::backend::NdArray<f32>>,
        #[cfg(feature = "flex")]
        BackendKind::Flex => sum_of_ones::<burn::backend::Flex>,
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => sum_of_ones::<burn::backend::Wgpu>,
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => sum_of_ones::<burn::backend::Cuda>,
        #[allow(unreachable_patterns)]
        _ => return Err(not_compiled(kind)),
    };
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(computation));
    std::panic::set_hook(previous_hook);
    result.map_err(|panic| BackendError::NoDevice {
        backend: kind,
        reason: panic_message(panic.as_ref()),
    })
}

/// Runs `1 + 1 + 1 + 1` on `B`'s default device and describes the device.
#[allow(dead_code)]
fn sum_of_ones<B: burn::tensor::backend::Backend>() -> String {
    let device = B::Device::default();
    let sum: f32 = burn::tensor::Tensor::<B, 1>::ones([4], &device)
        .sum()
        .into_scalar()
        .elem();
    assert_eq!(sum, 4.0, "backend computed 1+1+1+1 = {sum}");
    format!("{device:?}")
}

/// The text a panic carried (`panic!` with a message, or a string), for an error message.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Double(f32);

    impl BackendTask for Double {
        type Output = f32;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<f32> {
            let x = burn::tensor::Tensor::<B, 1>::from_floats([self.0], &device);
            Ok((x.clone() + x).into_scalar().elem())
        }
    }

    #[test]
    fn ndarray_runs_tasks_and_probes() {
        assert_eq!(run_on(BackendKind::Ndarray, Double(1.5)).unwrap(), 3.0);
        assert_eq!(probe(BackendKind::Ndarray).unwrap(), "Cpu");
    }

    #[cfg(feature = "flex")]
    #[test]
    fn flex_runs_tasks_and_probes() {
        assert_eq!(run_on(BackendKind::Flex, Double(1.5)).unwrap(), 3.0);
        assert_eq!(probe(BackendKind::Flex).unwrap(), "Cpu");
    }

    #[cfg(not(feature = "flex"))]
    #[test]
    fn flex_without_its_feature_is_a_clear_error() {
        let err = run_on(BackendKind::Flex, Double(1.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--features flex"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_is_a_clear_error() {
        let err = run_on(BackendKind::Cuda, Double(1.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--features cuda"), "{err}");
        assert!(err.contains("compiled in: ndarray"), "{err}");
    }
}
