//! Activation checkpointing per decoder layer (what HF's `gradient_checkpointing_enable` does with
//! `torch.utils.checkpoint` around each `LlamaDecoderLayer`): the forward keeps only every
//! layer's input, the backward recomputes one layer at a time with its graph.
//!
//! burn 0.21 cannot recompute inside its own backward (a nested `.backward()` would wait on the
//! graph the outer one holds, and `BalancedCheckpointing` recomputes single ops, which raised
//! the peak when measured), so the recompute is a chain of separate backward passes, one after
//! another:
//!
//! 1. forward ([`Checkpointed`]): the layers run on the inner backend (no graph); the tape keeps
//!    each layer's input and the last layer's output becomes an autodiff leaf that the final
//!    norm, the logits and the loss build their (small) graph on;
//! 2. [`backward_checkpointed`]: `loss.backward()` gives the leaf's gradient `g`; then for each
//!    layer in reverse, `y = layer(x)` is recomputed with a graph from its taped input `x` and
//!    `(y · g).sum().backward()` gives the layer's parameter gradients and `g ← ∂/∂x`;
//! 3. when something before the decoder trains (the embedding table in full fine-tuning, a
//!    trainable vision tower or projector, DeepStack features from a trainable tower), one last
//!    surrogate pass `(embeds · g₀).sum() + Σₖ (deepstackₖ · gₖ).sum()` on the embeddings' own
//!    graph (kept from the forward, as without checkpointing) sends their gradients on.
//!
//! Each pass hands its [`AutodiffBackend::Gradients`] to a sink (the trainer turns them into
//! `GradientsParams` and accumulates), so a parameter's gradient is the sum over the passes that
//! reach it, which is the single backward's sum in another order (equal up to float rounding).
//!
//! The recompute must see the forward's function: LoRA dropout draws other masks in the
//! recompute than in the (graph-free, dropout-free) forward, so checkpointing refuses adapters
//! with dropout.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};

use crate::decoder::{Decoder, DecoderLayer, DeepStack};
use crate::error::ModelError;
use crate::rope::RopeTables;

/// The part of a forward that activation checkpointing changes: the decoder's layers and its
/// final norm, from input embeddings to normalized hidden states `[batch, seq, d_model]`.
pub trait Trunk<B: Backend> {
    /// Runs `decoder`'s layers (DeepStack levels added after the first ones) and final norm.
    fn run(
        &mut self,
        decoder: &Decoder<B>,
        embeds: Tensor<B, 3>,
        tables: &RopeTables<B>,
        bias: Tensor<B, 4>,
        deepstack: Option<&DeepStack<B>>,
    ) -> Result<Tensor<B, 3>, ModelError>;
}

/// The plain trunk: every layer keeps its graph (or, on a backend without autodiff, none exists).
#[derive(Debug, Clone, Copy, Default)]
pub struct FullGraph;

impl<B: Backend> Trunk<B> for FullGraph {
    fn run(
        &mut self,
        decoder: &Decoder<B>,
        embeds: Tensor<B, 3>,
        tables: &RopeTables<B>,
        bias: Tensor<B, 4>,
        deepstack: Option<&DeepStack<B>>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        Ok(decoder.forward_tables_with(embeds, tables, bias, &mut [], deepstack))
    }
}

/// The checkpointed trunk: layers run without a graph; every run adds a [`DecoderTape`] (one per
/// scoring call: FiRe-MPO scores the clean and the corrupted image, two tapes).
#[derive(Debug)]
pub struct Checkpointed<B: AutodiffBackend> {
    tapes: Vec<DecoderTape<B>>,
}

impl<B: AutodiffBackend> Default for Checkpointed<B> {
    fn default() -> Self {
        Self { tapes: Vec::new() }
    }
}

impl<B: AutodiffBackend> Checkpointed<B> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The tapes of the runs so far, for [`backward_checkpointed`].
    pub fn into_tapes(self) -> Vec<DecoderTape<B>> {
        self.tapes
    }
}

/// What the backward of one checkpointed trunk needs: the layers (tensors shared with the
/// model), each layer's input, the leaf the rest of the graph starts from, the constant rotary
/// tables and bias, and the graph-carrying inputs when something before the decoder trains.
#[derive(Debug)]
pub struct DecoderTape<B: AutodiffBackend> {
    layers: Vec<DecoderLayer<B>>,
    /// Input of layer `k` (graph-free), `[batch, seq, d_model]`.
    inputs: Vec<Tensor<B::InnerBackend, 3>>,
    /// The last layer's output (DeepStack added), a leaf of the loss's graph.
    output: Tensor<B, 3>,
    tables: RopeTables<B>,
    bias: Tensor<B, 4>,
    /// The input embeddings, with their graph when something before the decoder trains.
    embeds: Tensor<B, 3>,
    /// DeepStack levels (graph as `embeds`) and their scatter index.
    deepstack: Option<(DeepStack<B>, Tensor<B, 1, Int>)>,
}

/// Refuses adapters with dropout (see the module docs).
fn check_recomputable<B: Backend>(decoder: &Decoder<B>) -> Result<(), ModelError> {
    let dropout = decoder
        .layers
        .iter()
        .flat_map(|l| l.projections())
        .filter_map(|(_, p)| p.adapter.as_ref().filter(|_| p.adapter_enabled))
        .map(|a| a.dropout.prob)
        .fold(0.0, f64::max);
    if dropout > 0.0 {
        return Err(ModelError::InvalidConfig {
            field: "lora.dropout".into(),
            message: format!(
                "{dropout} with gradient checkpointing: the recomputed layers would draw other \
                 dropout masks than the forward, so the gradients would be wrong; use LoRA \
                 dropout 0 (`--lora-dropout 0`) or train without --gradient-checkpointing"
            ),
        });
    }
    Ok(())
}

fn inner_tables<B: AutodiffBackend>(tables: &RopeTables<B>) -> RopeTables<B::InnerBackend> {
    RopeTables {
        cos: tables.cos.clone().inner(),
        sin: tables.sin.clone().inner(),
    }
}

impl<B: AutodiffBackend> Trunk<B> for Checkpointed<B> {
    fn run(
        &mut self,
        decoder: &Decoder<B>,
        embeds: Tensor<B, 3>,
        tables: &RopeTables<B>,
        bias: Tensor<B, 4>,
        deepstack: Option<&DeepStack<B>>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        check_recomputable(decoder)?;
        let [batch, seq, d_model] = embeds.dims();
        let device = embeds.device();
        let inner_ds = deepstack.map(|ds| DeepStack {
            slots: ds.slots.clone(),
            levels: ds.levels.iter().map(|l| l.clone().inner()).collect(),
        });
        let scatter = deepstack.map(|ds| ds.scatter_index(batch * seq, &device));
        let (rope, inner_bias) = (inner_tables(tables), bias.clone().inner());
        let mut x = embeds.clone().inner();
        let mut inputs = Vec::with_capacity(decoder.layers.len());
        for (k, layer) in decoder.layers.iter().enumerate() {
            inputs.push(x.clone());
            x = layer.valid().forward(x, &rope, inner_bias.clone(), None);
            if let (Some(ds), Some(index)) = (&inner_ds, &scatter) {
                if let Some(level) = ds.levels.get(k) {
                    x = x + ds
                        .scatter(level.clone(), index.clone().inner())
                        .reshape([batch, seq, d_model]);
                }
            }
        }
        let output = Tensor::<B, 3>::from_inner(x).require_grad();
        let deepstack = deepstack.cloned().zip(scatter);
        self.tapes.push(DecoderTape {
            layers: decoder.layers.clone(),
            inputs,
            output: output.clone(),
            tables: tables.clone(),
            bias,
            embeds,
            deepstack,
        });
        Ok(decoder.norm.forward(output))
    }
}

impl<B: AutodiffBackend> DecoderTape<B> {
    /// Number of taped layers.
    pub fn n_layers(&self) -> usize {
        self.inputs.len()
    }

    /// The recompute passes, given the gradient `grad` of the loss at the trunk's output (`None`:
    /// the loss does not depend on this trunk, nothing to do). `skip_layer` leaves one layer's
    /// recompute out (its parameters get no gradient and the chain stops there), for tests that
    /// show the recompute matters.
    fn backward_from(
        mut self,
        grad: Option<Tensor<B::InnerBackend, 3>>,
        skip_layer: Option<usize>,
        sink: &mut impl FnMut(B::Gradients),
    ) {
        let Some(mut g) = grad else { return };
        let [batch, seq, d_model] = g.dims();
        let mut surrogate: Option<Tensor<B, 1>> = None;
        let mut add = |term: Tensor<B, 1>| {
            surrogate = Some(match surrogate.take() {
                Some(s) => s + term,
                None => term,
            });
        };
        for k in (0..self.layers.len()).rev() {
            let input = self.inputs.pop().expect("one taped input per layer");
            if let Some((ds, index)) = &self.deepstack {
                if let Some(level) = ds.levels.get(k) {
                    // Level k is added to layer k's output, whose gradient `g` is.
                    let scattered = ds
                        .scatter(level.clone(), index.clone())
                        .reshape([batch, seq, d_model]);
                    add((scattered * Tensor::from_inner(g.clone())).sum());
                }
            }
            if skip_layer == Some(k) {
                return;
            }
            let x = Tensor::<B, 3>::from_inner(input).require_grad();
            let y = self.layers[k].forward(x.clone(), &self.tables, self.bias.clone(), None);
            let pass = (y * Tensor::from_inner(g)).sum().backward();
            g = x
                .grad(&pass)
                .unwrap_or_else(|| Tensor::zeros([batch, seq, d_model], &x.device().clone()));
            sink(pass);
        }
        add((self.embeds * Tensor::from_inner(g)).sum());
        // burn cannot tell a tensor without a graph (nothing before the decoder trains) from one
        // with (`is_require_grad` is true for leaves only) and refuses `backward` on the former:
        // a zero leaf anchors the surrogate's graph; its own gradient is dropped.
        let anchor = Tensor::<B, 1>::zeros([1], &self.output.device()).require_grad();
        add(anchor.sum());
        if let Some(s) = surrogate {
            sink(s.backward());
        }
    }
}

/// Back-propagates `loss`, whose graph starts at the leaves of `tapes` (trunks run by
/// [`Checkpointed`]), then recomputes every taped trunk's layers in reverse (module docs).
/// `sink` receives the gradients of each pass in turn; without tapes this is one
/// `loss.backward()`.
pub fn backward_checkpointed<B: AutodiffBackend>(
    loss: Tensor<B, 1>,
    tapes: Vec<DecoderTape<B>>,
    mut sink: impl FnMut(B::Gradients),
) {
    backward_skipping(loss, tapes, None, &mut sink)
}

/// [`backward_checkpointed`] leaving out the recompute of layer `skip_layer` (and of the layers
/// and embeddings before it): a test's way to show the recompute passes carry the gradients.
#[doc(hidden)]
pub fn backward_skipping<B: AutodiffBackend>(
    loss: Tensor<B, 1>,
    tapes: Vec<DecoderTape<B>>,
    skip_layer: Option<usize>,
    sink: &mut impl FnMut(B::Gradients),
) {
    let grads = loss.backward();
    let outputs: Vec<_> = tapes.iter().map(|t| t.output.grad(&grads)).collect();
    sink(grads);
    for (tape, grad) in tapes.into_iter().zip(outputs) {
        tape.backward_from(grad, skip_layer, sink);
    }
}
