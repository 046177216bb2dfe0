//! The tiny Qwen-VL fixtures of `fixtures/make_qwen_vl_fixtures.py` as model + input, for the
//! scoring, generation and LoRA tests.
#![allow(dead_code)]

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use firempo_models::{load_qwen_vl, QwenVl, QwenVlInput};

use crate::common::{fixture, Expected};

/// The three families' fixture directories.
pub const FAMILIES: [&str; 3] = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"];

pub fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D, Int>) -> (Vec<usize>, Vec<i64>) {
    let dims = t.dims().to_vec();
    (dims, t.into_data().convert::<i64>().to_vec().unwrap())
}

/// The fixture's batch: two prompts (row 1 left-padded), wide.png in row 0, tall.png in row 1.
pub fn fixture_input<Bk: Backend>(dir: &str) -> QwenVlInput<Bk> {
    let exp = Expected::open(fixture(dir).join("expected.safetensors"));
    let (dims, ids) = host(exp.ints::<2>("input_ids"));
    let (_, mask) = host(exp.ints::<2>("attention_mask"));
    let (_, grids) = host(exp.ints::<2>("image_grid_thw"));
    let pixels = exp.floats::<2>("pixel_values");
    let seq = dims[1];
    QwenVlInput {
        input_ids: ids.chunks(seq).map(<[i64]>::to_vec).collect(),
        attention_mask: mask
            .chunks(seq)
            .map(|r| r.iter().map(|&m| m == 1).collect())
            .collect(),
        pixel_values: Some(Tensor::from_data(pixels.into_data(), &Default::default())),
        image_grid_thw: grids
            .chunks(3)
            .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
            .collect(),
    }
}

pub fn load<Bk: Backend>(dir: &str) -> QwenVl<Bk> {
    load_qwen_vl::<Bk>(&fixture(dir), &Default::default()).unwrap()
}

/// Row `b` of `input` alone, without padding, with its own image's patches.
pub fn single_row<Bk: Backend>(input: &QwenVlInput<Bk>, b: usize) -> QwenVlInput<Bk> {
    let offset: usize = input.image_grid_thw[..b]
        .iter()
        .map(|g| g[0] * g[1] * g[2])
        .sum();
    let g = input.image_grid_thw[b];
    let ids: Vec<i64> = input.input_ids[b]
        .iter()
        .zip(&input.attention_mask[b])
        .filter(|(_, &m)| m)
        .map(|(&t, _)| t)
        .collect();
    QwenVlInput {
        attention_mask: vec![vec![true; ids.len()]],
        input_ids: vec![ids],
        pixel_values: input
            .pixel_values
            .clone()
            .map(|px| px.narrow(0, offset, g[0] * g[1] * g[2])),
        image_grid_thw: vec![g],
    }
}

/// Host copy of a float tensor.
pub fn floats<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}
