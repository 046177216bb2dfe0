//! Shared-prefix scoring gives the log-probs of separate full sequences, and gradients reach the
//! image encoder through the prefix.

use crate::common;

use burn::backend::Autodiff;
use burn::tensor::{
    activation::log_softmax, backend::Backend, Distribution, Int, Tensor, TensorData,
};
use common::B;
use firempo_models::{ScoringInput, VlmConfig, VlmInput};

const TOL: f32 = 1e-4;

fn ints<Bk: Backend, const D: usize>(v: Vec<i64>, shape: [usize; D]) -> Tensor<Bk, D, Int> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// Two prefixes (the second left-padded by 2), three answers of up to 4 tokens each.
/// Prefix token rows and answer token rows (right-padded with 0).
type HostCase = (Vec<Vec<i64>>, Vec<Vec<Vec<i64>>>);

fn input<Bk: Backend>(config: &VlmConfig) -> (ScoringInput<Bk>, HostCase) {
    let img = config.image_token_id as i64;
    let n_img = config.image_tokens_per_image();
    let mut p0 = vec![1, 7];
    p0.extend(std::iter::repeat_n(img, n_img));
    p0.extend([11, 12, 13]);
    let mut p1 = vec![1, 8];
    p1.extend(std::iter::repeat_n(img, n_img));
    p1.push(21);
    let len = p0.len();
    let padded1: Vec<i64> = [vec![0, 0], p1.clone()].concat();
    let mask: Vec<i64> = [vec![1; len], vec![0, 0], vec![1; len - 2]].concat();
    let answers = vec![
        vec![vec![30, 31, 32, 33], vec![40, 41, 0, 0], vec![50, 0, 0, 0]],
        vec![
            vec![60, 61, 62, 0],
            vec![70, 71, 72, 73],
            vec![80, 81, 0, 0],
        ],
    ];
    let input = ScoringInput {
        prefix_ids: ints([p0.clone(), padded1].concat(), [2, len]),
        prefix_mask: Some(ints(mask, [2, len])),
        pixel_values: Some(Tensor::random(
            [2, 3, 32, 32],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        )),
        answer_ids: ints(
            answers.iter().flatten().flatten().copied().collect(),
            [2, 3, 4],
        ),
    };
    (input, (vec![p0, p1], answers))
}

#[test]
fn shared_prefix_equals_separate_sequences() {
    let device = Default::default();
    let config = VlmConfig::tiny();
    let model = config.init::<B>(&device);
    let (input, (prefixes, answers)) = input::<B>(&config);
    let pixels = input.pixel_values.clone().unwrap();
    let shared = log_softmax(model.score_answers(input.clone()).unwrap(), 3);
    let batched = log_softmax(model.score_answers_separately(input).unwrap(), 3);
    let mut worst = 0f32;
    for (p, prefix) in prefixes.iter().enumerate() {
        for (i, answer) in answers[p].iter().enumerate() {
            let real: Vec<i64> = answer.iter().copied().take_while(|&t| t != 0).collect();
            // Independent, unpadded forward of `prefix + answer`.
            let seq = [prefix.clone(), real.clone()].concat();
            let n = seq.len();
            let px = pixels.clone().slice([p..p + 1, 0..3, 0..32, 0..32]);
            let full = model
                .forward(VlmInput::new(ints(seq, [1, n])).with_pixels(px))
                .unwrap();
            let full = log_softmax(full, 2);
            for (t, &tok) in real.iter().enumerate() {
                let want: f32 = full
                    .clone()
                    .slice([
                        0..1,
                        prefix.len() - 1 + t..prefix.len() + t,
                        tok as usize..tok as usize + 1,
                    ])
                    .into_scalar();
                for got_t in [&shared, &batched] {
                    let got: f32 = got_t
                        .clone()
                        .slice([p..p + 1, i..i + 1, t..t + 1, tok as usize..tok as usize + 1])
                        .into_scalar();
                    worst = worst.max((got - want).abs());
                }
            }
        }
    }
    eprintln!("shared-prefix max abs diff of log-probs: {worst:e}");
    assert!(worst <= TOL, "max |Δ log p| = {worst:e}");
}

#[test]
fn gradients_flow_through_the_prefix_into_the_vision_tower() {
    type A = Autodiff<B>;
    let device = Default::default();
    let config = VlmConfig::tiny();
    let model = config.init::<A>(&device);
    let (input, _) = input::<A>(&config);
    let logits = model.score_answers(input).unwrap();
    let loss = log_softmax(logits, 3)
        .slice([0..2, 0..3, 0..4, 30..31])
        .sum();
    let grads = loss.backward();
    let vision = model.vision.as_ref().unwrap();
    let g = vision
        .patch_embedding
        .weight
        .grad(&grads)
        .expect("patch embedding receives a gradient");
    assert!(g.abs().sum().into_scalar() > 0.0);
    let g = model.decoder.layers[0]
        .self_attn
        .q_proj
        .base
        .weight
        .grad(&grads)
        .unwrap();
    assert!(g.abs().sum().into_scalar() > 0.0);
}

/// Activation checkpointing: the gradients of every trainable parameter from
/// `backward_checkpointed` (per-layer recompute passes plus the embeddings' surrogate pass)
/// equal those of one plain backward, on LLaVA and Qwen3-VL (DeepStack), LoRA and full training.
mod checkpointing {
    use burn::backend::Autodiff;
    use burn::module::{AutodiffModule, ModuleVisitor, Param};
    use burn::optim::{GradientsAccumulator, GradientsParams};
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::{activation::log_softmax, Distribution, Tensor};
    use firempo_models::{
        backward_skipping, Checkpointed, Decoder, FullGraph, LoraConfig, QwenScoringInput, Trunk,
        VlmConfig,
    };

    use super::{input, B};
    use crate::qwen_vl_fixture::{fixture_input, load};

    type A = Autodiff<B>;
    const REL: f64 = 1e-6;

    /// Compares two gradient sets over the trainable parameters.
    struct Compare<'a> {
        plain: &'a GradientsParams,
        other: &'a GradientsParams,
        /// Max over parameters of max |Δ| / max |plain|.
        worst_rel: f64,
        plain_sum: f64,
        /// Parameters with a gradient in one set only.
        missing: usize,
        params: usize,
    }

    impl<'a> Compare<'a> {
        fn run<M: AutodiffModule<A>>(
            model: &M,
            plain: &'a GradientsParams,
            other: &'a GradientsParams,
        ) -> Self {
            let mut cmp = Self {
                plain,
                other,
                worst_rel: 0.0,
                plain_sum: 0.0,
                missing: 0,
                params: 0,
            };
            model.visit(&mut cmp);
            cmp
        }
    }

    impl<Bk: AutodiffBackend> ModuleVisitor<Bk> for Compare<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            if !param.val().is_require_grad() {
                return;
            }
            self.params += 1;
            let plain = self.plain.get::<Bk::InnerBackend, D>(param.id);
            let other = self.other.get::<Bk::InnerBackend, D>(param.id);
            match (plain, other) {
                (Some(p), Some(c)) => {
                    let scale = p.clone().abs().max().into_scalar().elem::<f64>();
                    let diff = (p.clone() - c).abs().max().into_scalar().elem::<f64>();
                    self.plain_sum += p.abs().sum().into_scalar().elem::<f64>();
                    self.worst_rel = self.worst_rel.max(diff / scale.max(1e-30));
                }
                (None, None) => {}
                _ => self.missing += 1,
            }
        }
    }

    use burn::tensor::ElementConversion;

    /// Gradients of `loss` (and of the tapes' recompute passes), accumulated as the trainer does.
    fn gradients<M: AutodiffModule<A>>(
        model: &M,
        loss: Tensor<A, 1>,
        trunk: Option<Checkpointed<A>>,
        skip_layer: Option<usize>,
    ) -> GradientsParams {
        let mut acc = GradientsAccumulator::<M>::new();
        let mut sink = |g| acc.accumulate(model, GradientsParams::from_grads(g, model));
        let tapes = trunk.map(Checkpointed::into_tapes).unwrap_or_default();
        backward_skipping(loss, tapes, skip_layer, &mut sink);
        acc.grads()
    }

    /// `Σ w · log_softmax(logits)` with fixed random `w`: every answer logit matters.
    fn loss_of(logits: Tensor<A, 4>, weights: &Tensor<A, 4>) -> Tensor<A, 1> {
        (log_softmax(logits, 3) * weights.clone()).sum()
    }

    /// Plain against checkpointed gradients of the scores `score(trunk)` of `model`; asserts
    /// they agree within [`REL`], are not all zero, and that leaving out layer 0's recompute
    /// loses gradients.
    fn compare<M: AutodiffModule<A>>(
        name: &str,
        model: &M,
        score: &dyn Fn(&mut dyn Trunk<A>) -> Tensor<A, 4>,
    ) {
        let logits = score(&mut FullGraph);
        let weights = Tensor::<A, 4>::random(
            logits.dims(),
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        let plain = gradients(model, loss_of(logits, &weights), None, None);
        let checkpointed = |skip_layer| {
            let mut trunk = Checkpointed::new();
            let logits = score(&mut trunk);
            gradients(model, loss_of(logits, &weights), Some(trunk), skip_layer)
        };
        let ckpt = checkpointed(None);
        let cmp = Compare::run(model, &plain, &ckpt);
        eprintln!(
            "{name}: {} trainable tensors, worst relative |Δgrad| {:e}",
            cmp.params, cmp.worst_rel
        );
        assert!(cmp.plain_sum > 0.0, "{name}: gradients are all zero");
        assert_eq!(cmp.missing, 0, "{name}: a gradient in one mode only");
        assert!(
            cmp.worst_rel <= REL,
            "{name}: relative |Δgrad| {:e}",
            cmp.worst_rel
        );
        let skipped = checkpointed(Some(0));
        assert!(
            Compare::run(model, &plain, &skipped).missing > 0,
            "{name}: without layer 0's recompute its parameters must lose their gradients"
        );
    }

    /// Nonzero `B` in every adapter, so `A` gets gradients too (fresh adapters have `B = 0`).
    fn random_b(decoder: Decoder<A>) -> Decoder<A> {
        decoder.map_projections(|_, mut lin| {
            if let Some(adapter) = lin.adapter.as_mut() {
                let dims = adapter.b.dims();
                adapter.b = Param::from_tensor(Tensor::random(
                    dims,
                    Distribution::Normal(0.0, 0.1),
                    &Default::default(),
                ));
            }
            lin
        })
    }

    fn lora() -> LoraConfig {
        LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            ..LoraConfig::default()
        }
    }

    #[test]
    fn llava_checkpointed_gradients_equal_the_plain_backward() {
        let device = Default::default();
        let config = VlmConfig::tiny();
        let (input, _) = input::<A>(&config);
        let host = input.host().unwrap();
        // Full training: every weight, the vision tower and embeddings through the surrogate.
        let full = config.init::<A>(&device);
        compare("llava full", &full, &|trunk| {
            full.score_answers_host_with(host.clone(), &device, trunk)
                .unwrap()
        });
        let mut adapted = config
            .init::<A>(&device)
            .with_lora(&lora(), &device)
            .unwrap();
        adapted.decoder = random_b(adapted.decoder);
        compare("llava lora", &adapted, &|trunk| {
            adapted
                .score_answers_host_with(host.clone(), &device, trunk)
                .unwrap()
        });
    }

    #[test]
    fn checkpointing_refuses_lora_dropout() {
        let device = Default::default();
        let config = VlmConfig::tiny();
        let (input, _) = input::<A>(&config);
        let model = config
            .init::<A>(&device)
            .with_lora(
                &LoraConfig {
                    dropout: 0.1,
                    ..lora()
                },
                &device,
            )
            .unwrap();
        let err = model
            .score_answers_host_with(input.host().unwrap(), &device, &mut Checkpointed::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dropout") && err.contains("--lora-dropout 0"),
            "{err}"
        );
    }

    #[test]
    fn qwen3_vl_checkpointed_gradients_equal_the_plain_backward() {
        let prompts = fixture_input::<A>("qwen3_vl");
        let input = QwenScoringInput {
            prefix_ids: prompts.input_ids.clone(),
            prefix_mask: prompts.attention_mask.clone(),
            pixel_values: prompts.pixel_values.clone(),
            image_grid_thw: prompts.image_grid_thw.clone(),
            answer_ids: vec![
                vec![vec![5, 17, 33, 1], vec![44, 9, 71, 2]],
                vec![vec![60, 61, 62, 1], vec![3, 99, 14, 15]],
            ],
        };
        // Full training: DeepStack levels from a trainable tower reach it through the surrogate.
        let full = load::<A>("qwen3_vl");
        assert!(!full.config.vision.deepstack_visual_indexes.is_empty());
        compare("qwen3_vl full", &full, &|trunk| {
            full.score_answers_with(input.clone(), trunk).unwrap()
        });
        let device = Default::default();
        let mut adapted = load::<A>("qwen3_vl").with_lora(&lora(), &device).unwrap();
        adapted.decoder = random_b(adapted.decoder);
        compare("qwen3_vl lora", &adapted, &|trunk| {
            adapted.score_answers_with(input.clone(), trunk).unwrap()
        });
    }
}
