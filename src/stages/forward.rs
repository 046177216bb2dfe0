//! `firempo forward`: one forward pass on the tensors a Hugging Face processor produced, logits
//! written to a safetensors file and, with a reference, compared position by position.
//!
//! This is how a user checks that their checkpoint (or PEFT adapter) loads right: run the same
//! inputs through transformers and through firempo and compare. It needs no tokenizer or image
//! processor files, only the model's weights and config, so it isolates the model from the
//! preprocessing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use firempo_models::loading::LoadOptions;
use firempo_models::precision::{check_backend_dtype, WeightDType};
use firempo_models::QwenVlInput;

use crate::backend::BackendTask;
use crate::pipeline::hf_checkpoint::is_hf_checkpoint;
use crate::pipeline::model::Model;
use crate::pipeline::model_dir::load_model_weights;
use crate::pipeline::tensor_file::{write_f32_tensors, HostTensor, TensorFile};

/// The input tensors `forward` reads; anything else in the file is listed as not read.
pub const INPUT_NAMES: [&str; 4] = [
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_thw",
];

/// Settings of one `firempo forward` run.
#[derive(Debug, Clone)]
pub struct ForwardStage {
    /// A HF checkpoint directory or a firempo model directory.
    pub model: PathBuf,
    /// A PEFT LoRA adapter directory applied on top.
    pub adapter: Option<PathBuf>,
    /// An original-LLaVA checkpoint's vision tower directory, instead of `mm_vision_tower`.
    pub vision_tower: Option<PathBuf>,
    /// The processor's tensors.
    pub inputs: PathBuf,
    /// Where `logits` are written.
    pub out: PathBuf,
    /// A file with reference `logits` (e.g. transformers') to compare against.
    pub compare: Option<PathBuf>,
    /// The dtype of the decoder projections' frozen base weights (`--dtype`); bf16/f16 need a
    /// backend with half-precision tensors (flex, wgpu, cuda). Logits are f32 either way.
    pub dtype: WeightDType,
}

/// How one row's logits compare with the reference, over its attended positions.
#[derive(Debug, Clone, PartialEq)]
pub struct RowComparison {
    pub row: usize,
    pub positions: usize,
    pub max_abs_diff: f32,
}

/// What a forward run did.
#[derive(Debug, Clone)]
pub struct ForwardReport {
    /// `[batch, seq_len, vocab]`.
    pub logits_shape: Vec<usize>,
    /// Tensors in the inputs file that the model does not read (e.g. reference `logits`).
    pub not_read: Vec<String>,
    /// Per-row comparison, when a reference was given.
    pub comparison: Option<Vec<RowComparison>>,
}

impl ForwardReport {
    /// The largest difference over all rows (0 without a reference).
    pub fn max_abs_diff(&self) -> f32 {
        self.comparison
            .iter()
            .flatten()
            .map(|r| r.max_abs_diff)
            .fold(0.0, nan_max)
    }
}

/// The model inputs of one run, on the host, as the processor saved them.
struct ForwardInputs {
    input_ids: HostTensor<i64>,
    attention_mask: Option<HostTensor<i64>>,
    pixel_values: Option<HostTensor<f32>>,
    /// Qwen-VL: `[n_images, 3]` patch grids `(t, h, w)`.
    image_grid_thw: Option<HostTensor<i64>>,
    path: PathBuf,
}

impl ForwardInputs {
    fn read(file: &TensorFile) -> anyhow::Result<Self> {
        let path = file.path().display();
        let input_ids = file.required_ints("input_ids")?;
        anyhow::ensure!(
            input_ids.shape.len() == 2 && input_ids.shape.iter().all(|&d| d > 0),
            "{path}: `input_ids` has shape {:?}; it must be [batch, seq_len] (save the \
             processor's `input_ids` as it returns them, with return_tensors=\"pt\")",
            input_ids.shape
        );
        let attention_mask = file.ints("attention_mask")?;
        if let Some(mask) = &attention_mask {
            anyhow::ensure!(
                mask.shape == input_ids.shape,
                "{path}: `attention_mask` has shape {:?} but `input_ids` {:?}; they must match",
                mask.shape,
                input_ids.shape
            );
            anyhow::ensure!(
                mask.values.iter().all(|&v| v == 0 || v == 1),
                "{path}: `attention_mask` must hold only 0 (padding) and 1 (token)"
            );
        }
        let pixel_values = file.floats("pixel_values")?;
        if let Some(pixels) = &pixel_values {
            anyhow::ensure!(
                pixels.values.iter().all(|v| v.is_finite()),
                "{path}: `pixel_values` holds NaN or infinite values"
            );
        }
        let image_grid_thw = file.ints("image_grid_thw")?;
        if let Some(grid) = &image_grid_thw {
            anyhow::ensure!(
                grid.shape.len() == 2 && grid.shape[1] == 3 && grid.values.iter().all(|&v| v > 0),
                "{path}: `image_grid_thw` has shape {:?}; it must be [n_images, 3] positive \
                 (t, h, w) patch counts",
                grid.shape
            );
        }
        Ok(Self {
            input_ids,
            attention_mask,
            pixel_values,
            image_grid_thw,
            path: file.path().into(),
        })
    }

    fn mask_rows(&self) -> Vec<Vec<bool>> {
        match &self.attention_mask {
            Some(mask) => mask
                .rows()
                .into_iter()
                .map(|r| r.into_iter().map(|v| v == 1).collect())
                .collect(),
            None => self
                .input_ids
                .rows()
                .into_iter()
                .map(|r| vec![true; r.len()])
                .collect(),
        }
    }

    /// `pixel_values` as a rank-`D` tensor, checking the rank the model family takes.
    fn pixels<B: Backend, const D: usize>(
        &self,
        layout: &str,
        device: &B::Device,
    ) -> anyhow::Result<Option<Tensor<B, D>>> {
        let Some(pixels) = &self.pixel_values else {
            return Ok(None);
        };
        let shape: [usize; D] = pixels.shape.clone().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{}: `pixel_values` has shape {:?}; this model takes {layout}",
                self.path.display(),
                pixels.shape
            )
        })?;
        let data = TensorData::new(pixels.values.clone(), shape);
        Ok(Some(Tensor::from_data(data, device)))
    }
}

/// Loads `dir`: a firempo model directory (`model.json`) or a HF checkpoint of any family, its
/// decoder projections in `options.dtype` (llava-hf and original LLaVA: decoded straight into
/// it; firempo directories and Qwen-VL: converted after an f32 load).
fn load_forward_model<B: Backend>(
    dir: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> anyhow::Result<Model<B>> {
    if dir.join("model.json").is_file() {
        Ok(load_model_weights::<B>(dir, device)?.cast_base_weights(options.dtype))
    } else if is_hf_checkpoint(dir) {
        Model::load_hf(dir, options, device)
    } else {
        anyhow::bail!(
            "{} is neither a firempo model directory (model.json) nor a HuggingFace \
             checkpoint directory (config.json with safetensors weights); check the path",
            dir.display()
        )
    }
}

impl ForwardInputs {
    /// Logits `[batch, seq, vocab]` and, per row, which of their positions are tokens (for
    /// original-LLaVA `-200` ids, those of the expanded sequence the logits are in).
    fn logits<B: Backend>(
        &self,
        model: &Model<B>,
        device: &B::Device,
    ) -> anyhow::Result<(Tensor<B, 3>, Vec<Vec<bool>>)> {
        let inputs = self;
        let path = inputs.path.display();
        match model {
            Model::Llava(model) => {
                anyhow::ensure!(
                    inputs.image_grid_thw.is_none(),
                    "{path} has `image_grid_thw`, a Qwen-VL input, but the model is LLaVA-style"
                );
                // Host ids straight to the model: nothing uploaded is read back.
                let (ids, attended) =
                    model.expand_host_ids(inputs.input_ids.rows(), inputs.mask_rows())?;
                let layout = "[n_images, channels, height, width]";
                let pixels = inputs.pixels::<B, 4>(layout, device)?;
                let hidden = model.forward_hidden_host(&ids, &attended, pixels, &mut [], device)?;
                Ok((model.decoder.logits(hidden), attended))
            }
            Model::QwenVl(model) => {
                let layout = "[n_patches, channels · temporal_patch · patch · patch]";
                let pixel_values = inputs.pixels::<B, 2>(layout, device)?;
                let grids = inputs.image_grid_thw.as_ref().map(HostTensor::rows);
                anyhow::ensure!(
                    pixel_values.is_none() || grids.is_some(),
                    "{path} has `pixel_values` but no `image_grid_thw`: a Qwen-VL processor \
                     returns both; save both"
                );
                let input = QwenVlInput {
                    input_ids: inputs.input_ids.rows(),
                    attention_mask: inputs.mask_rows(),
                    pixel_values,
                    image_grid_thw: grids
                        .unwrap_or_default()
                        .into_iter()
                        .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
                        .collect(),
                };
                Ok((model.forward(&input)?, input.attention_mask))
            }
        }
    }
}

/// The larger of two differences, NaN if either is (`f32::max` drops NaN: a NaN logit would
/// pass a comparison).
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// Per-row max |Δ| between `logits` and the reference over the attended positions.
fn compare(
    logits: &HostTensor<f32>,
    reference: &HostTensor<f32>,
    attended: &[Vec<bool>],
    path: &Path,
) -> anyhow::Result<Vec<RowComparison>> {
    anyhow::ensure!(
        reference.shape == logits.shape,
        "{}: reference `logits` have shape {:?} but the model produced {:?}; compare logits of \
         the same inputs",
        path.display(),
        reference.shape,
        logits.shape
    );
    let [_, seq_len, vocab] = logits.shape[..] else {
        anyhow::bail!("logits must be [batch, seq_len, vocab]");
    };
    Ok(attended
        .iter()
        .enumerate()
        .map(|(row, valid)| {
            let mut max_abs_diff = 0f32;
            for position in (0..seq_len).filter(|&p| valid[p]) {
                let start = (row * seq_len + position) * vocab;
                let got = &logits.values[start..start + vocab];
                let want = &reference.values[start..start + vocab];
                for (g, w) in got.iter().zip(want) {
                    max_abs_diff = nan_max(max_abs_diff, (g - w).abs());
                }
            }
            RowComparison {
                row,
                positions: valid.iter().filter(|&&v| v).count(),
                max_abs_diff,
            }
        })
        .collect())
}

impl BackendTask for ForwardStage {
    type Output = ForwardReport;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<ForwardReport> {
        // No gradients: the inner backend keeps no autodiff graph.
        check_backend_dtype::<B::InnerBackend>(self.dtype, &device)?;
        let file = TensorFile::open(&self.inputs)?;
        let inputs = ForwardInputs::read(&file)?;
        let reference = match &self.compare {
            Some(path) => Some(TensorFile::open(path)?.required_floats("logits")?),
            None => None,
        };
        let options = LoadOptions {
            vision_tower: self.vision_tower.clone(),
            dtype: self.dtype,
        };
        let mut model = load_forward_model::<B::InnerBackend>(&self.model, &options, &device)?;
        if let Some(adapter) = &self.adapter {
            model = model.with_adapter_files(adapter, &device)?;
        }
        let (logits, attended) = inputs
            .logits(&model, &device)
            .with_context(|| format!("running the model on {}", self.inputs.display()))?;
        let logits = HostTensor {
            shape: logits.dims().to_vec(),
            values: logits
                .into_data()
                .convert::<f32>()
                .to_vec()
                .map_err(|e| anyhow::anyhow!("reading logits back: {e:?}"))?,
        };
        let comparison = match (&reference, &self.compare) {
            (Some(reference), Some(path)) => Some(compare(&logits, reference, &attended, path)?),
            _ => None,
        };
        let logits_shape = logits.shape.clone();
        write_f32_tensors(&self.out, &BTreeMap::from([("logits".to_string(), logits)]))?;
        let not_read = file
            .names()
            .into_iter()
            .filter(|n| !INPUT_NAMES.contains(&n.as_str()))
            .collect();
        Ok(ForwardReport {
            logits_shape,
            not_read,
            comparison,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: Vec<usize>, values: Vec<f32>) -> HostTensor<f32> {
        HostTensor { shape, values }
    }

    #[test]
    fn comparison_skips_padding_and_keeps_nan() {
        // Two rows, two positions, vocab 2; row 1's first position is padding.
        let got = tensor(vec![2, 2, 2], vec![0.0, 1.0, 2.0, 3.0, 9.0, 9.0, 4.0, 5.5]);
        let want = tensor(vec![2, 2, 2], vec![0.0, 1.5, 2.0, 3.0, 0.0, 0.0, 4.0, 5.0]);
        let attended = vec![vec![true, true], vec![false, true]];
        let rows = compare(&got, &want, &attended, Path::new("ref")).unwrap();
        assert_eq!(rows[0].max_abs_diff, 0.5);
        assert_eq!(rows[1].max_abs_diff, 0.5);
        assert_eq!((rows[0].positions, rows[1].positions), (2, 1));
        let nan = tensor(
            vec![2, 2, 2],
            vec![f32::NAN, 1.0, 2.0, 3.0, 9.0, 9.0, 4.0, 5.5],
        );
        let rows = compare(&nan, &want, &attended, Path::new("ref")).unwrap();
        assert!(rows[0].max_abs_diff.is_nan());
        let short = tensor(vec![1, 2, 2], vec![0.0; 4]);
        let err = compare(&short, &want, &attended, Path::new("ref.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ref.safetensors") && err.contains("[1, 2, 2]"),
            "{err}"
        );
    }
}
