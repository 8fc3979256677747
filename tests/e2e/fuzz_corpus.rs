//! The cargo-fuzz targets' checks (`fuzz/src/checks.rs`) over their seed corpora
//! (`fuzz/corpus/<target>/`), on stable, so CI exercises what the fuzzers check. Run the
//! fuzzers themselves with `cargo +nightly fuzz run <target>` in `fuzz/`.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

/// Every file of a target's corpus, by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn envelope_decode_corpus() {
    let files = corpus("envelope_decode");
    let valid: Vec<&str> = files
        .iter()
        .filter(|(_, bytes)| checks::envelope_decode(bytes))
        .map(|(name, _)| name.as_str())
        .collect();
    // The corpus holds both: valid events (round-trip) and broken ones (typed errors).
    assert_eq!(
        valid,
        ["customer_registered.json", "order_created.json"],
        "valid seeds"
    );
    // Every one-byte truncation of a valid event is an error, never a panic.
    let (_, order) = files
        .iter()
        .find(|(n, _)| n == "order_created.json")
        .unwrap();
    for len in 0..order.len() {
        assert!(
            !checks::envelope_decode(&order[..len]),
            "prefix of {len} bytes"
        );
    }
}

#[test]
fn analytics_sql_check_corpus() {
    // Deep inputs run on a thread with the stack size tokio gives its workers (2 MiB).
    let accepted = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            corpus("analytics_sql_check")
                .into_iter()
                .filter(|(_, sql)| checks::analytics_sql_check(sql))
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
        })
        .unwrap()
        .join()
        .expect("the SQL check panicked or overflowed");
    assert_eq!(accepted, ["explain.sql", "select.sql"]);
}
