//! Running the binary under limits and checking what it did.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Address-space limit of every run (KiB): far above what the tiny cases need, far below what a
/// crafted 100000×100000 header would make a careless decoder allocate.
const ADDRESS_SPACE_KIB: u64 = 6 * 1024 * 1024;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// Exit status code (`None`: killed by a signal, e.g. an abort).
    pub code: Option<i32>,
    /// Standard output and standard error, in that order.
    pub output: String,
    /// Whether the run was killed at the time limit.
    pub timed_out: bool,
}

impl Run {
    /// The run failed cleanly: a non-zero exit code (not a signal, not a timeout), no panic,
    /// and a message containing every one of `needles` (case-insensitive).
    pub fn assert_clean_error(&self, needles: &[&str]) {
        assert!(
            !self.timed_out,
            "run hung (killed at the limit):\n{}",
            self.output
        );
        match self.code {
            Some(0) => panic!("expected an error, got exit 0:\n{}", self.output),
            None => panic!("killed by a signal (abort?):\n{}", self.output),
            Some(_) => {}
        }
        self.assert_no_panic();
        self.assert_mentions(needles);
    }

    /// The run succeeded, with a message containing every one of `needles`.
    pub fn assert_success(&self, needles: &[&str]) {
        assert!(
            !self.timed_out,
            "run hung (killed at the limit):\n{}",
            self.output
        );
        assert_eq!(self.code, Some(0), "expected success:\n{}", self.output);
        self.assert_no_panic();
        self.assert_mentions(needles);
    }

    fn assert_no_panic(&self) {
        assert!(
            !self.output.contains("panicked at"),
            "the binary panicked:\n{}",
            self.output
        );
    }

    fn assert_mentions(&self, needles: &[&str]) {
        let lower = self.output.to_lowercase();
        for needle in needles {
            assert!(
                lower.contains(&needle.to_lowercase()),
                "output does not mention {needle:?}:\n{}",
                self.output
            );
        }
    }
}

/// Runs `firempo ARGS` in `cwd` with a time limit, under the address-space limit.
pub fn firempo(cwd: &Path, args: &[&str], limit: Duration) -> Run {
    let binary = env!("CARGO_BIN_EXE_firempo");
    let mut script = format!("ulimit -v {ADDRESS_SPACE_KIB} && exec '{binary}'");
    for arg in args {
        script.push_str(&format!(" '{}'", arg.replace('\'', r"'\''")));
    }
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the firempo binary");
    // Drain both pipes on threads so a chatty run never blocks on a full pipe; cap what is kept.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || read_capped(&mut stdout));
    let err = std::thread::spawn(move || read_capped(&mut stderr));
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for firempo") {
            break status;
        }
        if started.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("reaping firempo");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    Run {
        code: status.code(),
        output,
        timed_out,
    }
}

/// Reads a pipe to its end, keeping at most 1 MiB (a log flood must not exhaust the test).
fn read_capped(pipe: &mut impl Read) -> String {
    const KEEP: usize = 1 << 20;
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if kept.len() < KEEP {
                    kept.extend_from_slice(&buf[..n.min(KEEP - kept.len())]);
                }
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// A fresh scratch folder for one case, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates `$TMP/firempo-adv-NAME-PID` anew.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("firempo-adv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A path inside the folder.
    pub fn join(&self, path: &str) -> PathBuf {
        self.0.join(path)
    }

    /// The folder as a `&str` for arguments.
    pub fn path_str(&self, path: &str) -> String {
        self.join(path).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Generates a tiny synthetic dataset under `dir` with the binary (`firempo synth`).
pub fn tiny_synth(dir: &Path) -> Run {
    let run = firempo(
        dir,
        &[
            "synth", "--out", "synth", "--train", "6", "--val", "2", "--test", "2",
        ],
        Duration::from_secs(60),
    );
    run.assert_success(&[]);
    run
}
