//! Every example file in the repository's `config/` directory reads and
//! builds its backend factory and checkpoint storage.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use state_config::{BackendType, StateConfig};

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn example(name: &str) -> StateConfig {
    StateConfig::from_file(config_dir().join(name)).unwrap()
}

#[test]
fn every_example_reads_and_builds() {
    let local = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(config_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let config = StateConfig::from_file(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .with_overrides([
                ("execution.checkpointing.dir", "memory://"),
                (
                    "state.backend.rocksdb.localdir",
                    local.path().to_str().unwrap(),
                ),
            ])
            .unwrap();
        assert!(
            config.deprecated_keys().is_empty(),
            "{}: examples use the current keys",
            file.display()
        );
        let factory = config.backend_factory().unwrap();
        assert!(!factory.name().is_empty());
        let storage = std::sync::Arc::new(config.checkpoint_storage("example").unwrap());
        config.checkpoint_store(storage).unwrap();
    }
}

#[test]
fn one_example_per_backend() {
    let hashmap = example("hashmap.yaml");
    assert_eq!(hashmap.backend_type(), BackendType::HashMap);
    assert!(!hashmap.changelog_enabled());
    assert!(hashmap.checkpoint_dir().is_some());

    let rocksdb = example("rocksdb.yaml");
    assert_eq!(rocksdb.backend_type(), BackendType::RocksDb);
    assert!(rocksdb.incremental());
    assert!(!rocksdb.changelog_enabled());
    assert_eq!(rocksdb, example("rocksdb.toml"));

    let changelog = example("changelog-rocksdb.yaml");
    assert_eq!(changelog.backend_type(), BackendType::RocksDb);
    assert!(changelog.changelog_enabled());
    assert_eq!(
        changelog.backend_factory().unwrap().name(),
        "changelog-rocksdb"
    );
}
