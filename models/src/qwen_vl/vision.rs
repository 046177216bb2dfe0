//! The Qwen-VL vision tower (HF `Qwen2VisionTransformerPretrainedModel`,
//! `Qwen2_5_VisionTransformerPretrainedModel`, `Qwen3VLVisionModel`): patch embedding (Qwen3-VL:
//! plus interpolated learned position embeddings), blocks with 2-D rotary attention per image
//! (Qwen2.5-VL: per window, except `fullatt_block_indexes`), the patch merger, and Qwen3-VL's
//! DeepStack mergers on intermediate blocks.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::config::{QwenVisionConfig, QwenVlFamily};
use super::patch_merger::PatchMerger;
use super::position_embedding::interpolated_position_embeddings;
use super::vision_attention::SegmentLayout;
use super::vision_block::VisionBlock;
use super::vision_rope::VisionRotary;
use super::window::{frame_segments, patch_positions, WindowLayout};

#[derive(Module, Debug)]
pub struct QwenVisionTransformer<B: Backend> {
    /// HF's `Conv3d` with kernel = stride = `(T, p, p)` is this linear map on flattened patches
    /// (`[C·T·p·p] → [d_model]`; bias only in Qwen3-VL).
    pub patch_embed: Linear<B>,
    /// Qwen3-VL's learned `side × side` position table.
    pub pos_embed: Option<Embedding<B>>,
    pub blocks: Vec<VisionBlock<B>>,
    pub merger: PatchMerger<B>,
    /// Qwen3-VL: one merger per `deepstack_visual_indexes` entry.
    pub deepstack_mergers: Vec<PatchMerger<B>>,
    pub deepstack_visual_indexes: Vec<usize>,
    #[module(skip)]
    pub rotary: VisionRotary,
    pub spatial_merge_size: usize,
    pub patch_size: usize,
    /// Window side in pixels; `None` = whole-image attention in every block (Qwen2-VL).
    pub window_size: Option<usize>,
    /// Blocks that see whole images when windows are on. Setting it to every block index turns
    /// windows off (tests use this to show windows matter).
    pub fullatt_block_indexes: Vec<usize>,
}

impl<B: Backend> QwenVisionTransformer<B> {
    pub fn init(c: &QwenVisionConfig, device: &B::Device) -> Self {
        Self {
            patch_embed: LinearConfig::new(c.patch_dim(), c.d_model)
                .with_bias(c.family == QwenVlFamily::Qwen3Vl)
                .init(device),
            pos_embed: (c.num_position_embeddings > 0)
                .then(|| EmbeddingConfig::new(c.num_position_embeddings, c.d_model).init(device)),
            blocks: (0..c.depth).map(|_| VisionBlock::init(c, device)).collect(),
            merger: PatchMerger::init(c, false, device),
            deepstack_mergers: c
                .deepstack_visual_indexes
                .iter()
                .map(|_| PatchMerger::init(c, true, device))
                .collect(),
            deepstack_visual_indexes: c.deepstack_visual_indexes.clone(),
            rotary: VisionRotary {
                theta: c.rope_theta,
                head_dim: c.head_dim(),
            },
            spatial_merge_size: c.spatial_merge_size,
            patch_size: c.patch_size,
            window_size: c.window_size,
            fullatt_block_indexes: c.fullatt_block_indexes.clone(),
        }
    }

    /// `pixel_values` `[n_patches, C·T·p·p]` of the images whose grids are `image_grid_thw`
    /// (callers check that the counts agree) → merged tokens `[n_patches / merge², out_dim]`, in
    /// image order, and one such tensor per DeepStack level.
    pub fn forward(
        &self,
        pixel_values: Tensor<B, 2>,
        image_grid_thw: &[[usize; 3]],
    ) -> VisionOutput<B> {
        let device = pixel_values.device();
        let m = self.spatial_merge_size;
        let mut x = self.patch_embed.forward(pixel_values);
        if let Some(table) = &self.pos_embed {
            x = x + interpolated_position_embeddings(table, image_grid_thw, m);
        }
        let [n, _] = x.dims();
        let mut positions = patch_positions(image_grid_thw, m);
        let frames = SegmentLayout::new(&frame_segments(image_grid_thw), n, &device);
        let index = |v: &[usize]| {
            Tensor::<B, 1, Int>::from_data(
                TensorData::new(v.iter().map(|&i| i as i64).collect::<Vec<_>>(), [v.len()]),
                &device,
            )
        };
        // Windows permute whole units within each image, so frame segments stay valid.
        let windows = self.window_size.map(|size| {
            let layout = WindowLayout::new(image_grid_thw, m, size, self.patch_size);
            let perm = layout.patch_permutation(m);
            x = x.clone().select(0, index(&perm));
            positions = perm.iter().map(|&p| positions[p]).collect();
            let segments = SegmentLayout::new(&layout.segments, n, &device);
            (layout, segments)
        });
        let rope = self.rotary.tables::<B>(&positions, &device);
        let mut deepstack = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let segments = match &windows {
                Some((_, w)) if !self.fullatt_block_indexes.contains(&i) => w,
                _ => &frames,
            };
            x = block.forward(x, &rope, segments);
            if let Some(level) = self.deepstack_visual_indexes.iter().position(|&d| d == i) {
                deepstack.push(self.deepstack_mergers[level].forward(x.clone()));
            }
        }
        let merged = self.merger.forward(x);
        let merged = match windows {
            Some((layout, _)) => merged.select(0, index(&layout.inverse())),
            None => merged,
        };
        VisionOutput { merged, deepstack }
    }
}

/// What the vision tower hands the decoder.
#[derive(Debug, Clone)]
pub struct VisionOutput<B: Backend> {
    /// `[n_image_tokens, out_dim]`: the embeddings written over the image-pad tokens.
    pub merged: Tensor<B, 2>,
    /// Qwen3-VL DeepStack: level `k` is added to the hidden states after decoder layer `k` at the
    /// image-pad positions. Empty for the other families (windows never co-occur with it).
    pub deepstack: Vec<Tensor<B, 2>>,
}
