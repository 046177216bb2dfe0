//! The integration tests of the losses crate, in one test binary (each test binary links burn's
//! backends again; one builds several times faster than five). One module per area; run one area
//! with a module filter, e.g. `cargo test -p firempo-losses --test suite backends::`.
//!
//! The tests run as threads of one process. None touches process-wide state: their data comes
//! from the seeded local generator `common::Rng`, never from burn's global RNG.

mod backends;
mod closed_forms;
mod common;
mod gradients;
mod precomputed_reference;
mod reference_fixture;
mod stability;
