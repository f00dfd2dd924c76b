//! Replays the fuzz corpora (`actors/fuzz/corpus/<target>/`) and any saved crash inputs
//! (`actors/fuzz/artifacts/<target>/`) through the same checks the cargo-fuzz targets run,
//! so CI keeps every input the fuzzer found interesting without needing cargo-fuzz or a
//! nightly toolchain. See `actors/fuzz/README.md`.

extern crate troupe_actors as actors;

mod fuzz_checks;

use std::path::{Path, PathBuf};

/// Runs `check` over every file of the target's corpus and artifacts; fails listing each
/// input whose check panicked.
fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = inputs(&fuzz.join("corpus").join(target));
    assert!(!corpus.is_empty(), "the {target} corpus is empty or missing");
    let all: Vec<PathBuf> = corpus.into_iter().chain(inputs(&fuzz.join("artifacts").join(target))).collect();
    let failed: Vec<String> = all
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs fail their checks:\n{}",
        failed.len(),
        all.len(),
        failed.join("\n")
    );
}

/// The files in `dir`, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("a readable directory").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn client_frame_corpus() {
    replay("client_frame", fuzz_checks::client_frame);
}

#[test]
fn cluster_envelope_corpus() {
    replay("cluster_envelope", fuzz_checks::cluster_envelope);
}

#[test]
fn media_header_corpus() {
    replay("media_header", fuzz_checks::media_header);
}

#[test]
fn thumbnail_corpus() {
    replay("thumbnail", fuzz_checks::thumbnail);
}
