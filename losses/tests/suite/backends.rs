//! The same losses on other backends agree with the f64 ndarray reference: proof that the
//! generic code is backend-independent. Runs on ndarray f32 always, on flex with
//! `--features test-flex`, and on wgpu with `--features test-wgpu` (skipped with a printed
//! reason when no adapter exists).

use crate::common;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::AutodiffBackend;
use common::{all_losses, evaluate, random_batch};

/// Evaluates every loss on `B` and compares loss, metrics and gradients with f64 ndarray.
fn agrees_with_f64_reference<B: AutodiffBackend>(device: &B::Device, backend: &str) {
    let data = random_batch(31, 3, 5, 64, 4.0);
    for (name, loss) in all_losses() {
        let reference = evaluate::<Autodiff<NdArray<f64>>>(&loss, &data, &Default::default());
        let got = evaluate::<B>(&loss, &data, device);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 + 1e-3 * b.abs();
        assert!(
            close(got.loss, reference.loss),
            "{backend}/{name}: loss {} vs {}",
            got.loss,
            reference.loss
        );
        for ((metric, g), (_, e)) in got.metrics.values.iter().zip(&reference.metrics.values) {
            assert!(close(*g, *e), "{backend}/{name}: {metric} {g} vs {e}");
        }
        for ((variant, g), (_, e)) in got.grads.iter().zip(&reference.grads) {
            for (i, (g, e)) in g.iter().zip(e).enumerate() {
                assert!(
                    close(*g, *e),
                    "{backend}/{name}: d/d {variant}[{i}] {g} vs {e}"
                );
            }
        }
    }
}

#[test]
fn ndarray_f32_agrees_with_f64() {
    agrees_with_f64_reference::<Autodiff<NdArray<f32>>>(&Default::default(), "ndarray-f32");
}

#[cfg(feature = "test-flex")]
#[test]
fn flex_agrees_with_f64() {
    agrees_with_f64_reference::<Autodiff<burn::backend::Flex>>(&Default::default(), "flex");
}

#[cfg(feature = "test-wgpu")]
#[test]
fn wgpu_agrees_with_f64() {
    use burn::backend::wgpu::{Wgpu, WgpuDevice};
    use burn::tensor::Tensor;

    let device = WgpuDevice::default();
    // burn panics when no adapter exists; probe once and skip with a reason instead.
    let probe =
        std::panic::catch_unwind(|| Tensor::<Wgpu, 1>::ones([2], &device).sum().into_scalar());
    if probe.is_err() {
        eprintln!("SKIPPED wgpu_agrees_with_f64: no wgpu adapter (install a Vulkan driver, e.g. Mesa lavapipe)");
        return;
    }
    agrees_with_f64_reference::<Autodiff<Wgpu>>(&device, "wgpu");
    eprintln!("wgpu backend: losses agree with the f64 reference");
}
