//! Qwen2-VL / Qwen2.5-VL / Qwen3-VL parity with HF transformers 5.24 on the tiny random checkpoints of
//! `fixtures/make_qwen_vl_fixtures.py`: M-RoPE positions equal, image-processor pixel values
//! within 1e-5, logits within 1e-4 at every real (non-padding) position on ndarray f32; the
//! M-RoPE, window, interleaving and DeepStack parts each move the logits (so a missing part fails a test); bad inputs
//! give errors naming the file and field.

use crate::common;

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor};
use common::{fixture, Expected, B};
use firempo_models::qwen_vl::rope_index;
use firempo_models::{
    is_qwen_vl_config, load_qwen_vl, read_qwen_vl_config, ModelError, QwenImageProcessor, QwenVl,
    QwenVlFamily, QwenVlInput,
};

struct Case {
    model: QwenVl<B>,
    exp: Expected,
    input: QwenVlInput<B>,
}

fn host<const D: usize>(t: Tensor<B, D, Int>) -> (Vec<usize>, Vec<i64>) {
    let dims = t.dims().to_vec();
    (dims, t.into_data().convert::<i64>().to_vec().unwrap())
}

fn case(dir: &str) -> Case {
    let model = load_qwen_vl::<B>(&fixture(dir), &Default::default()).unwrap();
    let exp = Expected::open(fixture(dir).join("expected.safetensors"));
    let (dims, ids) = host(exp.ints::<2>("input_ids"));
    let (_, mask) = host(exp.ints::<2>("attention_mask"));
    let (_, grids) = host(exp.ints::<2>("image_grid_thw"));
    let seq = dims[1];
    let input = QwenVlInput {
        input_ids: ids.chunks(seq).map(<[i64]>::to_vec).collect(),
        attention_mask: mask
            .chunks(seq)
            .map(|r| r.iter().map(|&m| m == 1).collect())
            .collect(),
        pixel_values: Some(exp.floats::<2>("pixel_values")),
        image_grid_thw: grids
            .chunks(3)
            .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
            .collect(),
    };
    Case { model, exp, input }
}

/// Max |Δ| per batch row over the real (unmasked) positions.
fn row_diffs(got: Tensor<B, 3>, want: Tensor<B, 3>, mask: &[Vec<bool>]) -> Vec<f32> {
    let [batch, seq, vocab] = want.dims();
    let d: Vec<f32> = (got - want)
        .abs()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap();
    (0..batch)
        .map(|b| {
            (0..seq)
                .filter(|&s| mask[b][s])
                .flat_map(|s| {
                    d[(b * seq + s) * vocab..(b * seq + s + 1) * vocab]
                        .iter()
                        .copied()
                })
                .fold(0f32, f32::max)
        })
        .collect()
}

fn check_parity(dir: &str) -> Case {
    let c = case(dir);
    let index = c.model.rope_index(&c.input).unwrap();
    let (dims, want_pos) = host(c.exp.ints::<3>("position_ids"));
    assert_eq!([3, index.batch, index.seq].to_vec(), dims);
    assert_eq!(index.positions, want_pos, "{dir}: M-RoPE positions");
    let (_, deltas) = host(c.exp.ints::<2>("rope_deltas"));
    assert_eq!(index.rope_deltas, deltas, "{dir}: rope_deltas");

    let logits = c.model.forward(&c.input).unwrap();
    let rows = row_diffs(logits, c.exp.floats::<3>("logits"), &c.input.attention_mask);
    eprintln!("{dir}: max |Δlogit| per row {rows:?}");
    assert!(
        rows.iter().all(|&d| d <= 1e-4),
        "{dir}: max |Δlogit| per row {rows:?}"
    );
    c
}

/// Logits at 1-D positions (`cumsum(mask) − 1` on all three axes): what a model without M-RoPE
/// computes.
fn logits_without_mrope(c: &Case) -> Tensor<B, 3> {
    let pos = firempo_models::mask::positions_from_mask(&c.input.attention_mask);
    let pos = firempo_models::mask::int_tensor::<B>(&pos, &Default::default());
    let pos = pos.unsqueeze::<3>().repeat_dim(0, 3);
    c.model.forward_with_positions(&c.input, pos).unwrap()
}

fn moved(c: &Case, other: Tensor<B, 3>) -> f32 {
    let rows = row_diffs(other, c.exp.floats::<3>("logits"), &c.input.attention_mask);
    rows.into_iter().fold(0f32, f32::max)
}

fn check_processor(dir: &str) {
    let c = Expected::open(fixture(dir).join("expected.safetensors"));
    let processor =
        QwenImageProcessor::from_file(&fixture(dir).join("preprocessor_config.json")).unwrap();
    let images: Vec<PathBuf> = ["wide.png", "tall.png"]
        .iter()
        .map(|n| fixture("qwen_vl_images").join(n))
        .collect();
    let got = processor.process_files(&images).unwrap();
    let (_, grids) = host(c.ints::<2>("image_grid_thw"));
    let got_grids: Vec<i64> = got
        .image_grid_thw
        .iter()
        .flatten()
        .map(|&v| v as i64)
        .collect();
    assert_eq!(got_grids, grids, "{dir}: image_grid_thw");
    let want = c.floats::<2>("pixel_values");
    assert_eq!([got.n_patches(), got.patch_dim], want.dims());
    let diff = (got.tensor::<B>(&Default::default()) - want)
        .abs()
        .max()
        .into_scalar();
    eprintln!("{dir}: max |Δpixel| {diff:e}");
    assert!(diff <= 1e-5, "{dir}: max |Δpixel| {diff:e}");
}

#[test]
fn qwen2_vl_hub_layout_matches_transformers() {
    let c = check_parity("qwen2_vl");
    assert_eq!(c.model.config.family, QwenVlFamily::Qwen2Vl);
    assert_eq!(c.model.config.mrope_section, vec![2, 3, 3]);
    assert!(c.model.decoder.lm_head.is_some());
    let off = moved(&c, logits_without_mrope(&c));
    eprintln!("qwen2_vl: 1-D positions move logits by {off:e}");
    assert!(off > 1e-3, "M-RoPE off moved logits by only {off:e}");
}

#[test]
fn qwen2_5_vl_windows_and_transformers5_layout_match_transformers() {
    let mut c = check_parity("qwen2_5_vl");
    assert_eq!(c.model.config.family, QwenVlFamily::Qwen25Vl);
    assert!(c.model.decoder.lm_head.is_none(), "tied embeddings");
    let off = moved(&c, logits_without_mrope(&c));
    eprintln!("qwen2_5_vl: 1-D positions move logits by {off:e}");
    assert!(off > 1e-3, "M-RoPE off moved logits by only {off:e}");
    // Every block full attention = no windows.
    c.model.visual.fullatt_block_indexes = (0..c.model.visual.blocks.len()).collect();
    let full = c.model.forward(&c.input).unwrap();
    let off = moved(&c, full);
    eprintln!("qwen2_5_vl: windows off move logits by {off:e}");
    assert!(off > 1e-3, "windows off moved logits by only {off:e}");
}

#[test]
fn qwen3_vl_deepstack_interleaved_mrope_qk_norm_match_transformers() {
    let mut c = check_parity("qwen3_vl");
    let config = &c.model.config;
    assert_eq!(config.family, QwenVlFamily::Qwen3Vl);
    assert!(config.mrope_interleaved && config.qk_norm);
    assert_eq!(
        config.text.head_dim, 32,
        "head_dim independent of hidden_size / heads"
    );
    assert_eq!(c.model.visual.deepstack_mergers.len(), 2);
    let off = moved(&c, logits_without_mrope(&c));
    eprintln!("qwen3_vl: 1-D positions move logits by {off:e}");
    assert!(off > 1e-3, "M-RoPE off moved logits by only {off:e}");
    c.model.config.mrope_interleaved = false;
    let chunked = c.model.forward(&c.input).unwrap();
    let off = moved(&c, chunked);
    eprintln!("qwen3_vl: chunked instead of interleaved M-RoPE moves logits by {off:e}");
    assert!(off > 1e-3, "interleaving off moved logits by only {off:e}");
    c.model.config.mrope_interleaved = true;
    c.model.visual.deepstack_visual_indexes.clear();
    let plain = c.model.forward(&c.input).unwrap();
    let off = moved(&c, plain);
    eprintln!("qwen3_vl: DeepStack off moves logits by {off:e}");
    assert!(off > 1e-3, "DeepStack off moved logits by only {off:e}");
}

#[test]
fn image_processor_matches_qwen2vl_image_processor() {
    check_processor("qwen2_vl"); // min_pixels / max_pixels
    check_processor("qwen2_5_vl"); // size.shortest_edge / longest_edge
    check_processor("qwen3_vl"); // patch 16, mean/std 0.5, upscaling branch
}

#[test]
fn dispatch_and_both_config_layouts() {
    assert!(is_qwen_vl_config(&fixture("qwen2_vl/config.json")));
    assert!(is_qwen_vl_config(&fixture("qwen2_5_vl/config.json")));
    assert!(is_qwen_vl_config(&fixture("qwen3_vl/config.json")));
    assert!(!is_qwen_vl_config(&fixture("llava_llama/config.json")));
    let hub = read_qwen_vl_config(&fixture("qwen2_vl/config.json")).unwrap();
    let nested = read_qwen_vl_config(&fixture("qwen2_5_vl/config.json")).unwrap();
    assert_eq!(hub.text.rope_theta, 10_000.0);
    assert_eq!(nested.text.rope_theta, 1e6);
    assert_eq!(nested.vision.window_size, Some(16));
    assert_eq!(nested.vision.fullatt_block_indexes, vec![1, 3]);
    assert_eq!(hub.vision.d_ff, 64);
    assert_eq!(hub.image_token_id, 120);
}

/// A scratch directory holding `files` (name, contents).
fn scratch(name: &str, files: &[(&str, String)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firempo-qwen-vl-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn edited_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    v.to_string()
}

#[test]
fn unknown_model_type_is_refused_naming_file_and_type() {
    let config = edited_json(&fixture("qwen2_vl/config.json"), |v| {
        v["model_type"] = "qwen9_vl".into()
    });
    let dir = scratch("model-type", &[("config.json", config)]);
    let err = load_qwen_vl::<B>(&dir, &Default::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ModelError::UnsupportedArchitecture { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("config.json") && msg.contains("qwen9_vl") && msg.contains("qwen2_5_vl"),
        "{msg}"
    );
}

#[test]
fn image_smaller_than_one_merged_patch_is_refused_naming_it() {
    let processor =
        QwenImageProcessor::from_file(&fixture("qwen2_vl/preprocessor_config.json")).unwrap();
    let tiny = image::DynamicImage::new_rgb8(6, 7); // 42 px < one 8×8 merged patch
    let err = processor
        .process(&[tiny], &[PathBuf::from("tiny.png")])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("tiny.png") && msg.contains("merged patch"),
        "{msg}"
    );
}

#[test]
fn max_pixels_below_min_pixels_is_refused_naming_the_field() {
    let pre = fixture("qwen2_vl/preprocessor_config.json");
    let bad = edited_json(&pre, |v| v["max_pixels"] = 32.into());
    let dir = scratch("max-min", &[("preprocessor_config.json", bad)]);
    let err = QwenImageProcessor::from_file(&dir.join("preprocessor_config.json")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("preprocessor_config.json")
            && msg.contains("max_pixels")
            && msg.contains("min_pixels"),
        "{msg}"
    );
    let pre = fixture("qwen2_5_vl/preprocessor_config.json");
    let bad = edited_json(&pre, |v| v["size"]["longest_edge"] = 10.into());
    let dir = scratch("max-min-size", &[("preprocessor_config.json", bad)]);
    let msg = QwenImageProcessor::from_file(&dir.join("preprocessor_config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("size.longest_edge") && msg.contains("size.shortest_edge"),
        "{msg}"
    );
}

#[test]
fn image_token_count_mismatch_is_refused() {
    let mut c = case("qwen2_vl");
    // Turn one image-pad token of row 0 into text.
    let pad = c.model.config.image_token_id as i64;
    let s = c.input.input_ids[0].iter().position(|&t| t == pad).unwrap();
    c.input.input_ids[0][s] = 5;
    let msg = c.model.forward(&c.input).unwrap_err().to_string();
    assert!(msg.contains("image"), "{msg}");
    let msg = c.model.embed(&c.input).unwrap_err().to_string();
    assert!(
        msg.contains("image tokens") && msg.contains("image_grid_thw"),
        "{msg}"
    );
    let r = rope_index(
        &c.input.input_ids,
        &c.input.attention_mask,
        &c.input.image_grid_thw,
        pad,
        2,
    );
    assert!(r.is_err());
}

#[test]
fn every_missing_unexpected_and_misshaped_tensor_is_named_in_one_error() {
    use safetensors::tensor::{SafeTensors, TensorView};
    let src = fixture("qwen2_vl");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let missing = "visual.blocks.1.attn.qkv.weight";
    let misshaped = "model.layers.0.mlp.up_proj.weight";
    let mut views = Vec::new();
    for (name, view) in st.tensors() {
        if name == missing {
            continue;
        }
        let data = view.data();
        let shape = view.shape().to_vec();
        let (shape, data) = if name == misshaped {
            // Drop the last row: shape [95, 64] instead of [96, 64].
            let row = shape[1] * 4;
            (vec![shape[0] - 1, shape[1]], &data[..data.len() - row])
        } else {
            (shape, data)
        };
        views.push((
            name.clone(),
            TensorView::new(view.dtype(), shape, data).unwrap(),
        ));
    }
    let extra = [0u8; 16];
    views.push((
        "visual.blocks.9.attn.qkv.weight".into(),
        TensorView::new(safetensors::Dtype::F32, vec![4], &extra).unwrap(),
    ));
    let config = std::fs::read_to_string(src.join("config.json")).unwrap();
    let dir = scratch("weights", &[("config.json", config)]);
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let msg = load_qwen_vl::<B>(&dir, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("3 problem(s)"), "{msg}");
    assert!(msg.contains(&format!("missing `{missing}`")), "{msg}");
    assert!(
        msg.contains(&format!(
            "`{misshaped}` has shape [95, 64], expected [96, 64]"
        )),
        "{msg}"
    );
    assert!(
        msg.contains("unexpected `visual.blocks.9.attn.qkv.weight`"),
        "{msg}"
    );
}

/// The vision tower's segment attention in blocks of query rows (what bounds a whole-image
/// block's scores) equals the attention in one block: 3 segments whose padding keys are masked,
/// in blocks of 7 rows (the last one ragged).
#[test]
fn segment_attention_in_query_blocks_equals_one_block() {
    use burn::tensor::{Distribution, TensorData};
    use firempo_models::mask::MASKED;
    use firempo_models::qwen_vl::segment_attention;

    let device = Default::default();
    let [s, h, len, hd] = [3, 2, 50, 8];
    let random =
        || Tensor::<B, 4>::random([s, h, len, hd], Distribution::Normal(0.0, 1.0), &device);
    let (q, k, v) = (random(), random(), random());
    // Segment i has 50 − 9i real keys.
    let bias: Vec<f32> = (0..s)
        .flat_map(|i| (0..len).map(move |j| if j < len - 9 * i { 0.0 } else { MASKED }))
        .collect();
    let bias = Tensor::<B, 4>::from_data(TensorData::new(bias, [s, 1, 1, len]), &device);
    let attend = |max_scores| {
        segment_attention(
            q.clone(),
            k.clone(),
            v.clone(),
            bias.clone(),
            0.35,
            max_scores,
        )
        .into_data()
        .to_vec::<f32>()
        .unwrap()
    };
    let whole = attend(usize::MAX);
    let blocked = attend(s * h * len * 7);
    let worst = whole
        .iter()
        .zip(&blocked)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert_eq!(whole.len(), s * h * len * hd);
    assert!(worst <= 1e-6, "max |Δ| {worst:e} between blocked and whole");
}
