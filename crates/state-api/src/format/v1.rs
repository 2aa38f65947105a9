//! Version 1 of the stored structures, frozen: postcard, fields by
//! position.
//!
//! Files of version 1 (`_metadata`, key-group files, change-log segments)
//! are decoded with these copies of the structures as they were, then
//! converted to today's types; today's types may then gain fields (see the
//! policy in [`super::evolving`]) without breaking version 1. Never change
//! a type here: the checked-in fixtures of version 1 pin them.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::descriptor::{StateKind, StateMeta};
use crate::error::Result;
use crate::format::key_groups::FileMeta;
use crate::key_group::KeyGroupRange;
use crate::snapshot::{
    ChangelogPart, ChangelogSegment, ChangelogStateHandle, FileHandle, IncrementalStateHandle,
    KeyGroupsStateHandle, KeyedStateHandle, NamedFile, StateScope,
};

/// Decodes a version-1 structure that must fill `bytes` exactly.
///
/// # Errors
/// A description of what is wrong: malformed or truncated bytes, or bytes
/// after the structure.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes after the end of the structure",
            rest.len()
        ));
    }
    Ok(value)
}

/// A version-1 structure converted to today's type; conversions validate
/// what today's types promise (key-group ranges, nesting).
pub trait Upgrade {
    /// Today's type.
    type Current;

    /// Converts to today's type.
    ///
    /// # Errors
    /// [`StateError::InvalidKeyGroups`](crate::StateError::InvalidKeyGroups)
    /// for a key-group range that is not one.
    fn upgrade(self) -> Result<Self::Current>;
}

fn upgrade_all<T: Upgrade>(items: Vec<T>) -> Result<Vec<T::Current>> {
    items.into_iter().map(Upgrade::upgrade).collect()
}

/// [`StateScope`] in version 1.
#[derive(Clone, Copy, Debug, Deserialize)]
#[allow(missing_docs)]
pub enum StateScopeV1 {
    Exclusive,
    Shared,
    TaskOwned,
}

/// [`FileHandle`] in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct FileHandleV1 {
    pub path: String,
    pub scope: StateScopeV1,
    pub size: u64,
    pub crc32c: u32,
}

/// [`KeyGroupRange`] in version 1.
#[derive(Clone, Copy, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct KeyGroupRangeV1 {
    pub start: u32,
    pub end: u32,
}

/// [`StateKind`] in version 1.
#[derive(Clone, Copy, Debug, Deserialize)]
#[allow(missing_docs)]
pub enum StateKindV1 {
    Value,
    List,
    Map,
    Reducing,
    Aggregating,
}

/// [`StateMeta`] in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct StateMetaV1 {
    pub name: String,
    pub kind: StateKindV1,
    pub namespace_type: String,
    pub value_type: String,
    pub user_key_type: Option<String>,
}

/// [`FileMeta`] (the key-group file's metadata block) in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct FileMetaV1 {
    pub max_parallelism: u32,
    pub key_group_range: KeyGroupRangeV1,
    pub states: Vec<StateMetaV1>,
}

/// [`KeyGroupsStateHandle`] in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct KeyGroupsStateHandleV1 {
    pub backend: String,
    pub checkpoint_id: u64,
    pub max_parallelism: u32,
    pub key_group_range: KeyGroupRangeV1,
    pub file: FileHandleV1,
    pub key_group_offsets: Vec<u64>,
}

/// [`NamedFile`] in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct NamedFileV1 {
    pub name: String,
    pub file: FileHandleV1,
}

/// [`IncrementalStateHandle`] in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct IncrementalStateHandleV1 {
    pub backend: String,
    pub backend_id: String,
    pub checkpoint_id: u64,
    pub max_parallelism: u32,
    pub key_group_range: KeyGroupRangeV1,
    pub states: Vec<StateMetaV1>,
    pub shared_files: Vec<NamedFileV1>,
    pub private_files: Vec<NamedFileV1>,
}

/// [`ChangelogSegment`] in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct ChangelogSegmentV1 {
    pub file: FileHandleV1,
    pub offset: u64,
    pub length: u64,
    pub first_sqn: u64,
    pub end_sqn: u64,
}

/// [`ChangelogPart`] in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct ChangelogPartV1 {
    pub key_group_range: KeyGroupRangeV1,
    pub from_sqn: u64,
    pub to_sqn: u64,
    pub segments: Vec<ChangelogSegmentV1>,
}

/// [`ChangelogStateHandle`] in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct ChangelogStateHandleV1 {
    pub backend: String,
    pub checkpoint_id: u64,
    pub max_parallelism: u32,
    pub key_group_range: KeyGroupRangeV1,
    pub states: Vec<StateMetaV1>,
    pub materialization_id: u64,
    #[serde(deserialize_with = "crate::snapshot::nesting::deserialize_nested")]
    pub materialized: Vec<KeyedStateHandleV1>,
    pub log: Vec<ChangelogPartV1>,
}

/// [`KeyedStateHandle`] in version 1.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub enum KeyedStateHandleV1 {
    KeyGroups(KeyGroupsStateHandleV1),
    Incremental(IncrementalStateHandleV1),
    Changelog(ChangelogStateHandleV1),
}

impl Upgrade for StateScopeV1 {
    type Current = StateScope;

    fn upgrade(self) -> Result<StateScope> {
        Ok(match self {
            StateScopeV1::Exclusive => StateScope::Exclusive,
            StateScopeV1::Shared => StateScope::Shared,
            StateScopeV1::TaskOwned => StateScope::TaskOwned,
        })
    }
}

impl Upgrade for FileHandleV1 {
    type Current = FileHandle;

    fn upgrade(self) -> Result<FileHandle> {
        Ok(FileHandle {
            path: self.path,
            scope: self.scope.upgrade()?,
            size: self.size,
            crc32c: self.crc32c,
        })
    }
}

impl Upgrade for KeyGroupRangeV1 {
    type Current = KeyGroupRange;

    fn upgrade(self) -> Result<KeyGroupRange> {
        KeyGroupRange::new(self.start, self.end)
    }
}

impl Upgrade for StateKindV1 {
    type Current = StateKind;

    fn upgrade(self) -> Result<StateKind> {
        Ok(match self {
            StateKindV1::Value => StateKind::Value,
            StateKindV1::List => StateKind::List,
            StateKindV1::Map => StateKind::Map,
            StateKindV1::Reducing => StateKind::Reducing,
            StateKindV1::Aggregating => StateKind::Aggregating,
        })
    }
}

impl Upgrade for StateMetaV1 {
    type Current = StateMeta;

    fn upgrade(self) -> Result<StateMeta> {
        Ok(StateMeta {
            name: self.name,
            kind: self.kind.upgrade()?,
            namespace_type: self.namespace_type,
            value_type: self.value_type,
            user_key_type: self.user_key_type,
            ttl: None,
        })
    }
}

impl Upgrade for FileMetaV1 {
    type Current = FileMeta;

    fn upgrade(self) -> Result<FileMeta> {
        Ok(FileMeta {
            max_parallelism: self.max_parallelism,
            key_group_range: self.key_group_range.upgrade()?,
            states: upgrade_all(self.states)?,
        })
    }
}

impl Upgrade for NamedFileV1 {
    type Current = NamedFile;

    fn upgrade(self) -> Result<NamedFile> {
        Ok(NamedFile {
            name: self.name,
            file: self.file.upgrade()?,
        })
    }
}

impl Upgrade for ChangelogSegmentV1 {
    type Current = ChangelogSegment;

    fn upgrade(self) -> Result<ChangelogSegment> {
        Ok(ChangelogSegment {
            file: self.file.upgrade()?,
            offset: self.offset,
            length: self.length,
            first_sqn: self.first_sqn,
            end_sqn: self.end_sqn,
        })
    }
}

impl Upgrade for ChangelogPartV1 {
    type Current = ChangelogPart;

    fn upgrade(self) -> Result<ChangelogPart> {
        Ok(ChangelogPart {
            key_group_range: self.key_group_range.upgrade()?,
            from_sqn: self.from_sqn,
            to_sqn: self.to_sqn,
            segments: upgrade_all(self.segments)?,
        })
    }
}

impl Upgrade for KeyedStateHandleV1 {
    type Current = KeyedStateHandle;

    fn upgrade(self) -> Result<KeyedStateHandle> {
        Ok(match self {
            KeyedStateHandleV1::KeyGroups(h) => KeyedStateHandle::KeyGroups(KeyGroupsStateHandle {
                backend: h.backend,
                checkpoint_id: h.checkpoint_id,
                max_parallelism: h.max_parallelism,
                key_group_range: h.key_group_range.upgrade()?,
                file: h.file.upgrade()?,
                key_group_offsets: h.key_group_offsets,
            }),
            KeyedStateHandleV1::Incremental(h) => {
                KeyedStateHandle::Incremental(IncrementalStateHandle {
                    backend: h.backend,
                    backend_id: h.backend_id,
                    checkpoint_id: h.checkpoint_id,
                    max_parallelism: h.max_parallelism,
                    key_group_range: h.key_group_range.upgrade()?,
                    states: upgrade_all(h.states)?,
                    shared_files: upgrade_all(h.shared_files)?,
                    private_files: upgrade_all(h.private_files)?,
                })
            }
            KeyedStateHandleV1::Changelog(h) => KeyedStateHandle::Changelog(ChangelogStateHandle {
                backend: h.backend,
                checkpoint_id: h.checkpoint_id,
                max_parallelism: h.max_parallelism,
                key_group_range: h.key_group_range.upgrade()?,
                states: upgrade_all(h.states)?,
                materialization_id: h.materialization_id,
                materialized: upgrade_all(h.materialized)?,
                log: upgrade_all(h.log)?,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> FileHandle {
        FileHandle {
            path: path.into(),
            scope: StateScope::Shared,
            size: 10,
            crc32c: 7,
        }
    }

    fn meta() -> StateMeta {
        StateMeta {
            name: "counts".into(),
            kind: StateKind::Map,
            namespace_type: "ns".into(),
            value_type: "u64".into(),
            user_key_type: Some("String".into()),
            ttl: None,
        }
    }

    /// Today's types still encode in postcard exactly as version 1 did, so
    /// a handle encoded with them is a faithful version-1 sample; once they
    /// gain fields, the checked-in version-1 fixtures keep the coverage.
    #[test]
    fn every_handle_kind_upgrades_unchanged() {
        let range = KeyGroupRange::new(3, 9).unwrap();
        let key_groups = KeyedStateHandle::KeyGroups(KeyGroupsStateHandle {
            backend: "heap".into(),
            checkpoint_id: 4,
            max_parallelism: 128,
            key_group_range: range,
            file: file("chk-4/a"),
            key_group_offsets: vec![0, 1, 2, 3, 4, 5],
        });
        let incremental = KeyedStateHandle::Incremental(IncrementalStateHandle {
            backend: "rocksdb".into(),
            backend_id: "b".into(),
            checkpoint_id: 5,
            max_parallelism: 128,
            key_group_range: range,
            states: vec![meta()],
            shared_files: vec![NamedFile {
                name: "000009.sst".into(),
                file: file("shared/s"),
            }],
            private_files: vec![NamedFile {
                name: "MANIFEST-000001".into(),
                file: file("chk-5/m"),
            }],
        });
        let changelog = KeyedStateHandle::Changelog(ChangelogStateHandle {
            backend: "changelog-heap".into(),
            checkpoint_id: 6,
            max_parallelism: 128,
            key_group_range: range,
            states: vec![meta()],
            materialization_id: 2,
            materialized: vec![key_groups.clone(), incremental.clone()],
            log: vec![ChangelogPart {
                key_group_range: range,
                from_sqn: 1,
                to_sqn: 9,
                segments: vec![ChangelogSegment {
                    file: file("shared/log"),
                    offset: 5,
                    length: 20,
                    first_sqn: 1,
                    end_sqn: 9,
                }],
            }],
        });
        for handle in [key_groups, incremental, changelog] {
            let bytes = postcard::to_allocvec(&handle).unwrap();
            let old: KeyedStateHandleV1 = decode(&bytes).unwrap();
            assert_eq!(old.upgrade().unwrap(), handle);
        }
    }

    #[test]
    fn an_invalid_range_fails_the_upgrade() {
        let range = KeyGroupRangeV1 { start: 9, end: 3 };
        assert!(range.upgrade().is_err());
        assert!(
            decode::<u32>(&[1, 2])
                .unwrap_err()
                .contains("after the end")
        );
    }
}
