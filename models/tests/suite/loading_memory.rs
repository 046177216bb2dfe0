//! Host memory while loading a multi-GB sharded checkpoint, generated here at run time (never
//! committed): a LLaMA-style causal LM, d_model 2048, 16 layers, bf16, 4 shards, 1.9 GB.
//!
//! Ignored by default (it writes ~2 GB to the temp directory and takes a minute):
//! `cargo test -p firempo-models --test suite loading_memory:: -- --ignored --nocapture`.
//! Each load runs in a child process (this test binary again) so its peak RSS (`VmHWM`) is its
//! own; the report gives the peak minus the loaded model's own bytes: what loading costs on top.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::Flex;
use firempo_models::loading::LoadOptions;
use firempo_models::{load_pretrained_with, WeightDType};

const D_MODEL: usize = 2048;
const D_FF: usize = 5632;
const LAYERS: usize = 16;
const VOCAB: usize = 32000;
const SHARDS: usize = 4;
const CHILD: &str = "FIREMPO_LOADING_MEMORY_CHILD";

/// Every tensor of the synthetic checkpoint: (name, [out, in] or [n]).
fn tensors() -> Vec<(String, Vec<usize>)> {
    let mut t = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![VOCAB, D_MODEL],
    )];
    for i in 0..LAYERS {
        let n = format!("model.layers.{i}");
        for p in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            t.push((format!("{n}.self_attn.{p}.weight"), vec![D_MODEL, D_MODEL]));
        }
        t.push((format!("{n}.mlp.gate_proj.weight"), vec![D_FF, D_MODEL]));
        t.push((format!("{n}.mlp.up_proj.weight"), vec![D_FF, D_MODEL]));
        t.push((format!("{n}.mlp.down_proj.weight"), vec![D_MODEL, D_FF]));
        t.push((format!("{n}.input_layernorm.weight"), vec![D_MODEL]));
        t.push((
            format!("{n}.post_attention_layernorm.weight"),
            vec![D_MODEL],
        ));
    }
    t.push(("model.norm.weight".into(), vec![D_MODEL]));
    t.push(("lm_head.weight".into(), vec![VOCAB, D_MODEL]));
    t
}

/// Bytes of the model once loaded in `dtype`: projections in `dtype`, the rest f32.
fn model_bytes(dtype: WeightDType) -> u64 {
    let half = if dtype.is_half() { 2 } else { 4 };
    tensors()
        .iter()
        .map(|(name, shape)| {
            let n = shape.iter().product::<usize>() as u64;
            if name.contains("_proj") {
                n * half
            } else {
                n * 4
            }
        })
        .sum()
}

/// Writes the checkpoint (bf16 values in [-0.02, 0.02]) streaming, one tensor at a time.
fn write_checkpoint(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": D_MODEL, "intermediate_size": D_FF, "num_hidden_layers": LAYERS,
        "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 128,
        "vocab_size": VOCAB, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 4096, "tie_word_embeddings": false, "hidden_act": "silu",
        "attention_bias": false, "mlp_bias": false, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "bfloat16"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let all = tensors();
    let per_shard = all.len().div_ceil(SHARDS);
    let mut weight_map = serde_json::Map::new();
    for (s, chunk) in all.chunks(per_shard).enumerate() {
        let file = format!("model-{:05}-of-{SHARDS:05}.safetensors", s + 1);
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        for (name, shape) in chunk {
            let len = 2 * shape.iter().product::<usize>();
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + len]}),
            );
            offset += len;
            weight_map.insert(name.clone(), file.clone().into());
        }
        let mut header = serde_json::Value::Object(header).to_string().into_bytes();
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let mut out = BufWriter::new(std::fs::File::create(dir.join(&file)).unwrap());
        out.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        out.write_all(&header).unwrap();
        for (k, (_, shape)) in chunk.iter().enumerate() {
            let n = shape.iter().product::<usize>();
            let bytes: Vec<u8> = (0..n)
                .flat_map(|i| {
                    let x = 0.02 * (((i * 7 + k * 13) % 2001) as f32 / 1000.0 - 1.0);
                    half::bf16::from_f32(x).to_le_bytes()
                })
                .collect();
            out.write_all(&bytes).unwrap();
        }
        out.flush().unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// `VmHWM` and `VmRSS` of this process, bytes.
fn peak_and_current_rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmHWM:"), kb("VmRSS:"))
}

/// The child: loads `dir` on flex in `dtype`, prints `peak current` RSS bytes.
fn child(dir: &Path, dtype: WeightDType) {
    let options = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    let model = load_pretrained_with::<Flex>(dir, &options, &Default::default()).unwrap();
    let (peak, now) = peak_and_current_rss();
    println!("RSS {peak} {now}");
    drop(model);
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

#[test]
#[ignore = "writes a 1.9 GB checkpoint; run with --ignored --nocapture"]
fn loading_peak_rss_is_the_model_plus_about_one_tensor() {
    if let Ok(spec) = std::env::var(CHILD) {
        let (dtype, dir) = spec.split_once(':').unwrap();
        child(Path::new(dir), dtype.parse().unwrap());
        return;
    }
    let dir = std::env::temp_dir().join(format!("firempo-loading-memory-{}", std::process::id()));
    write_checkpoint(&dir);
    let on_disk: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let largest = 2 * (VOCAB * D_MODEL) as u64; // embed_tokens / lm_head, bf16 on disk
    eprintln!(
        "checkpoint: {:.2} GiB in {SHARDS} shards, largest tensor {:.3} GiB (bf16; {:.3} GiB as f32)",
        gib(on_disk),
        gib(largest),
        gib(2 * largest)
    );
    let exe: PathBuf = std::env::current_exe().unwrap();
    let mut overheads = Vec::new();
    for dtype in [WeightDType::F32, WeightDType::Bf16] {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "loading_memory::loading_peak_rss_is_the_model_plus_about_one_tensor",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, format!("{dtype}:{}", dir.display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.split_once("RSS "))
            .unwrap_or_else(|| {
                panic!(
                    "child failed: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .1;
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let (peak, now, model) = (v[0], v[1], model_bytes(dtype));
        eprintln!(
            "flex, weights {dtype}: peak RSS {:.2} GiB, after load {:.2} GiB, model {:.2} GiB, \
             peak − model {:.3} GiB",
            gib(peak),
            gib(now),
            gib(model),
            gib(peak.saturating_sub(model))
        );
        overheads.push((dtype, peak.saturating_sub(model)));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    for (dtype, overhead) in overheads {
        // The largest tensor as f32 (decoded + its transpose/device copy), plus ~150 MiB of
        // process baseline: far below the 1.9 GB a whole-checkpoint read costs.
        assert!(
            overhead <= 3 * 2 * largest + (150 << 20),
            "{dtype}: loading costs {:.2} GiB above the model",
            gib(overhead)
        );
    }
}
