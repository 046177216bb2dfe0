//! Tensor-name tables: one prefix table per checkpoint family, and the per-layer rows.
//!
//! Grep a checkpoint key, land on its row. The rows (relative to a group prefix) are spelled out in
//! [`super::load_pretrained`]'s helpers; the prefixes that differ between the Hub and current
//! transformers are here.

use crate::config::NameStyle;

use super::safetensors::WeightStore;

/// Candidate prefixes of each part of a checkpoint, tried in order.
pub struct FamilyPrefixes {
    pub vision: &'static [&'static str],
    pub projector: &'static [&'static str],
    pub text: &'static [&'static str],
    pub lm_head: &'static [&'static str],
}

/// LLaVA (`LlavaForConditionalGeneration`).
pub const LLAVA: FamilyPrefixes = FamilyPrefixes {
    vision: &[
        // llava-hf on the Hub (transformers < 4.52): CLIPVisionModel wraps `vision_model`.
        "vision_tower.vision_model.",
        // transformers ≥ 4.52 in memory.
        "model.vision_tower.vision_model.",
        // transformers 5 `save_pretrained` output.
        "vision_tower.",
        "model.vision_tower.",
    ],
    projector: &["multi_modal_projector.", "model.multi_modal_projector."],
    text: &[
        // Hub (and transformers 5 `save_pretrained`).
        "language_model.model.",
        // transformers ≥ 4.52 in memory.
        "model.language_model.",
    ],
    lm_head: &["language_model.lm_head.", "lm_head."],
};

/// The original LLaVA repository's layout (`LlavaLlamaForCausalLM`, `LlavaMistralForCausalLM`,
/// `LlavaQwen2ForCausalLM`: `llava/model/llava_arch.py`), as LLaVA-Med v1.5 and HuatuoGPT-Vision
/// publish it. `CLIPVisionTower` wraps `CLIPVisionModel` as `vision_tower`, hence the doubled name;
/// most checkpoints leave the tower out and name its directory in `mm_vision_tower` instead.
pub const ORIGINAL_LLAVA: FamilyPrefixes = FamilyPrefixes {
    vision: &["model.vision_tower.vision_tower.vision_model."],
    // `nn.Sequential(Linear, GELU, Linear)` (`mlp2x_gelu`): rows `0.` and `2.`; `linear`: one
    // `nn.Linear` at the prefix itself.
    projector: &["model.mm_projector."],
    text: &["model."],
    lm_head: &["lm_head."],
};

/// A vision tower's own weights (`CLIPVisionModel` / `CLIPModel` `save_pretrained`, e.g.
/// `openai/clip-vit-large-patch14-336`'s `pytorch_model.bin`).
pub const TOWER_VISION: &str = "vision_model.";

/// Names of the projector's two linear layers under its prefix: llava-hf's `linear_1`/`linear_2`,
/// or the original repository's `nn.Sequential` indices (GELU sits at `1`).
pub fn projector_layers(original: bool) -> [&'static str; 2] {
    if original {
        ["0", "2"]
    } else {
        ["linear_1", "linear_2"]
    }
}

/// Tensors of a vision-tower file that LLaVA does not read: CLIPModel's text model, projections
/// and `logit_scale`, besides the buffers of [`ignorable`].
pub fn ignorable_in_tower(name: &str) -> bool {
    !name.starts_with(TOWER_VISION) || ignorable(name)
}

/// Plain causal LMs (`LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`).
pub const CAUSAL_LM: FamilyPrefixes = FamilyPrefixes {
    vision: &[],
    projector: &[],
    text: &["model."],
    lm_head: &["lm_head."],
};

/// The prefixes a particular checkpoint uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPrefixes {
    pub vision: String,
    pub projector: String,
    pub text: String,
    pub lm_head: String,
    pub style: NameStyle,
}

/// Picks, per part, the first prefix under which the part's anchor tensor exists. When none
/// matches, the first candidate is kept so the missing-tensor report shows the expected names.
pub fn resolve(store: &WeightStore, family: &FamilyPrefixes) -> ResolvedPrefixes {
    let pick = |candidates: &[&str], anchor: &str| {
        candidates
            .iter()
            .find(|p| store.contains(&format!("{p}{anchor}")))
            .or(candidates.first())
            .map_or(String::new(), |p| p.to_string())
    };
    let text = pick(family.text, "embed_tokens.weight");
    let style = if text == "model.language_model." {
        NameStyle::Current
    } else if text == "language_model.model." {
        NameStyle::Legacy
    } else {
        NameStyle::Current
    };
    ResolvedPrefixes {
        vision: pick(family.vision, "embeddings.position_embedding.weight"),
        projector: pick(family.projector, "linear_1.weight"),
        lm_head: pick(family.lm_head, "weight"),
        text,
        style,
    }
}

/// Decoder-module path prefix PEFT uses for adapters, per name style and family.
pub fn peft_text_prefix(style: NameStyle, has_vision: bool) -> &'static str {
    match (has_vision, style) {
        (false, _) | (true, NameStyle::Original) => "base_model.model.model.",
        (true, NameStyle::Legacy) => "base_model.model.language_model.model.",
        (true, NameStyle::Current) => "base_model.model.model.language_model.",
    }
}

/// Decoder-module path prefixes PEFT uses for Qwen-VL adapters: transformers ≥ 4.52 nests the
/// decoder as `model.language_model` (what firempo writes); older transformers (and adapters on
/// the Hub made with them) name it `model`. The vision tower (`model.visual.` / `visual.`) is
/// never adapted.
pub const QWEN_VL_PEFT_TEXT: [&str; 2] = [
    "base_model.model.model.language_model.",
    "base_model.model.model.",
];

/// Buffers and heads some checkpoints carry that the model does not use.
pub fn ignorable(name: &str) -> bool {
    name.ends_with("embeddings.position_ids")
        || name.ends_with("rotary_emb.inv_freq")
        // SigLIP's attention-pooling head; LLaVA reads hidden states before it.
        || name.contains("vision_model.head.")
        || name.starts_with("vision_tower.head.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_prefixes_follow_the_checkpoint_layout() {
        assert_eq!(
            peft_text_prefix(NameStyle::Legacy, true),
            "base_model.model.language_model.model."
        );
        assert_eq!(
            peft_text_prefix(NameStyle::Current, true),
            "base_model.model.model.language_model."
        );
        assert_eq!(
            peft_text_prefix(NameStyle::Original, true),
            "base_model.model.model."
        );
        assert!(ignorable_in_tower(
            "text_model.encoder.layers.0.mlp.fc1.weight"
        ));
        assert!(ignorable_in_tower("logit_scale"));
        assert!(!ignorable_in_tower("vision_model.post_layernorm.weight"));
        assert!(ignorable(
            "vision_tower.vision_model.embeddings.position_ids"
        ));
        assert!(!ignorable(
            "vision_tower.vision_model.embeddings.position_embedding.weight"
        ));
    }
}
