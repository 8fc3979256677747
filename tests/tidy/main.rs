//! Tidy checks (as rust-analyzer has): the crate graph follows the rules ARCHITECTURE.md
//! states, and every source file says what it is for. They read `cargo metadata` and the
//! files, so a new dependency or file that breaks a rule fails here, not in review.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which of our crates each crate's library and binaries may depend on (normal and build
/// dependencies; tests may use more). The same rules ARCHITECTURE.md's code map states.
/// A crate missing here fails the test: a new crate must say where it stands.
const ALLOWED: &[(&str, &[&str])] = &[
    // The event contract depends on nothing of ours; everything may depend on it.
    ("shoplens-contract", &[]),
    // The bus moves opaque bytes: it knows neither the contract nor any service.
    ("shoplens-bus", &[]),
    // The kit knows the contract and the bus, no single service's domain.
    ("shoplens-kit", &["shoplens-contract", "shoplens-bus"]),
    // A domain service learns about the others only through their REST APIs.
    ("customer-service", SERVICE),
    ("product-service", SERVICE),
    ("order-service", SERVICE),
    ("payment-service", SERVICE),
    ("shipping-service", SERVICE),
    // The simulator talks to the shop only over HTTP.
    ("shop-simulator", &[]),
    // The composer reads through the services' REST APIs and the bus, never their crates.
    ("shoplens-composer", SERVICE),
    // What the read model's writer and readers share: the contract only, no bus, no kit.
    ("shoplens-readmodel", &["shoplens-contract"]),
    // The worker learns about the shop only through events.
    (
        "shoplens-ingest",
        &[
            "shoplens-contract",
            "shoplens-bus",
            "shoplens-kit",
            "shoplens-readmodel",
        ],
    ),
    // The analytics server reads the read model; it links neither the worker nor a service.
    (
        "shoplens-analytics",
        &["shoplens-contract", "shoplens-kit", "shoplens-readmodel"],
    ),
    // Test scaffolding: a dev-dependency of the others (only the benchmarks use it outside
    // tests), never a production crate's dependency.
    (
        "shoplens-test-support",
        &["shoplens-contract", "shoplens-bus", "shoplens-kit"],
    ),
    // The benchmarks and the one-machine binary put everything together.
    ("shoplens-benches", ANY),
    ("shoplens", ANY),
];

const SERVICE: &[&str] = &["shoplens-contract", "shoplens-bus", "shoplens-kit"];
const ANY: &[&str] = &["*"];

/// Outside crates a crate must not link, directly or through any of its dependencies, when
/// it is built on its own (as `cargo build -p` resolves its features).
const NEVER_LINKED: &[(&str, &[&str])] = &[
    // The read model's shared definitions: no client and no query engine.
    (
        "shoplens-readmodel",
        &["rdkafka", "clickhouse", "datafusion"],
    ),
    // The analytics server reads; it links neither the Kafka client nor the ClickHouse
    // writer's client (it reads ClickHouse over plain HTTP).
    ("shoplens-analytics", &["rdkafka", "clickhouse"]),
];

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn metadata() -> serde_json::Value {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// The workspace's packages: name, manifest directory, our crates they depend on outside
/// tests.
fn packages() -> Vec<(String, PathBuf, BTreeSet<String>)> {
    let meta = metadata();
    let packages = meta["packages"].as_array().expect("packages");
    let ours: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("name").to_owned();
            let dir = Path::new(p["manifest_path"].as_str().expect("manifest"))
                .parent()
                .expect("manifest dir")
                .to_path_buf();
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .filter_map(|d| d["name"].as_str())
                .filter(|d| ours.contains(d))
                .map(str::to_owned)
                .collect();
            (name, dir, deps)
        })
        .collect()
}

/// The rules broken by `graph` (crate, its dependencies on our crates), one line each.
fn violations(graph: &[(String, BTreeSet<String>)]) -> Vec<String> {
    let mut broken = Vec::new();
    for (name, deps) in graph {
        let Some((_, allowed)) = ALLOWED.iter().find(|(n, _)| n == name) else {
            broken.push(format!(
                "{name}: a crate the rules do not know; add it to ALLOWED in tests/tidy/main.rs \
                 and to ARCHITECTURE.md's code map"
            ));
            continue;
        };
        if allowed.contains(&"*") {
            continue;
        }
        for dep in deps {
            if !allowed.contains(&dep.as_str()) {
                broken.push(format!("{name} must not depend on {dep}"));
            }
        }
    }
    broken
}

#[test]
fn every_crate_depends_only_on_what_the_architecture_allows() {
    let graph: Vec<_> = packages()
        .into_iter()
        .map(|(name, _, deps)| (name, deps))
        .collect();
    assert!(
        graph.len() >= 10,
        "the workspace's crates were not all read"
    );
    let broken = violations(&graph);
    assert!(
        broken.is_empty(),
        "crate rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_rules_catch_a_forbidden_dependency_and_an_unknown_crate() {
    let graph = vec![
        (
            "shoplens-analytics".to_owned(),
            BTreeSet::from(["shoplens-composer".to_owned()]),
        ),
        ("shoplens-newcomer".to_owned(), BTreeSet::new()),
        (
            "shoplens-kit".to_owned(),
            BTreeSet::from(["shoplens-contract".to_owned()]),
        ),
    ];
    let broken = violations(&graph);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].contains("shoplens-analytics must not depend on shoplens-composer"));
    assert!(broken[1].contains("shoplens-newcomer"));
}

/// Every package `package` links outside tests when built on its own (its normal
/// dependencies, transitively, with the features that build would resolve).
fn linked_packages(package: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--package",
            package,
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_crate_links_an_outside_crate_it_must_not() {
    let mut broken = Vec::new();
    for (package, forbidden) in NEVER_LINKED {
        let linked = linked_packages(package);
        assert!(
            linked.contains(*package) && linked.len() > 3,
            "the dependencies of {package} were not all read: {linked:?}"
        );
        for name in *forbidden {
            if linked.contains(*name) {
                broken.push(format!("{package} links {name}"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Whether `source` opens with a module doc (`//!`), after any blank lines.
fn has_module_doc(source: &str) -> bool {
    source
        .lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with("//!"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    for (_, dir, _) in packages() {
        for sub in ["src", "tests", "benches"] {
            rust_files(&dir.join(sub), &mut files);
        }
    }
    files.sort();
    files.dedup();
    assert!(files.len() > 100, "the sources were not all read");
    let root = workspace_root();
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !has_module_doc(&std::fs::read_to_string(f).unwrap_or_default()))
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a module doc (`//!` saying what the file is for):\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_file_without_a_module_doc_is_caught() {
    assert!(has_module_doc("\n//! The worker.\nfn main() {}"));
    assert!(!has_module_doc("// a comment\n//! late"));
    assert!(!has_module_doc("fn main() {}"));
}
