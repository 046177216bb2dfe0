//! Backend-specific kernels chosen at run time, by type.
//!
//! The models are generic over `B: Backend`, and stable Rust cannot ask whether a generic `B` is
//! `Autodiff<I, C>` for some `I`, or whether its tensors live in host memory. The binary, which
//! names its backends, registers a kernel for each once (`register_host_attention::<NdArray>()`,
//! `register_host_dropout::<NdArray>()`); the model code looks it up by the kernel's function
//! type, which names the backend (`fn(AttentionInput<B>, usize) -> Tensor<B, 4>`), so one map
//! holds every kind of kernel for every backend. A kernel type must name `B` itself, not only
//! `Device<B>`: backends share device types (`NdArray<f32, i64>` and `NdArray<f32, i32>`), so
//! such a key would register one backend's kernel for all of them (`dropout::HostDropout` is
//! such a marker).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

type Map = HashMap<TypeId, Box<dyn Any + Send + Sync>>;

fn registry() -> &'static RwLock<Map> {
    static REGISTRY: OnceLock<RwLock<Map>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Registers `kernel` under its type (replacing an earlier one of the same type).
pub(crate) fn register<K: Any + Send + Sync + Copy>(kernel: K) {
    registry()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(TypeId::of::<K>(), Box::new(kernel));
}

/// The kernel registered under type `K`, if any.
pub(crate) fn registered<K: Any + Copy>() -> Option<K> {
    let map = registry().read().unwrap_or_else(|e| e.into_inner());
    map.get(&TypeId::of::<K>())
        .and_then(|k| k.downcast_ref::<K>())
        .copied()
}
