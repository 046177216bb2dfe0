//! Ctrl-C handling: the first Ctrl-C asks the trainer to checkpoint and stop after the current
//! step; a second one exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static STOP: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Installs the Ctrl-C handler (once per process; later calls do nothing).
pub fn install_ctrl_c_handler() {
    INSTALL.call_once(|| {
        let result = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: exiting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: writing a checkpoint after this step (press again to abort)");
        });
        if let Err(err) = result {
            tracing::warn!("could not install the Ctrl-C handler: {err}");
        }
    });
}

/// Asks the running trainer to checkpoint and stop after the current step.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested; clears the request.
pub fn take_stop_request() -> bool {
    STOP.swap(false, Ordering::SeqCst)
}
