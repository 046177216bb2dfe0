//! Adversarial inputs to the dataset crate (issue 9): each case names its input and the error (or
//! result) it expects. Reads that used to loop forever run under a time limit, so a regression
//! fails the case instead of hanging the suite.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::TempDir;
use firempo_datasets::{read_jsonl, BadRecordPolicy, DatasetError, Loaded, Sample};

/// Runs `f` on a thread and fails the case if it takes longer than `seconds` (a hang).
fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(Duration::from_secs(seconds))
        .unwrap_or_else(|_| panic!("did not finish within {seconds} s (a hang)"))
}

fn read_samples(path: &Path) -> Result<Loaded<Sample>, DatasetError> {
    let path = path.to_path_buf();
    within(20, move || {
        read_jsonl::<Sample>(&path, BadRecordPolicy::Skip)
    })
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("running mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

const GOOD: &str = r#"{"record_id":"a","question":"q","answer":"yes"}"#;

// Item 1: a path that is not a regular JSONL file.

#[test]
fn a_directory_as_jsonl_is_refused_naming_the_path() {
    let dir = TempDir::new("adv-dir");
    let err = read_samples(dir.path()).unwrap_err();
    assert!(matches!(err, DatasetError::NotAFile { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string())
            && text.contains("is a directory")
            && text.contains("expected a JSONL file"),
        "{text}"
    );
}

#[test]
fn dev_zero_as_jsonl_is_refused() {
    let err = read_samples(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/dev/zero")
            && err.contains("a device")
            && err.contains("expected a JSONL file"),
        "{err}"
    );
}

#[test]
fn a_fifo_as_jsonl_is_refused_without_opening_it() {
    let dir = TempDir::new("adv-fifo");
    let fifo = dir.path().join("samples.jsonl");
    mkfifo(&fifo);
    let err = read_samples(&fifo).unwrap_err().to_string();
    assert!(
        err.contains("FIFO") && err.contains("expected a JSONL file"),
        "{err}"
    );
}

/// `/proc/self/mem` is a regular file whose every read fails (EIO at address 0): the first I/O
/// error must end the read, not be skipped as a bad record forever.
#[cfg(target_os = "linux")]
#[test]
fn an_io_error_mid_read_stops_the_read() {
    let err = read_samples(Path::new("/proc/self/mem")).unwrap_err();
    assert!(matches!(err, DatasetError::Io { .. }), "{err}");
    let path = PathBuf::from("/proc/self/mem");
    let items: Vec<_> = within(20, move || {
        firempo_datasets::iter_jsonl::<Sample>(&path)
            .unwrap()
            .take(10)
            .collect::<Vec<_>>()
    });
    assert_eq!(items.len(), 1, "one I/O error, then the end");
}

// Item 9: what a line holds besides one JSON object.

#[test]
fn trailing_data_after_the_object_is_an_error_naming_the_line() {
    let dir = TempDir::new("adv-trailing");
    let path = dir.path().join("samples.jsonl");
    std::fs::write(
        &path,
        format!("{GOOD}\n{GOOD} {GOOD} {GOOD} {GOOD}\n{GOOD}  \n"),
    )
    .unwrap();
    let loaded = read_samples(&path).unwrap();
    assert_eq!(loaded.items.len(), 2, "trailing whitespace is fine");
    assert_eq!(loaded.skipped, 1);
    let err = loaded.problems[0].to_string();
    assert!(
        err.contains("samples.jsonl:2") && err.contains("data after the JSON object"),
        "{err}"
    );
}

#[test]
fn a_bom_does_not_cost_the_first_record() {
    let dir = TempDir::new("adv-bom");
    let path = dir.path().join("samples.jsonl");
    std::fs::write(&path, format!("\u{feff}{GOOD}\n{GOOD}\n")).unwrap();
    let loaded = read_samples(&path).unwrap();
    assert_eq!(
        (loaded.items.len(), loaded.skipped),
        (2, 0),
        "{:?}",
        loaded.problems
    );
}

#[test]
fn invalid_utf8_names_its_line_and_the_rest_still_reads() {
    let dir = TempDir::new("adv-utf8");
    let path = dir.path().join("samples.jsonl");
    let mut bytes = format!("{GOOD}\n\n").into_bytes();
    bytes.extend_from_slice(b"{\"record_id\":\"\xff\xfe\",\"question\":\"q\",\"answer\":\"y\"}\n");
    bytes.extend_from_slice(format!("{GOOD}\n").as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let loaded = read_samples(&path).unwrap();
    assert_eq!((loaded.items.len(), loaded.skipped), (2, 1));
    let err = loaded.problems[0].to_string();
    assert!(
        err.contains("samples.jsonl:3") && err.contains("invalid UTF-8"),
        "{err}"
    );
}
