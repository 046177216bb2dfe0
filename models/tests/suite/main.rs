//! The integration tests of the models crate, in one test binary: each test binary instantiates
//! burn's generic model code for its backends again and links a ~100 MB executable, so one binary
//! instead of sixteen builds several times faster. One module per area; run one area with a
//! module filter, e.g. `cargo test -p firempo-models --test suite parity::`.
//!
//! The tests run as threads of one process. None seeds burn's process-wide RNG or sets an
//! environment variable (random weights and inputs come unseeded, and no test compares two
//! random draws), and each module's scratch folders carry its own prefix and the process id. A
//! test that needs process-wide state of its own takes [`common::exclusive`]. A test naming an
//! `NdArray` type with other int elements than i64 calls [`common::int64_device_defaults`] first
//! (burn locks a device's dtypes on first use, for every backend type on that device).

mod attention;
mod chat;
mod chat_template;
mod common;
mod dropout;
mod generate;
mod host_ops;
mod loading_errors;
mod loading_memory;
mod lora;
mod original_llava;
mod parity;
mod peft;
mod precision;
mod qwen_vl;
mod qwen_vl_fixture;
mod qwen_vl_generate;
mod qwen_vl_lora;
mod qwen_vl_scoring;
mod scoring;
