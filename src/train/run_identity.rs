//! What defines a training run, recorded in `RUN/run.json` when it starts and compared field by
//! field on `--resume`: the stage, digests of its input files and model, and every setting that
//! changes the result (method, loss and LoRA hyperparameters, batch, lr, seed, steps). Settings
//! that do not change the result (checkpoint frequency, progress bar) are left out, so a resume
//! may change them.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::TrainerConfig;

/// Field of the number of data-parallel peers (absent: 1).
const WORLD_SIZE: &str = "trainer.world_size";

/// File name of the identity inside a run directory.
pub const RUN_IDENTITY_FILE: &str = "run.json";

/// Flat `field → value` map of what defines a run (nested settings as dotted names).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunIdentity {
    fields: BTreeMap<String, Value>,
}

impl RunIdentity {
    /// An identity for a run of `stage` (e.g. `sft`, `align`, `losses`).
    pub fn new(stage: &str) -> Self {
        Self::default().with("stage", stage)
    }

    /// An identity for a run of `stage` from its settings struct, less what never defines a run:
    /// where it is written (`out`), the `resume` flag, and `trainer` (the trainer adds the
    /// settings of it that matter). Callers replace input paths by digests.
    pub fn of_stage(stage: &str, settings: impl Serialize) -> Self {
        Self::new(stage)
            .with("", settings)
            .without("out")
            .without("resume")
            .without("trainer")
    }

    /// Adds `value` under `field`; objects are flattened into `field.key` entries (into `key`
    /// entries when `field` is empty).
    pub fn with(mut self, field: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or_else(|e| Value::String(e.to_string()));
        flatten(field, value, &mut self.fields);
        self
    }

    /// Removes `field` and every `field.*` entry (settings that must not bind a resume).
    pub fn without(mut self, field: &str) -> Self {
        let nested = format!("{field}.");
        self.fields
            .retain(|name, _| name != field && !name.starts_with(&nested));
        self
    }

    /// Adds the SHA-256 of a file's contents under `field` (a data file: records, pairs).
    pub fn with_file_digest(self, field: &str, path: &Path) -> anyhow::Result<Self> {
        // A directory, `/dev/zero` or a FIFO is refused before it is opened (it would be read forever).
        firempo_datasets::require_regular_file(path, "a JSONL file")?;
        let digest = file_digest(path)?;
        Ok(self.with(field, digest))
    }

    /// Adds a digest of a model directory under `field`: the contents of its small files
    /// (configs, tokenizer) and the name, size and modification time of its weight files (hashing
    /// 26 GiB of weights at every start would cost minutes).
    pub fn with_model_dir_digest(self, field: &str, dir: &Path) -> anyhow::Result<Self> {
        let digest = model_dir_digest(dir)?;
        Ok(self.with(field, digest))
    }

    /// Adds the optimization settings that change the result.
    pub(crate) fn with_trainer(self, config: &TrainerConfig) -> Self {
        self.without("trainer")
            .with("trainer", config)
            .without("trainer.checkpoint_every")
            .without("trainer.progress")
            .without("trainer.keep_checkpoints")
            // Checkpointing gives the same gradients (up to float summation order).
            .without("trainer.gradient_checkpointing")
            // Which devices does not change the result, how many peers split a batch is
            // recorded (only when > 1, so single-device runs keep their identity).
            .without("trainer.devices")
            .without("trainer.reshard")
            .with_world_size(config.devices.world_size())
    }

    fn with_world_size(self, peers: usize) -> Self {
        match peers {
            1 => self,
            n => self.with(WORLD_SIZE, n),
        }
    }

    /// The identity without its number of peers (what `--reshard` lets change).
    pub(crate) fn without_world_size(self) -> Self {
        self.without(WORLD_SIZE)
    }

    /// The data-parallel peers of the run (`--devices`; 1 when not recorded).
    pub fn world_size(&self) -> usize {
        self.fields
            .get(WORLD_SIZE)
            .and_then(Value::as_u64)
            .map_or(1, |n| n as usize)
    }

    /// The fields whose values differ, as `field: RUN (in run.json) vs NOW` lines.
    pub fn differences(&self, now: &Self) -> Vec<String> {
        let mut names: Vec<&String> = self.fields.keys().chain(now.fields.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|name| self.fields.get(*name) != now.fields.get(*name))
            .map(|name| {
                let show =
                    |v: Option<&Value>| v.map_or_else(|| "(not set)".into(), Value::to_string);
                format!(
                    "{name}: {} (the run) vs {} (now)",
                    show(self.fields.get(name)),
                    show(now.fields.get(name))
                )
            })
            .collect()
    }

    /// Writes `run_dir/run.json` (through a temporary file and a rename).
    pub fn save(&self, run_dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(run_dir)
            .with_context(|| format!("creating run directory {}", run_dir.display()))?;
        let path = run_dir.join(RUN_IDENTITY_FILE);
        let tmp = run_dir.join(format!("{RUN_IDENTITY_FILE}.tmp"));
        let text = serde_json::to_string_pretty(&self.fields)? + "\n";
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("finalizing {}", path.display()))?;
        Ok(())
    }

    /// Reads `run_dir/run.json`; `None` when the run has none.
    pub fn load(run_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = run_dir.join(RUN_IDENTITY_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let fields = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run identity (JSON object)", path.display()))?;
        Ok(Some(Self { fields }))
    }
}

fn flatten(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, value, out);
            }
        }
        value => {
            out.insert(prefix.to_string(), value);
        }
    }
}

/// Hex SHA-256 of a file's contents.
pub fn file_digest(path: &Path) -> anyhow::Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("reading {} to digest it", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {} to digest it", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Files at most this large are hashed by content in a model directory digest.
const SMALL_FILE: u64 = 16 << 20;

/// Digest of a model directory: its files (see [`RunIdentity::with_model_dir_digest`]) and
/// those of its `adapter/` folder, which hold the weights of an adapter-only model directory.
pub fn model_dir_digest(dir: &Path) -> anyhow::Result<String> {
    let top = files_digest(dir)?;
    let adapter = dir.join("adapter");
    if adapter.is_dir() {
        let mut hasher = Sha256::new();
        hasher.update(top.as_bytes());
        hasher.update(files_digest(&adapter)?.as_bytes());
        Ok(hex(&hasher.finalize()))
    } else {
        Ok(top)
    }
}

/// Digest of the regular files directly in `dir` (subfolders are not followed).
fn files_digest(dir: &Path) -> anyhow::Result<String> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("listing model directory {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing model directory {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    let mut hasher = Sha256::new();
    for entry in entries {
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let name = entry.file_name();
        hasher.update(name.as_encoded_bytes());
        hasher.update(meta.len().to_le_bytes());
        if meta.len() <= SMALL_FILE {
            hasher.update(file_digest(&entry.path())?.as_bytes());
        } else if let Ok(modified) = meta.modified() {
            let since = modified
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            hasher.update(since.as_nanos().to_le_bytes());
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_changed_field() {
        let run = RunIdentity::new("align")
            .with(
                "loss",
                serde_json::json!({"fire_mpo": {"gamma": 0.1, "beta": 0.1}}),
            )
            .with("records", "abc");
        let now = RunIdentity::new("sft")
            .with(
                "loss",
                serde_json::json!({"fire_mpo": {"gamma": 0.2, "beta": 0.1}}),
            )
            .with("records", "abc");
        let diffs = run.differences(&now);
        assert_eq!(diffs.len(), 2, "{diffs:?}");
        assert!(
            diffs[0].starts_with("loss.fire_mpo.gamma: 0.1"),
            "{diffs:?}"
        );
        assert!(diffs[1].starts_with("stage: \"align\""), "{diffs:?}");
        assert!(run.differences(&run.clone()).is_empty());
    }

    #[test]
    fn trainer_fields_leave_out_what_a_resume_may_change() {
        let config = TrainerConfig::default();
        let a = RunIdentity::new("sft").with_trainer(&config);
        let changed = TrainerConfig {
            checkpoint_every: 7,
            progress: false,
            gradient_checkpointing: true,
            ..config.clone()
        };
        assert!(a
            .differences(&RunIdentity::new("sft").with_trainer(&changed))
            .is_empty());
        let other_lr = TrainerConfig { lr: 0.5, ..config };
        let diffs = a.differences(&RunIdentity::new("sft").with_trainer(&other_lr));
        assert_eq!(diffs.len(), 1);
        assert!(diffs[0].starts_with("trainer.lr"), "{diffs:?}");
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("firempo-identity-{}", std::process::id()));
        let identity = RunIdentity::new("losses")
            .with("vocab", 7)
            .with("lora", None::<u8>);
        identity.save(&dir).unwrap();
        assert_eq!(RunIdentity::load(&dir).unwrap(), Some(identity));
        fs::remove_dir_all(&dir).unwrap();
    }
}
