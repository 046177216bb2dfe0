//! Data-parallel training on one node (`--devices`): one thread per peer, each with its own copy
//! of the model, optimizer and objective on its device, combined through burn's collective
//! engine (`burn-collective`, cargo feature `distributed`): no communication layer of our own.
//!
//! What makes the update equal the single-device update on the whole batch:
//! - **Data**: every peer walks the same seeded micro-batches ([`super::order::micro_batch`]) and
//!   scores its own contiguous [`shard`] of each; the shards concatenated are the micro-batch a
//!   single device would score (the four answer variants of a pair are one example, so they stay
//!   on one peer). The data position is the micro-batch counter, the same on every peer.
//! - **Loss scale**: a micro-batch's loss is a weighted mean (SFT: over answer tokens; alignment:
//!   over pairs; [`super::Objective::loss_weight`]). Peer `p` scales its loss by
//!   `weight(shard_p) / weight(micro-batch)`, so the gradients summed over the peers
//!   (all-reduce `Sum`) are the gradients of the whole micro-batch's loss, and so are the logged
//!   loss and metrics.
//! - **Update**: the gradients are all-reduced before clipping; every peer then runs the same
//!   global-norm clip and AdamW step on the same summed gradients, so the weights stay equal
//!   without a broadcast (each peer keeps its own optimizer state: memory for speed, no
//!   per-step weight transfer). Peer 0 logs metrics and writes checkpoints.
//! - **Agreement**: once per step the peers sum a small vector (peer 0's stop request, each
//!   peer's gradient count, the metric sums), so a Ctrl-C stops every peer after the same step.
//!   A peer that fails (NaN loss, an unreadable image, a panic) resets the collective as it
//!   exits: the other peers' pending or next collective call then fails, they stop, and the
//!   run's error is the failing peer's.
//!
//! Not bit-equal to one device: summation order (f32 rounding, ~1e-7 relative), and dropout
//! masks (each peer draws its own; equality tests use dropout 0). A run repeats exactly with
//! dropout too: on the CPU backends each peer thread draws its LoRA masks from its own stream
//! (`firempo_models::seed_host_dropout`, seeded per step and peer by the trainer), not from the
//! process-wide RNG the peers would race for. burn initializes parameters lazily (at first
//! use); the peers' copies are made from the materialized model, so a randomly initialized
//! model (the demo's) gets its random weights before the first step rather than during it:
//! other values than a single-device run draws, equal ones from a model directory or a
//! materialized model.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;

/// `--devices`: how many data-parallel peers, on which devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `N` peers: on the CPU backends, N peers sharing the CPU (for testing); on CUDA, devices
    /// 0..N-1 (select GPUs with `CUDA_VISIBLE_DEVICES`).
    Count(usize),
    /// A list of GPUs of one backend, e.g. `cuda:0,cuda:1` or `wgpu:0,wgpu:1`.
    List(Vec<DeviceName>),
}

/// One GPU of a device list: `cuda:N` or `wgpu:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceName {
    /// `Cuda` or `Wgpu`.
    pub backend: BackendKind,
    /// Index among that backend's devices (wgpu: the N-th discrete GPU).
    pub index: usize,
}

impl Default for DeviceSpec {
    fn default() -> Self {
        Self::Count(1)
    }
}

impl DeviceSpec {
    /// Number of peers.
    pub fn world_size(&self) -> usize {
        match self {
            Self::Count(n) => *n,
            Self::List(names) => names.len(),
        }
    }

    /// One peer: the ordinary single-device loop.
    pub fn is_single(&self) -> bool {
        self.world_size() == 1
    }

    /// Refuses a device list of another backend than `--backend`.
    pub fn check_backend(&self, backend: BackendKind) -> anyhow::Result<()> {
        if let Self::List(names) = self {
            let named = names[0].backend;
            anyhow::ensure!(
                named == backend,
                "--devices {self} names {named} devices but --backend is {backend}; pass \
                 --backend {named} (or a peer count, e.g. --devices {})",
                names.len()
            );
        }
        Ok(())
    }

    /// The peers' devices; peer 0 on `run_device` (where the stage loaded the model) for a
    /// count. Device indices come from the backend's device ids (CUDA `cuda:N` is id `(0, N)`,
    /// wgpu's N-th discrete GPU is `(0, N)`); the CPU backends ignore them.
    pub fn devices<B: Backend>(&self, run_device: &B::Device) -> Vec<B::Device> {
        use burn::tensor::backend::{Device, DeviceId};
        match self {
            Self::Count(1) => vec![run_device.clone()],
            Self::Count(n) => {
                let kind = run_device.to_id().type_id;
                (0..*n)
                    .map(|i| match i {
                        0 => run_device.clone(),
                        _ => B::Device::from_id(DeviceId::new(kind, i as u16)),
                    })
                    .collect()
            }
            Self::List(names) => names
                .iter()
                .map(|name| B::Device::from_id(DeviceId::new(0, name.index as u16)))
                .collect(),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::List(names) => {
                let names: Vec<String> = names
                    .iter()
                    .map(|n| format!("{}:{}", n.backend, n.index))
                    .collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    /// `N` (a count ≥ 1) or `cuda:0,cuda:1` / `wgpu:0,wgpu:1` (one backend, no repeats).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let usage = "give a peer count (--devices 2) or a GPU list (--devices cuda:0,cuda:1 or wgpu:0,wgpu:1)";
        if text.is_empty() {
            return Err(format!("--devices is empty; {usage}"));
        }
        if let Ok(n) = text.parse::<usize>() {
            return match n {
                0 => Err(format!(
                    "--devices 0: at least one device is needed; {usage}"
                )),
                n => Ok(Self::Count(n)),
            };
        }
        let mut names: Vec<DeviceName> = Vec::new();
        for entry in text.split(',').map(str::trim) {
            let (kind, index) = entry.split_once(':').ok_or_else(|| {
                format!("--devices: `{entry}` is neither a count nor BACKEND:INDEX; {usage}")
            })?;
            let backend = match kind.to_ascii_lowercase().as_str() {
                "cuda" => BackendKind::Cuda,
                "wgpu" => BackendKind::Wgpu,
                _ => {
                    return Err(format!(
                        "--devices: unknown device kind `{kind}` in `{entry}`; a list names \
                         cuda:N or wgpu:N devices (for CPU peers give a count, e.g. --devices 2)"
                    ))
                }
            };
            let index = index.parse::<usize>().map_err(|_| {
                format!("--devices: `{index}` in `{entry}` is not a device index (0, 1, …)")
            })?;
            let name = DeviceName { backend, index };
            if let Some(first) = names.first() {
                if first.backend != backend {
                    return Err(format!(
                        "--devices {text}: mixes {} and {backend} devices; all peers use one backend",
                        first.backend
                    ));
                }
            }
            if names.contains(&name) {
                return Err(format!("--devices {text}: `{entry}` is listed twice"));
            }
            names.push(name);
        }
        Ok(Self::List(names))
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(usize),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Count(n) => n.to_string().parse(),
            Raw::Text(text) => text.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// Peer `rank`'s share of `batch` among `world` peers: contiguous parts, the first
/// `len % world` peers one example more, so the shares in rank order are `batch` again.
pub fn shard(batch: &[usize], world: usize, rank: usize) -> &[usize] {
    let base = batch.len() / world;
    let extra = batch.len() % world;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    &batch[start..start + len]
}

/// Initializes every lazily initialized parameter of `model` (reading one does): burn draws
/// them at first use, so copies made before would each draw other values.
pub(crate) fn materialize<B: Backend, M: Module<B>>(model: &M) {
    struct Read;
    impl<B: Backend> ModuleVisitor<B> for Read {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            let _ = param.val();
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Read);
}

#[cfg(feature = "distributed")]
pub(crate) use collective::train_peers;

#[cfg(not(feature = "distributed"))]
pub(crate) fn train_peers<B, T, O>(
    config: &super::TrainerConfig,
    _objective: &T,
    _model: T::Model,
    _optimizer: O,
    _state: super::checkpoint::TrainerState,
    _report: super::trainer::Report,
    _run_device: &B::Device,
) -> anyhow::Result<super::TrainOutcome<T::Model>>
where
    B: burn::tensor::backend::AutodiffBackend,
    T: super::Objective<B>,
    O: burn::optim::Optimizer<T::Model, B> + Clone + Send,
{
    anyhow::bail!(
        "--devices {} needs data-parallel training, which this firempo binary was built without; \
         rebuild with `cargo build --release --features distributed` (or train on one device: \
         --devices 1)",
        config.devices
    )
}

#[cfg(feature = "distributed")]
mod collective {
    use std::sync::Mutex;

    use anyhow::Context;
    use burn::collective::{
        all_reduce, finish_collective, register, reset_collective, CollectiveConfig, PeerId,
        ReduceOperation,
    };
    use burn::module::Module;
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::backend::{AutodiffBackend, Backend};
    use burn::tensor::{Tensor, TensorData, TensorPrimitive};

    use super::super::checkpoint::TrainerState;
    use super::super::trainer::{run_steps, Peers, Report};
    use super::super::{Objective, TrainOutcome, TrainerConfig};

    /// burn's local collective is one per backend type and process: one data-parallel run at a
    /// time (tests in one binary would otherwise register into each other's collective).
    static SESSION: Mutex<()> = Mutex::new(());

    /// Why a peer stopped because another one did (a collective call failed once the failing
    /// peer reset the collective); the run reports the other peer's error instead.
    #[derive(Debug, thiserror::Error)]
    #[error("data-parallel peer {rank}: {what} failed ({cause}): another peer stopped")]
    struct StoppedByPeer {
        rank: usize,
        what: &'static str,
        cause: String,
    }

    /// One peer's membership in the collective. Dropped without [`Member::leave`] (an error or
    /// a panic), it resets the collective so that the other peers stop instead of waiting.
    struct Member<I: Backend> {
        rank: usize,
        world: usize,
        device: I::Device,
        left: bool,
    }

    impl<I: Backend> Member<I> {
        /// Registers peer `rank`; returns once all `world` peers have.
        fn join(rank: usize, world: usize, device: I::Device) -> anyhow::Result<Self> {
            let config = CollectiveConfig::default().with_num_devices(world);
            let member = Self {
                rank,
                world,
                device: device.clone(),
                left: false,
            };
            register::<I>(PeerId::from(rank), device, config).map_err(|e| {
                anyhow::anyhow!("data-parallel peer {rank}: joining the collective failed: {e:?}")
            })?;
            Ok(member)
        }

        /// Leaves the collective after a run that ended well.
        fn leave(mut self) {
            // Errors here (the collective was reset by a failing peer) change nothing.
            let _ = finish_collective::<I>(PeerId::from(self.rank));
            self.left = true;
        }

        fn stopped(&self, what: &'static str, cause: impl std::fmt::Debug) -> anyhow::Error {
            StoppedByPeer {
                rank: self.rank,
                what,
                cause: format!("{cause:?}"),
            }
            .into()
        }
    }

    impl<I: Backend> Drop for Member<I> {
        fn drop(&mut self) {
            if !self.left {
                reset_collective::<I>();
            }
        }
    }

    impl<I: Backend> Peers for Member<I> {
        fn rank(&self) -> usize {
            self.rank
        }

        fn world_size(&self) -> usize {
            self.world
        }

        fn sum_values(&self, values: Vec<f64>) -> anyhow::Result<Vec<f64>> {
            let n = values.len();
            let tensor = Tensor::<I, 1>::from_data(TensorData::new(values, [n]), &self.device);
            let summed = all_reduce::<I>(
                PeerId::from(self.rank),
                tensor.into_primitive().tensor(),
                ReduceOperation::Sum,
            )
            .map_err(|e| self.stopped("summing the step's flags and metrics", e))?;
            Tensor::<I, 1>::from_primitive(TensorPrimitive::Float(summed))
                .into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .map_err(|e| anyhow::anyhow!("reading the summed metrics back: {e:?}"))
        }

        fn sum_gradients(&self, grads: GradientsParams) -> anyhow::Result<GradientsParams> {
            grads
                .all_reduce::<I>(PeerId::from(self.rank), ReduceOperation::Sum)
                .map_err(|e| self.stopped("all-reducing the gradients", e))
        }
    }

    /// Trains on `devices.len()` peers (see the module docs); returns peer 0's outcome, or the
    /// error of the peer that failed first.
    pub(crate) fn train_peers<B, T, O>(
        config: &TrainerConfig,
        objective: &T,
        model: T::Model,
        optimizer: O,
        state: TrainerState,
        report: Report,
        run_device: &B::Device,
    ) -> anyhow::Result<TrainOutcome<T::Model>>
    where
        B: AutodiffBackend,
        T: Objective<B>,
        O: Optimizer<T::Model, B> + Clone + Send,
    {
        let devices = config.devices.devices::<B>(run_device);
        let world = devices.len();
        let _session = SESSION.lock().unwrap_or_else(|p| p.into_inner());
        // burn initializes parameters lazily, at first use: a copy made now would draw other
        // random weights than the original at its first forward. Every peer must start equal.
        super::materialize::<B, _>(&model);
        // Every copy is made before any peer joins: a failure here leaves nobody waiting.
        let mut copies = Vec::with_capacity(world);
        for (rank, device) in devices.iter().enumerate() {
            if rank == 0 && device == run_device {
                copies.push(None);
                continue;
            }
            let peer_objective = objective
                .for_device(device)
                .with_context(|| format!("--devices: preparing peer {rank} on {device:?}"))?;
            copies.push(Some((peer_objective, model.clone().fork(device))));
        }
        let mut copies = copies.into_iter();
        let first = copies.next().flatten();
        let (objective0, model0): (&T, T::Model) = match &first {
            None => (objective, model),
            Some((own, copy)) => (own, copy.clone()),
        };
        let (outcome, others) = std::thread::scope(|scope| {
            let handles: Vec<_> = copies
                .enumerate()
                .map(|(i, copy)| {
                    let rank = i + 1;
                    let (peer_objective, peer_model) = copy.expect("peers past 0 have copies");
                    let device = devices[rank].clone();
                    let (optimizer, state) = (optimizer.clone(), state.clone());
                    scope.spawn(move || -> anyhow::Result<()> {
                        let member = Member::<B::InnerBackend>::join(rank, world, device.clone())?;
                        run_steps(
                            config,
                            &peer_objective,
                            peer_model,
                            optimizer,
                            state,
                            None,
                            &member,
                            &device,
                        )?;
                        member.leave();
                        Ok(())
                    })
                })
                .collect();
            let outcome =
                Member::<B::InnerBackend>::join(0, world, devices[0].clone()).and_then(|member| {
                    let outcome = run_steps(
                        config,
                        objective0,
                        model0,
                        optimizer,
                        state,
                        Some(report),
                        &member,
                        &devices[0],
                    )?;
                    member.leave();
                    Ok(outcome)
                });
            let others: Vec<anyhow::Result<()>> = handles
                .into_iter()
                .enumerate()
                .map(|(i, handle)| {
                    handle.join().unwrap_or_else(|panic| {
                        Err(anyhow::anyhow!(
                            "data-parallel peer {} panicked: {}",
                            i + 1,
                            crate::backend::panic_message(&*panic)
                        ))
                    })
                })
                .collect();
            (outcome, others)
        });
        // The first error that is not a consequence of another peer's stop is the cause.
        let mut errors: Vec<anyhow::Error> = others.into_iter().filter_map(Result::err).collect();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                errors.insert(0, e);
                let cause = errors
                    .iter()
                    .position(|e| e.downcast_ref::<StoppedByPeer>().is_none())
                    .unwrap_or(0);
                return Err(errors.swap_remove(cause));
            }
        };
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_device_lists() {
        assert_eq!("2".parse::<DeviceSpec>().unwrap(), DeviceSpec::Count(2));
        let list: DeviceSpec = "cuda:0, cuda:1".parse().unwrap();
        assert_eq!(list.world_size(), 2);
        assert_eq!(list.to_string(), "cuda:0,cuda:1");
        assert_eq!("wgpu:1".parse::<DeviceSpec>().unwrap().world_size(), 1);
        for (bad, says) in [
            ("0", "at least one device"),
            ("", "empty"),
            ("gpu:0", "unknown device kind `gpu`"),
            ("cuda:x", "not a device index"),
            ("cuda:0,wgpu:1", "mixes cuda and wgpu"),
            ("cuda:0,cuda:0", "listed twice"),
            ("two", "neither a count nor BACKEND:INDEX"),
        ] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = "cuda:0,cuda:1"
            .parse::<DeviceSpec>()
            .unwrap()
            .check_backend(BackendKind::Ndarray)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--backend cuda"), "{err}");
        assert!(DeviceSpec::Count(4)
            .check_backend(BackendKind::Ndarray)
            .is_ok());
    }

    #[test]
    fn serializes_as_its_flag_text() {
        let spec: DeviceSpec = "cuda:0,cuda:1".parse().unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, "\"cuda:0,cuda:1\"");
        assert_eq!(serde_json::from_str::<DeviceSpec>(&json).unwrap(), spec);
        assert_eq!(
            serde_json::from_str::<DeviceSpec>("3").unwrap(),
            DeviceSpec::Count(3)
        );
    }

    #[test]
    fn shards_concatenate_to_the_batch() {
        let batch = [7, 3, 5, 1, 9];
        assert_eq!(shard(&batch, 2, 0), &[7, 3, 5]);
        assert_eq!(shard(&batch, 2, 1), &[1, 9]);
        for world in 1..=5 {
            let joined: Vec<usize> = (0..world)
                .flat_map(|rank| shard(&batch, world, rank).to_vec())
                .collect();
            assert_eq!(joined, batch, "world {world}");
        }
    }
}
