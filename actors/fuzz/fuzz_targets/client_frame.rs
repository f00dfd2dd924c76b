//! Client frames: `schema::frames::client::parse_client_frame` on every text frame a client sends.
//! The properties are in `actors/tests/fuzz_checks/mod.rs`, shared with the corpus replay test.

#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::client_frame(data));
