//! Moving f32 tensors of a host backend (ndarray, flex) to and from plain vectors, for the host
//! kernels ([`crate::host_attention`], [`crate::swiglu`]), and the tensor ↔ primitive conversions
//! burn's custom autodiff ops take.

use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor, TensorData, TensorPrimitive};

/// The tensor's elements in row-major order. `cat` of the one tensor first: it writes a fresh
/// row-major buffer with one strided copy, which `into_data` then hands over without copying;
/// burn-ndarray's `into_data` of a shared or permuted array (the graph keeps q, k, v; the bias
/// serves every layer) walks it element by element, which cost more than the whole kernel.
pub(crate) fn host_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    Tensor::cat(vec![t], 0)
        .into_data()
        .into_vec::<f32>()
        .expect("host kernels take f32 tensors (their callers check the dtype)")
}

/// A tensor of `shape` on `device` holding `data` (row-major).
pub(crate) fn host_tensor<B: Backend, const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// The tensor of a float primitive (what a custom op's state and gradients hold).
pub(crate) fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The float primitive of a tensor.
pub(crate) fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}
