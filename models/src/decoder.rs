//! LLaMA-family decoder: token embedding, pre-norm blocks (RMSNorm → attention, RMSNorm →
//! SwiGLU MLP), final RMSNorm and an LM head that may be tied to the embedding
//! (HF `modeling_llama.py`, `modeling_qwen2.py`, `modeling_mistral.py`; llama-burn `transformer.rs`).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::activation::Activation;
use crate::attention::{Attention, AttentionKernel};
use crate::config::TextConfig;
use crate::error::ModelError;
use crate::kv_cache::KvCache;
use crate::lora::{LoraConfig, LoraLinear};
use crate::rope::{Rope, RopeTables};
use crate::swiglu::swiglu;

/// SwiGLU feed-forward: `down(act(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: LoraLinear<B>,
    pub up_proj: LoraLinear<B>,
    pub down_proj: LoraLinear<B>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> Mlp<B> {
    pub fn init(c: &TextConfig, device: &B::Device) -> Self {
        let lin = |d_in, d_out| {
            LoraLinear::new(
                LinearConfig::new(d_in, d_out)
                    .with_bias(c.mlp_bias)
                    .init(device),
            )
        };
        Self {
            gate_proj: lin(c.d_model, c.d_ff),
            up_proj: lin(c.d_model, c.d_ff),
            down_proj: lin(c.d_ff, c.d_model),
            activation: c.activation,
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let (gate, up) = (self.gate_proj.forward(x.clone()), self.up_proj.forward(x));
        let hidden = match self.activation {
            Activation::Silu => swiglu(gate, up),
            act => act.forward(gate) * up,
        };
        self.down_proj.forward(hidden)
    }
}

#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> DecoderLayer<B> {
    pub fn init(c: &TextConfig, device: &B::Device) -> Self {
        let norm = || {
            RmsNormConfig::new(c.d_model)
                .with_epsilon(c.rms_norm_eps)
                .init(device)
        };
        Self {
            input_layernorm: norm(),
            self_attn: Attention::init(c, device),
            post_attention_layernorm: norm(),
            mlp: Mlp::init(c, device),
        }
    }

    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &crate::rope::RopeTables<B>,
        bias: Tensor<B, 4>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let h = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rope, bias, cache);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }

    /// Applies `f` to each of the seven projections, named as PEFT names them.
    pub fn map_projections(self, f: &mut impl FnMut(&str, LoraLinear<B>) -> LoraLinear<B>) -> Self {
        let Self {
            input_layernorm,
            self_attn,
            post_attention_layernorm,
            mlp,
        } = self;
        let self_attn = Attention {
            q_proj: f("q_proj", self_attn.q_proj),
            k_proj: f("k_proj", self_attn.k_proj),
            v_proj: f("v_proj", self_attn.v_proj),
            o_proj: f("o_proj", self_attn.o_proj),
            ..self_attn
        };
        let mlp = Mlp {
            gate_proj: f("gate_proj", mlp.gate_proj),
            up_proj: f("up_proj", mlp.up_proj),
            down_proj: f("down_proj", mlp.down_proj),
            ..mlp
        };
        Self {
            input_layernorm,
            self_attn,
            post_attention_layernorm,
            mlp,
        }
    }

    /// The seven projections with their PEFT names, for saving adapters.
    pub fn projections(&self) -> [(&'static str, &LoraLinear<B>); 7] {
        [
            ("self_attn.q_proj", &self.self_attn.q_proj),
            ("self_attn.k_proj", &self.self_attn.k_proj),
            ("self_attn.v_proj", &self.self_attn.v_proj),
            ("self_attn.o_proj", &self.self_attn.o_proj),
            ("mlp.gate_proj", &self.mlp.gate_proj),
            ("mlp.up_proj", &self.mlp.up_proj),
            ("mlp.down_proj", &self.mlp.down_proj),
        ]
    }
}

/// The language model.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    pub rope: Rope,
}

impl<B: Backend> Decoder<B> {
    pub fn init(c: &TextConfig, device: &B::Device) -> Self {
        Self {
            embed_tokens: EmbeddingConfig::new(c.vocab_size, c.d_model).init(device),
            layers: (0..c.n_layers)
                .map(|_| DecoderLayer::init(c, device))
                .collect(),
            norm: RmsNormConfig::new(c.d_model)
                .with_epsilon(c.rms_norm_eps)
                .init(device),
            lm_head: (!c.tie_word_embeddings).then(|| {
                LinearConfig::new(c.d_model, c.vocab_size)
                    .with_bias(false)
                    .init(device)
            }),
            rope: Rope {
                theta: c.rope_theta,
                head_dim: c.head_dim,
            },
        }
    }

    /// Token embeddings `[batch, seq_len, d_model]`.
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embed_tokens.forward(ids)
    }

    /// Runs the blocks and the final norm over `embeds` `[batch, seq_len, d_model]` at `positions`
    /// `[batch, seq_len]` with the additive `bias` `[batch, 1, seq_len, past + seq_len]`.
    ///
    /// `caches` holds one [`KvCache`] per layer for incremental decoding, or is empty (training,
    /// scoring): then nothing is cached. Returns normalized hidden states `[batch, seq_len, d_model]`.
    pub fn forward(
        &self,
        embeds: Tensor<B, 3>,
        positions: Tensor<B, 2, Int>,
        bias: Tensor<B, 4>,
        caches: &mut [KvCache<B>],
    ) -> Tensor<B, 3> {
        self.forward_tables(embeds, &self.rope.tables(positions), bias, caches)
    }

    /// [`Decoder::forward`] with precomputed rotary tables, for position schemes other than 1-D
    /// positions (Qwen-VL's multimodal RoPE, [`Rope::mrope_tables`]).
    pub fn forward_tables(
        &self,
        embeds: Tensor<B, 3>,
        tables: &RopeTables<B>,
        bias: Tensor<B, 4>,
        caches: &mut [KvCache<B>],
    ) -> Tensor<B, 3> {
        self.forward_tables_with(embeds, tables, bias, caches, None)
    }

    /// [`Decoder::forward_tables`] with DeepStack features (Qwen3-VL) added to the hidden states
    /// after the first layers; used alike by forward, scoring and generation prefill.
    pub fn forward_tables_with(
        &self,
        embeds: Tensor<B, 3>,
        tables: &RopeTables<B>,
        bias: Tensor<B, 4>,
        caches: &mut [KvCache<B>],
        deepstack: Option<&DeepStack<B>>,
    ) -> Tensor<B, 3> {
        assert!(
            caches.is_empty() || caches.len() == self.layers.len(),
            "need one KvCache per layer ({}), got {}",
            self.layers.len(),
            caches.len()
        );
        let [batch, seq, d_model] = embeds.dims();
        let scatter = deepstack.map(|ds| ds.scatter_index(batch * seq, &embeds.device()));
        let mut x = embeds;
        let mut caches = caches.iter_mut();
        for (k, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, tables, bias.clone(), caches.next());
            if let (Some(ds), Some(index)) = (deepstack, &scatter) {
                if let Some(level) = ds.levels.get(k) {
                    x = x + ds
                        .scatter(level.clone(), index.clone())
                        .reshape([batch, seq, d_model]);
                }
            }
        }
        self.norm.forward(x)
    }

    /// Vocabulary logits `[batch, seq_len, vocab]` from normalized hidden states.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => hidden.matmul(self.embed_tokens.weight.val().transpose().unsqueeze::<3>()),
        }
    }

    /// Sets how every layer computes attention (benchmarks compare [`AttentionKernel::Dense`]).
    pub fn with_attention_kernel(mut self, kernel: AttentionKernel) -> Self {
        for layer in &mut self.layers {
            layer.self_attn.kernel = kernel;
        }
        self
    }

    /// Applies `f(name, layer)` to every projection of every layer.
    pub fn map_projections(mut self, f: impl FnMut(&str, LoraLinear<B>) -> LoraLinear<B>) -> Self {
        self.map_projections_in_place(f);
        self
    }

    /// [`Decoder::map_projections`] on a borrowed decoder (the models' LoRA operations).
    pub fn map_projections_in_place(
        &mut self,
        mut f: impl FnMut(&str, LoraLinear<B>) -> LoraLinear<B>,
    ) {
        self.layers = std::mem::take(&mut self.layers)
            .into_iter()
            .map(|layer| layer.map_projections(&mut f))
            .collect();
    }

    /// Attaches fresh adapters to the projections `config` targets (call
    /// [`Decoder::check_lora`] first).
    pub fn attach_lora(&mut self, config: &LoraConfig, device: &B::Device) {
        self.map_projections_in_place(|name, lin| {
            if config.targets(name) {
                lin.attach(config, device)
            } else {
                lin
            }
        })
    }

    /// Validates `config` and refuses a rank above `min(d_in, d_out)` of an adapted projection:
    /// it adds parameters without adding capacity (and a huge one exhausts memory before
    /// training starts). The error names the narrowest targeted projection.
    pub fn check_lora(&self, config: &LoraConfig) -> Result<(), ModelError> {
        config.validate()?;
        let narrowest = self
            .layers
            .first()
            .into_iter()
            .flat_map(|layer| layer.projections())
            .filter(|(name, _)| config.targets(name.rsplit('.').next().unwrap_or(name)))
            .map(|(name, layer)| {
                let [d_in, d_out] = layer.base.weight.shape().dims();
                (name, d_in, d_out)
            })
            .min_by_key(|&(_, d_in, d_out)| d_in.min(d_out));
        if let Some((name, d_in, d_out)) = narrowest {
            if config.rank > d_in.min(d_out) {
                return Err(ModelError::InvalidConfig {
                    field: "lora.rank".into(),
                    message: format!(
                        "{} is above min(d_in, d_out) = {} of the adapted `{name}` ({d_in} → \
                         {d_out}); use a rank ≤ {} (8–64 is usual)",
                        config.rank,
                        d_in.min(d_out),
                        d_in.min(d_out)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Switches every adapter on or off (tensors shared, not cloned).
    pub fn set_adapters_enabled(&mut self, enabled: bool) {
        self.map_projections_in_place(|_, l| l.set_adapter_enabled(enabled))
    }

    /// Folds every adapter into its base weight; afterwards there are no adapters.
    pub fn merge_lora(&mut self) {
        self.map_projections_in_place(|_, l| l.merge())
    }

    /// Whether any projection carries an adapter.
    pub fn has_lora(&self) -> bool {
        self.layers
            .iter()
            .any(|l| l.projections().iter().any(|(_, p)| p.adapter.is_some()))
    }
}

/// DeepStack features (Qwen3-VL, HF `Qwen3VLTextModel._deepstack_process`): level `k`
/// (`[n_slots, d_model]`) is added after decoder layer `k` at the image positions `slots`.
#[derive(Debug, Clone)]
pub struct DeepStack<B: Backend> {
    /// Flat `batch · seq` indices of the image tokens, in the order of the feature rows.
    pub slots: Vec<usize>,
    /// One `[n_slots, d_model]` tensor per level.
    pub levels: Vec<Tensor<B, 2>>,
}

impl<B: Backend> DeepStack<B> {
    /// Row `i` of the `n`-row scatter: 0 (a zero row) or `1 + k` for slot `k`.
    pub(crate) fn scatter_index(&self, n: usize, device: &B::Device) -> Tensor<B, 1, Int> {
        let mut source = vec![0i64; n];
        for (k, &slot) in self.slots.iter().enumerate() {
            source[slot] = k as i64 + 1;
        }
        Tensor::from_data(TensorData::new(source, [n]), device)
    }

    /// `[n, d]` zeros with `level[k]` at row `slots[k]`.
    pub(crate) fn scatter(&self, level: Tensor<B, 2>, index: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let [_, d] = level.dims();
        let zero = Tensor::zeros([1, d], &level.device());
        Tensor::cat(vec![zero, level], 0).select(0, index)
    }
}
