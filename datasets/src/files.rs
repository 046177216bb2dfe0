//! Checks on input paths before they are opened.

use std::path::Path;

use crate::error::DatasetError;

/// Refuses a path that is not a regular file (or a link to one) before anything opens it: a
/// directory, a device such as `/dev/zero`, a FIFO or a socket. `expected` names what the caller
/// wanted, e.g. "a JSONL file" or "an image file".
pub fn require_regular_file(path: &Path, expected: &str) -> Result<(), DatasetError> {
    let metadata = std::fs::metadata(path).map_err(|e| DatasetError::io(path, e))?;
    if metadata.is_file() {
        return Ok(());
    }
    Err(DatasetError::NotAFile {
        path: path.to_path_buf(),
        kind: file_kind(&metadata),
        expected: expected.to_string(),
    })
}

fn file_kind(metadata: &std::fs::Metadata) -> &'static str {
    if metadata.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let kind = metadata.file_type();
        if kind.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}
