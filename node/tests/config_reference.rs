//! The README's configuration reference names every setting `troupe config` prints, so a
//! new setting cannot ship undocumented.

use std::process::Command;

/// Every setting's dotted path; a rate limit (`per_second`, `burst`) counts as its table.
fn settings(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) if !inner.contains_key("per_second") => settings(inner, &path, out),
            _ => out.push(path),
        }
    }
}

#[test]
fn the_readme_documents_every_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_troupe")).arg("config").output().expect("run troupe config");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: toml::Table = String::from_utf8(output.stdout).expect("utf-8").parse().expect("TOML");
    let mut all = Vec::new();
    settings(&printed, "", &mut all);
    assert!(all.len() > 50, "{all:?}");
    let readme = include_str!("../../README.md");
    let reference = readme.split("### Configuration reference").nth(1).expect("a configuration reference section");
    let missing: Vec<&String> = all.iter().filter(|path| !reference.contains(&format!("| `{path}` |"))).collect();
    assert!(missing.is_empty(), "settings missing from the README's configuration reference: {missing:?}");
}
