//! Write failures that say what happened: burn's recorder reports a full disk as "invalid value
//! write: MessagePack", so a failed write is followed by a small probe write to the same folder
//! that tells a full disk (or a read-only one) apart from other failures.

use std::fmt::Display;
use std::io::{ErrorKind, Write};
use std::path::Path;

/// The error for a failed write of `what` into `dir`, naming a full or read-only disk when a
/// probe write to `dir` finds one.
pub fn explain_write_failure(dir: &Path, what: &str, err: impl Display) -> anyhow::Error {
    let probe_file = dir.join(".firempo-write-probe");
    let found = probe(&probe_file);
    let _ = std::fs::remove_file(&probe_file);
    explain(found, dir, what, err)
}

fn explain(probe: Option<ErrorKind>, dir: &Path, what: &str, err: impl Display) -> anyhow::Error {
    match probe {
        Some(ErrorKind::StorageFull | ErrorKind::QuotaExceeded) => anyhow::anyhow!(
            "no space left on device: {} (writing {what}); free some space and rerun with \
             --resume: the last complete checkpoint is intact",
            dir.display()
        ),
        Some(ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied) => anyhow::anyhow!(
            "cannot write {what} to {}: the folder is read-only ({err})",
            dir.display()
        ),
        _ => anyhow::anyhow!("writing {what} to {} failed: {err}", dir.display()),
    }
}

/// Writes 64 KiB to `file` and syncs; the error kind when that fails.
fn probe(file: &Path) -> Option<ErrorKind> {
    std::fs::File::create(file)
        .and_then(|mut f| f.write_all(&[0u8; 64 * 1024]).and_then(|_| f.sync_all()))
        .err()
        .map(|e| e.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_sees_a_full_device() {
        // Linux's /dev/full answers every write with ENOSPC, as a full disk does.
        if Path::new("/dev/full").exists() {
            assert_eq!(probe(Path::new("/dev/full")), Some(ErrorKind::StorageFull));
        }
        let dir = std::env::temp_dir();
        let file = dir.join(format!("firempo-probe-{}", std::process::id()));
        assert_eq!(probe(&file), None);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn a_full_disk_is_named_with_the_folder() {
        let dir = Path::new("/runs/sft/run/checkpoints/step-000050.partial");
        let recorder_error = "invalid value write: MessagePack";
        let full = explain(
            Some(ErrorKind::StorageFull),
            dir,
            "the optimizer state",
            recorder_error,
        );
        assert_eq!(
            full.to_string(),
            "no space left on device: /runs/sft/run/checkpoints/step-000050.partial (writing the \
             optimizer state); free some space and rerun with --resume: the last complete \
             checkpoint is intact"
        );
        let other = explain(None, dir, "the optimizer state", recorder_error);
        assert!(other.to_string().contains(recorder_error), "{other}");
    }
}
