//! The Qwen-VL vision tower (HF `Qwen2VisionTransformerPretrainedModel`,
//! `Qwen2_5_VisionTransformerPretrainedModel`): patch embedding, blocks with 2-D rotary attention
//! per image (Qwen2.5-VL: per window, except `fullatt_block_indexes`), and the patch merger.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::config::QwenVisionConfig;
use super::patch_merger::PatchMerger;
use super::vision_attention::SegmentLayout;
use super::vision_block::VisionBlock;
use super::vision_rope::VisionRotary;
use super::window::{frame_segments, patch_positions, WindowLayout};

#[derive(Module, Debug)]
pub struct QwenVisionTransformer<B: Backend> {
    /// HF's `Conv3d` with kernel = stride = `(T, p, p)` is this linear map on flattened patches
    /// (`[C·T·p·p] → [d_model]`, no bias).
    pub patch_embed: Linear<B>,
    pub blocks: Vec<VisionBlock<B>>,
    pub merger: PatchMerger<B>,
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
                .with_bias(false)
                .init(device),
            blocks: (0..c.depth).map(|_| VisionBlock::init(c, device)).collect(),
            merger: PatchMerger::init(c, device),
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
    /// image order.
    pub fn forward(
        &self,
        pixel_values: Tensor<B, 2>,
        image_grid_thw: &[[usize; 3]],
    ) -> Tensor<B, 2> {
        let device = pixel_values.device();
        let m = self.spatial_merge_size;
        let mut x = self.patch_embed.forward(pixel_values);
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
        for (i, block) in self.blocks.iter().enumerate() {
            let segments = match &windows {
                Some((_, w)) if !self.fullatt_block_indexes.contains(&i) => w,
                _ => &frames,
            };
            x = block.forward(x, &rope, segments);
        }
        let merged = self.merger.forward(x);
        match windows {
            Some((layout, _)) => merged.select(0, index(&layout.inverse())),
            None => merged,
        }
    }
}
