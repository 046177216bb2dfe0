//! `firempo info`: what this build supports and which devices it sees.

use crate::backend::{probe, BackendKind};

pub fn run() -> anyhow::Result<()> {
    println!("firempo {}", env!("CARGO_PKG_VERSION"));
    println!("{:<8} {:<9} device", "backend", "compiled");
    for kind in BackendKind::ALL {
        let (compiled, device) = if kind.is_compiled() {
            let device = match probe(kind) {
                Ok(device) => format!("ok: {device}"),
                Err(err) => format!("unavailable: {err}"),
            };
            ("yes", device)
        } else {
            (
                "no",
                format!("rebuild with `--features {}`", kind.feature()),
            )
        };
        println!("{:<8} {:<9} {device}", kind.feature(), compiled);
    }
    Ok(())
}
