//! Generation on several devices (`sample`/`eval --devices`): one copy of the model per device,
//! one thread each, the prompt batches dealt out round-robin. Each batch is decoded whole on one
//! device with the seed of its index, so the answers are those of one device, in record order
//! (bit-identical on the CPU backends: the same ops on the same batch).

use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::backend::panic_message;
use crate::pipeline::model::Model;
use crate::train::data_parallel::materialize;
use crate::train::DeviceSpec;

/// The model on each decoding device; peer 0 is the one the stage loaded.
pub struct Decoders<B: Backend> {
    peers: Vec<(Model<B>, B::Device)>,
}

impl<B: Backend> Decoders<B> {
    /// `model` on `device` alone.
    pub fn single(model: Model<B>, device: &B::Device) -> Self {
        Self {
            peers: vec![(model, device.clone())],
        }
    }

    /// `model` (loaded on `device`) copied to the devices of `spec` (a count of CPU threads, or
    /// `cuda:0,cuda:1`, …).
    pub fn new(model: Model<B>, device: &B::Device, spec: &DeviceSpec) -> Self {
        if spec.is_single() {
            return Self::single(model, device);
        }
        // Lazily initialized parameters would draw other values in each copy.
        materialize(&model);
        let devices = spec.devices::<B>(device);
        let mut peers: Vec<(Model<B>, B::Device)> = devices[1..]
            .iter()
            .map(|d| (model.clone().fork(d), d.clone()))
            .collect();
        peers.insert(0, (model, devices[0].clone()));
        Self { peers }
    }

    /// The model and device of peer 0 (for work that stays on one device).
    pub fn first(&self) -> (&Model<B>, &B::Device) {
        let (model, device) = &self.peers[0];
        (model, device)
    }

    /// Number of decoding devices.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Always at least one device.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `job(k, model, device)` for every `k` in `0..jobs`, job `k` on peer `k % len()`; the
    /// results in `k` order, or the error of the lowest failing job (the others stop at their
    /// next job).
    pub fn map<T, F>(&self, jobs: usize, job: F) -> anyhow::Result<Vec<T>>
    where
        T: Send,
        F: Fn(usize, &Model<B>, &B::Device) -> anyhow::Result<T> + Sync,
        Model<B>: Sync,
    {
        if self.peers.len() == 1 {
            let (model, device) = self.first();
            return (0..jobs).map(|k| job(k, model, device)).collect();
        }
        let world = self.peers.len();
        let failed = AtomicBool::new(false);
        let (job, failed) = (&job, &failed);
        let mut done: Vec<(usize, anyhow::Result<T>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .peers
                .iter()
                .enumerate()
                .map(|(peer, (model, device))| {
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        for k in (peer..jobs).step_by(world) {
                            if failed.load(Ordering::Relaxed) {
                                break;
                            }
                            let result = job(k, model, device);
                            failed.fetch_or(result.is_err(), Ordering::Relaxed);
                            out.push((k, result));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .flat_map(|(peer, handle)| {
                    handle.join().unwrap_or_else(|panic| {
                        let why = panic_message(&*panic);
                        vec![(
                            peer,
                            Err(anyhow::anyhow!("decoding peer {peer} panicked: {why}")),
                        )]
                    })
                })
                .collect()
        });
        done.sort_by_key(|(k, _)| *k);
        if let Some(position) = done.iter().position(|(_, r)| r.is_err()) {
            if let (_, Err(e)) = done.swap_remove(position) {
                return Err(e);
            }
        }
        anyhow::ensure!(
            done.len() == jobs,
            "decoding stopped after {} of {jobs} batches",
            done.len()
        );
        done.into_iter().map(|(_, r)| r).collect()
    }
}
