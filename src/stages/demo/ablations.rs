//! `firempo demo --ablations`: the FiRe-MPO paper's ablations on the demo's data, from the same
//! SFT model and samples as the main comparison. Loss ablations: without the KL term (α = 0),
//! without the reverse KL (λ = 1), without the forward KL (λ = 0), without the visual term
//! (γ = 0, the main table's row, reused). Corruption ablations: FiRe-MPO trained on pairs whose
//! corrupted image is whole-image noise, a random crop or the lesion blacked out instead of
//! noise inside the lesion. Each row is compared with FiRe-MPO by the same paired bootstrap CIs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use firempo_datasets::{read_pairs_jsonl, BadRecordPolicy, CorruptionConfig, CorruptionMode};
use firempo_losses::{FiReMpoConfig, PreferenceLoss};

use super::{split_pairs, DemoMethod};
use crate::stages::pairs::PairsStage;

/// Row of the full method in the ablation table (the main table's FiRe-MPO runs).
pub const FULL_ROW: &str = "FiRe-MPO";
/// Row of the visual-term ablation (the main table's runs of it).
pub const NO_VISUAL_ROW: &str = "FiRe-MPO w/o visual";

/// One ablation trained for the table: a FiRe-MPO variant and the corruption its pairs carry.
#[derive(Debug, Clone)]
pub struct Ablation {
    /// The run (row name, folder slug, loss).
    pub method: DemoMethod,
    /// The corruption of the pairs it trains on.
    pub corruption: CorruptionMode,
}

/// The ablations the demo trains (the visual-term one comes from the main comparison).
pub fn ablations() -> Vec<Ablation> {
    let fire = FiReMpoConfig::default();
    let loss = |name, slug, config| Ablation {
        method: DemoMethod {
            name,
            slug,
            loss: PreferenceLoss::FireMpo(config),
        },
        corruption: CorruptionMode::Lesion,
    };
    let corruption = |name, slug, mode| Ablation {
        method: DemoMethod {
            name,
            slug,
            loss: PreferenceLoss::FireMpo(fire),
        },
        corruption: mode,
    };
    vec![
        loss(
            "w/o KL (α 0)",
            "fire-mpo-no-kl",
            FiReMpoConfig { alpha: 0.0, ..fire },
        ),
        loss(
            "w/o RKL (λ 1)",
            "fire-mpo-no-rkl",
            FiReMpoConfig {
                lambda: 1.0,
                ..fire
            },
        ),
        loss(
            "w/o FKL (λ 0)",
            "fire-mpo-no-fkl",
            FiReMpoConfig {
                lambda: 0.0,
                ..fire
            },
        ),
        corruption(
            "corruption: image noise",
            "fire-mpo-image-noise",
            CorruptionMode::ImageNoise,
        ),
        corruption("corruption: crop", "fire-mpo-crop", CorruptionMode::Crop),
        corruption(
            "corruption: black-out",
            "fire-mpo-black-out",
            CorruptionMode::BlackOut,
        ),
    ]
}

/// Folder of the pairs with corruption `mode` under the demo's output (`pairs` for the lesion
/// corruption of the main comparison).
pub fn pairs_dir(out: &Path, mode: CorruptionMode) -> PathBuf {
    match mode {
        CorruptionMode::Lesion => out.join("pairs"),
        other => out.join(format!("pairs-{}", mode_slug(other))),
    }
}

/// The corruption ablations' pair folders (what a rerun of the demo may replace).
pub fn pairs_dirs() -> Vec<String> {
    ablations()
        .iter()
        .filter(|a| a.corruption != CorruptionMode::Lesion)
        .map(|a| format!("pairs-{}", mode_slug(a.corruption)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn mode_slug(mode: CorruptionMode) -> &'static str {
    match mode {
        CorruptionMode::Lesion => "lesion",
        CorruptionMode::ImageNoise => "image-noise",
        CorruptionMode::Crop => "crop",
        CorruptionMode::BlackOut => "black-out",
    }
}

/// Training pairs with corruption `mode`, from the main comparison's samples: the pairs stage
/// rerun with that corruption, split by image as the main pairs are. The held-out pairs must be
/// those of the main comparison (same samples, same images), which is checked: every method is
/// scored on the same held-out pairs.
pub fn corrupted_training_pairs(
    out: &Path,
    records: &Path,
    mode: CorruptionMode,
    seed: u64,
    held_out_every: usize,
    main_held_out: &Path,
) -> anyhow::Result<PathBuf> {
    let main_train = pairs_dir(out, CorruptionMode::Lesion).join("train.jsonl");
    if mode == CorruptionMode::Lesion {
        return Ok(main_train);
    }
    let pairs = PairsStage {
        records: records.to_path_buf(),
        samples: out.join("samples.jsonl"),
        out: pairs_dir(out, mode),
        corruption: Some(CorruptionConfig {
            mode,
            seed,
            ..CorruptionConfig::default()
        }),
        previews: false,
        judge: None,
    }
    .run()?;
    let (train, held_out) = split_pairs(&pairs.path, held_out_every)?;
    let ids = |path: &Path| -> anyhow::Result<Vec<String>> {
        let pairs = read_pairs_jsonl(path, BadRecordPolicy::Stop)?.items;
        Ok(pairs.into_iter().map(|p| p.id).collect())
    };
    anyhow::ensure!(
        ids(&held_out)? == ids(main_held_out)? && ids(&train)? == ids(&main_train)?,
        "the {} pairs ({}) are not the main comparison's pairs with another corruption; the \
         ablation would train or score on other questions",
        mode_slug(mode),
        pairs.path.display()
    );
    Ok(train)
}
