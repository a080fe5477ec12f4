//! STYLE.md rule 2: the core never reads the clock or global randomness. The one
//! allowed use is `until_ready`, an async helper on tokio's (pausable) clock.

#[test]
fn the_core_reads_no_clock_and_no_global_randomness() {
    let forbidden = [
        "Instant::now",
        "SystemTime::now",
        "thread_rng",
        "rand::random",
        "OsRng",
    ];
    let allowed = ["tokio::time::Instant::now()"];
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            let mut line = line.to_string();
            for ok in allowed {
                line = line.replace(ok, "");
            }
            for word in forbidden {
                assert!(
                    !line.contains(word),
                    "{}:{}: `{word}` in the pure core",
                    path.display(),
                    number + 1
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 8,
        "expected the crate's modules in {}",
        src.display()
    );
}
