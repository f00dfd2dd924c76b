//! The cluster envelope: `schema::codec::decode::<NodeMessage>` on every frame a peer node sends.
//! The properties are in `actors/tests/fuzz_checks/mod.rs`, shared with the corpus replay test.

#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::cluster_envelope(data));
