//! Thumbnails: `actors::media::thumbnail::thumbnail` on a whole uploaded image.
//! The properties are in `actors/tests/fuzz_checks/mod.rs`, shared with the corpus replay test.

#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::thumbnail(data));
