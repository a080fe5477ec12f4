//! STYLE rule 2: the core never reads a clock or a global RNG and never does
//! I/O. Time and randomness are inputs; storage and network are actions.

use std::path::{Path, PathBuf};

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "rand::random",
    "std::fs",
    "std::net",
    "std::thread",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Every `(line number, pattern)` of `text` that uses a forbidden name.
fn violations(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        for pattern in FORBIDDEN {
            if line.contains(pattern) {
                found.push((number + 1, *pattern));
            }
        }
    }
    found
}

#[test]
fn the_scanner_catches_every_pattern() {
    for pattern in FORBIDDEN {
        let text = format!("fn f() {{\n    let x = {pattern}();\n}}\n");
        assert_eq!(violations(&text), vec![(2, *pattern)], "{pattern}");
    }
    assert!(violations("use std::collections::BTreeMap;\nlet now = now_ms;\n").is_empty());
}

#[test]
fn core_sources_read_no_clock_rng_or_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("raft.rs")) && files.len() >= 10,
        "scanned too few files: {files:?}"
    );
    let mut report = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for (line, pattern) in violations(&text) {
            report.push(format!("{}:{line}: {pattern}", file.display()));
        }
    }
    assert!(
        report.is_empty(),
        "the core must stay pure:\n{}",
        report.join("\n")
    );
}
