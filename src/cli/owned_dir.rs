//! Output folders a command may replace on a rerun without deleting anything else.
//!
//! A command that replaces its previous output (`demo`, `losses`) first writes
//! `DIR/.firempo-owner.json` naming itself and the entries it is about to write. A rerun removes
//! only the entries the previous marker lists, and only when that marker names the same command;
//! a folder that holds anything else (a user's files, another stage's run, the working directory)
//! is refused with an error, never deleted.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// File name of the marker.
pub const MARKER: &str = ".firempo-owner.json";

/// What a command wrote into a folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Owner {
    /// The command, e.g. `demo`.
    command: String,
    /// Entries (direct children of the folder) the command writes.
    entries: Vec<String>,
}

/// Makes `dir` ready for `command` to write `entries` into: creates it, or replaces the entries a
/// previous run of the same command listed, or refuses a folder holding anything it did not write.
///
/// Returns the paths removed (empty for a new or empty folder).
pub fn claim_output_dir(
    dir: &Path,
    command: &str,
    entries: &[String],
) -> anyhow::Result<Vec<PathBuf>> {
    let marker = dir.join(MARKER);
    let mut removed = Vec::new();
    if dir.exists() {
        anyhow::ensure!(
            dir.is_dir(),
            "--out {} is not a folder; choose a folder for `firempo {command}`",
            dir.display()
        );
        let previous = read_owner(&marker)?;
        let owned: Vec<String> = match &previous {
            Some(owner) if owner.command == command => owner.entries.clone(),
            _ => Vec::new(),
        };
        let foreign = foreign_entries(dir, &owned)?;
        if !foreign.is_empty() {
            let what = match &previous {
                Some(owner) if owner.command != command => {
                    format!("it holds the output of `firempo {}`", owner.command)
                }
                _ => format!("it holds files firempo {command} did not write"),
            };
            anyhow::bail!(
                "--out {} is not empty and {what} ({}); choose another --out or empty the folder \
                 yourself (firempo never deletes what it did not write)",
                dir.display(),
                sample_names(&foreign)
            );
        }
        for entry in owned {
            let path = dir.join(&entry);
            if remove_entry(&path)? {
                removed.push(path);
            }
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let owner = Owner {
        command: command.to_string(),
        entries: entries.to_vec(),
    };
    fs::write(&marker, serde_json::to_string_pretty(&owner)? + "\n")
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(removed)
}

fn read_owner(marker: &Path) -> anyhow::Result<Option<Owner>> {
    if !marker.exists() {
        return Ok(None);
    }
    let text =
        fs::read_to_string(marker).with_context(|| format!("reading {}", marker.display()))?;
    let owner = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is damaged; remove it only if the folder's contents can go",
            marker.display()
        )
    })?;
    Ok(Some(owner))
}

/// Children of `dir` other than the marker and the `owned` entries.
fn foreign_entries(dir: &Path, owned: &[String]) -> anyhow::Result<Vec<String>> {
    let mut foreign = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != MARKER && !owned.contains(&name) {
            foreign.push(name);
        }
    }
    foreign.sort();
    Ok(foreign)
}

fn sample_names(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Removes a file or folder the marker lists; `false` when it was not there.
fn remove_entry(path: &Path) -> anyhow::Result<bool> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(false);
    };
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .with_context(|| format!("removing the previous run's {}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("firempo-owned-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn replaces_only_what_the_same_command_wrote() {
        let dir = scratch("replace");
        let entries = vec!["seed-0".to_string(), "results.md".to_string()];
        assert!(claim_output_dir(&dir, "demo", &entries).unwrap().is_empty());
        fs::create_dir_all(dir.join("seed-0/data")).unwrap();
        fs::write(dir.join("results.md"), "table").unwrap();
        let removed = claim_output_dir(&dir, "demo", &entries).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!dir.join("seed-0").exists() && !dir.join("results.md").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_folder_with_other_files_and_keeps_them() {
        let dir = scratch("foreign");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = claim_output_dir(&dir, "demo", &["seed-0".into()]).unwrap_err();
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert_eq!(fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
        assert!(!dir.join(MARKER).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_another_commands_output() {
        let dir = scratch("other");
        claim_output_dir(&dir, "losses", &["checkpoints".into()]).unwrap();
        fs::create_dir_all(dir.join("checkpoints")).unwrap();
        let err = claim_output_dir(&dir, "demo", &["checkpoints".into()]).unwrap_err();
        assert!(err.to_string().contains("firempo losses"), "{err}");
        assert!(dir.join("checkpoints").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
