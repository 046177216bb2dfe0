//! Shared helpers of the integration tests: fixture paths and reading expected tensors.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors};

/// The backend of the integration tests: ndarray f32 by default, flex with `--features
/// test-flex`, wgpu with `--features test-wgpu`, CUDA with `--features test-cuda` (in that order
/// of precedence, CUDA first).
#[cfg(not(any(feature = "test-flex", feature = "test-wgpu", feature = "test-cuda")))]
pub type B = burn::backend::NdArray<f32>;
/// The backend of the integration tests: flex (`--features test-flex`).
#[cfg(all(
    feature = "test-flex",
    not(feature = "test-wgpu"),
    not(feature = "test-cuda")
))]
pub type B = burn::backend::Flex;
/// The backend of the integration tests: wgpu (`--features test-wgpu`).
#[cfg(all(feature = "test-wgpu", not(feature = "test-cuda")))]
pub type B = burn::backend::Wgpu;
/// The backend of the integration tests: CUDA (`--features test-cuda`, scripts/gpu-check.sh).
#[cfg(feature = "test-cuda")]
pub type B = burn::backend::Cuda;

/// The suite's lock for a test that changes process-wide state (seeds burn's RNG, sets an
/// environment variable): the tests are threads of one process. A failed holder's poison is
/// ignored, so one failure does not fail the others.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fixes the CPU device's default dtypes to f32 / i64 before a test touches it with a backend
/// type of other int elements (`NdArray<f32, i32>`, `<f32, i16>`, `<f32, i8>`: the suite's
/// registration tests use them as distinct backend types). burn keys its per-device dtype
/// settings by device type, which every `NdArray<E, I>` shares, and locks them on the device's
/// first use: a test whose `NdArray<f32, i8>` came first would give every other test i8 ints
/// (positions over 127 then panic). Every test that names such a type calls this first; the
/// others use `NdArray<f32>`, whose defaults are these.
pub fn int64_device_defaults() {
    use burn::backend::NdArray;
    use burn::tensor::{get_device_settings, set_default_dtypes, FloatDType, IntDType};
    let device = Default::default();
    // Err: already set, by this call in another test or by a test on `NdArray<f32>`.
    let _ = set_default_dtypes::<NdArray<f32>>(&device, FloatDType::F32, IntDType::I64);
    assert_eq!(
        get_device_settings::<NdArray<f32>>(&device).int_dtype,
        IntDType::I64,
        "a test used a non-i64 NdArray type without calling int64_device_defaults() first"
    );
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Tensors of an `expected.safetensors` file, by name.
pub struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    pub fn open(path: PathBuf) -> Self {
        Self {
            bytes: std::fs::read(path).expect("fixture present"),
        }
    }

    fn raw(&self, name: &str) -> (Dtype, Vec<usize>, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        (t.dtype(), t.shape().to_vec(), t.data().to_vec())
    }

    pub fn floats<const D: usize>(&self, name: &str) -> Tensor<B, D> {
        let (dtype, shape, data) = self.raw(name);
        assert_eq!(dtype, Dtype::F32);
        let v: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    pub fn ints<const D: usize>(&self, name: &str) -> Tensor<B, D, Int> {
        let (dtype, shape, data) = self.raw(name);
        assert_eq!(dtype, Dtype::I64);
        let v: Vec<i64> = data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }
}

/// Largest absolute difference between two float tensors.
pub fn max_abs_diff<Bk: Backend, const D: usize>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar().elem::<f32>()
}

use burn::tensor::ElementConversion;
