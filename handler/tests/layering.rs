//! The crate boundaries the architecture relies on (docs/architecture.md), checked on the
//! manifests: the handler, the core and the protocol crates do not depend on the engine, and the
//! protocol crate has no candle. Their dependency lists are closed (each names only the others
//! below it), so no transitive path to the engine exists either.

use std::path::Path;

fn dependency_names(manifest: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(manifest)).unwrap_or_else(|e| panic!("{manifest}: {e}"));
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line.contains("dependencies");
            continue;
        }
        if let Some((name, _)) = line.split_once('=').filter(|_| in_dependencies && !line.starts_with('#')) {
            names.push(name.trim().trim_end_matches(".workspace").to_string());
        }
    }
    names
}

#[test]
fn the_handler_side_cannot_reach_the_engine() {
    for manifest in ["handler/Cargo.toml", "core/Cargo.toml", "core/protocol/Cargo.toml"] {
        let names = dependency_names(manifest);
        assert!(!names.is_empty(), "{manifest}: no dependencies parsed");
        for forbidden in ["sdapi-engine", "sdapi-server", "candle-core", "candle-nn"] {
            assert!(!names.iter().any(|n| n == forbidden), "{manifest} depends on {forbidden}");
        }
    }
    // The handler's and the core's own crate dependencies are only the crates below them.
    let ours = |manifest: &str| -> Vec<String> {
        dependency_names(manifest).into_iter().filter(|n| n.starts_with("sdapi-")).collect()
    };
    assert_eq!(ours("handler/Cargo.toml"), ["sdapi-core", "sdapi-protocol"]);
    assert_eq!(ours("core/Cargo.toml"), ["sdapi-protocol"]);
    assert!(ours("core/protocol/Cargo.toml").is_empty());
    // And the engine is where the model code is.
    assert!(dependency_names("core/engine/Cargo.toml").iter().any(|n| n == "candle-core"));
}
