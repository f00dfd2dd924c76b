//! Media headers: `sniff`, `kind_matches`, `image_dimensions` and `check_image_pixels` on an upload's head.
//! The properties are in `actors/tests/fuzz_checks/mod.rs`, shared with the corpus replay test.

#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::media_header(data));
