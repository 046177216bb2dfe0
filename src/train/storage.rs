//! Write failures that say what happened: burn's recorder reports a full disk as "invalid value
//! write: MessagePack", so a failed write is followed by a small probe write to the same folder
//! that tells a full disk (or a read-only one) apart from other failures.

use std::fmt::Display;
use std::io::{ErrorKind, Write};
use std::path::Path;

/// The error for a failed write of `what` into `dir`, naming a full or read-only disk when the
/// probe finds one.
pub fn explain_write_failure(dir: &Path, what: &str, err: impl Display) -> anyhow::Error {
    match probe(dir) {
        Some(ErrorKind::StorageFull) | Some(ErrorKind::QuotaExceeded) => anyhow::anyhow!(
            "no space left on device: {} (writing {what}); free some space and rerun with \
             --resume: the last complete checkpoint is intact",
            dir.display()
        ),
        Some(ErrorKind::ReadOnlyFilesystem) | Some(ErrorKind::PermissionDenied) => anyhow::anyhow!(
            "cannot write {what} to {}: the folder is read-only ({err})",
            dir.display()
        ),
        _ => anyhow::anyhow!("writing {what} to {} failed: {err}", dir.display()),
    }
}

/// Writes and removes 64 KiB in `dir`; the error kind when that fails.
fn probe(dir: &Path) -> Option<ErrorKind> {
    let path = dir.join(".firempo-write-probe");
    let result = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&[0u8; 64 * 1024])
            .and_then(|_| file.sync_all())
    });
    let _ = std::fs::remove_file(&path);
    result.err().map(|e| e.kind())
}
