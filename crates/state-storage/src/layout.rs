//! Flink's checkpoint directory layout, as pure functions on paths.
//!
//! ```text
//! <base>/<job-id>/chk-<n>/<name>       exclusive state of checkpoint n
//!                /chk-<n>/_metadata    the commit marker of checkpoint n
//!                /shared/<name>        state several checkpoints may reference
//!                /taskowned/<name>     state subsumption never deletes
//! ```
//!
//! Paths in [`FileHandle`](state_api::FileHandle)s are relative to the job
//! directory, so a job directory can be copied or addressed from another root.
//!
//! A savepoint is one self-contained directory ([`DirectoryLayout::Savepoint`]):
//!
//! ```text
//! <savepoint-dir>/savepoint-<short job id>-<random>/_metadata
//!                                                  /<hint>-<uuid>   every file, exclusive
//! ```
//! Its handles' paths are relative to the savepoint directory itself, so the
//! directory can be moved or copied anywhere and still restores.

use object_store::path::{Path, PathPart};
use state_api::{Result, StateError, StateScope};

/// Name of the metadata file that commits a checkpoint.
pub const METADATA_FILE_NAME: &str = "_metadata";

/// Directory of files several checkpoints may share.
pub const SHARED_DIR: &str = "shared";

/// Directory of task-owned files.
pub const TASK_OWNED_DIR: &str = "taskowned";

/// Prefix of checkpoint directories (`chk-<n>`).
pub const CHECKPOINT_DIR_PREFIX: &str = "chk-";

/// Prefix of savepoint directories (`savepoint-<short job id>-<random>`).
pub const SAVEPOINT_DIR_PREFIX: &str = "savepoint-";

/// How a storage root lays out its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DirectoryLayout {
    /// A job's checkpoint directory: `chk-<n>/`, `shared/`, `taskowned/`.
    #[default]
    Job,
    /// One savepoint's directory: every file at the top, all exclusive to
    /// the savepoint, `_metadata` beside them.
    Savepoint,
}

impl DirectoryLayout {
    /// A new unique file path for a file of `scope` requested for checkpoint
    /// `checkpoint_id`, and the scope the file really gets: in a savepoint
    /// every file is exclusive, whatever the backend asked for.
    pub fn new_file(
        self,
        checkpoint_id: u64,
        scope: StateScope,
        name_hint: &str,
    ) -> (String, StateScope) {
        match self {
            DirectoryLayout::Job => (new_file_path(checkpoint_id, scope, name_hint), scope),
            DirectoryLayout::Savepoint => (
                format!("{}-{}", sanitize_hint(name_hint), uuid::Uuid::new_v4()),
                StateScope::Exclusive,
            ),
        }
    }
}

/// A new savepoint directory name: `savepoint-<first 6 characters of the
/// job id>-<12 random hex digits>`, as Flink names them.
pub fn new_savepoint_dir_name(job_id: &str) -> String {
    let short: String = sanitize_hint(job_id).chars().take(6).collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{SAVEPOINT_DIR_PREFIX}{short}-{}", &random[..12])
}

/// Longest name hint kept in a file name; the rest is cut.
const MAX_HINT_LEN: usize = 64;

/// The directory of checkpoint `checkpoint_id`, relative to the job
/// directory: `chk-<n>`.
pub fn checkpoint_dir(checkpoint_id: u64) -> String {
    format!("{CHECKPOINT_DIR_PREFIX}{checkpoint_id}")
}

/// The metadata file of checkpoint `checkpoint_id`: `chk-<n>/_metadata`.
pub fn metadata_path(checkpoint_id: u64) -> String {
    format!("{}/{METADATA_FILE_NAME}", checkpoint_dir(checkpoint_id))
}

/// The directory a file of `scope` goes to for checkpoint `checkpoint_id`.
pub fn scope_dir(checkpoint_id: u64, scope: StateScope) -> String {
    match scope {
        StateScope::Exclusive => checkpoint_dir(checkpoint_id),
        StateScope::Shared => SHARED_DIR.to_string(),
        StateScope::TaskOwned => TASK_OWNED_DIR.to_string(),
    }
}

/// A new unique file path: `<scope dir>/<sanitized hint>-<uuid v4>`.
pub fn new_file_path(checkpoint_id: u64, scope: StateScope, name_hint: &str) -> String {
    format!(
        "{}/{}-{}",
        scope_dir(checkpoint_id, scope),
        sanitize_hint(name_hint),
        uuid::Uuid::new_v4()
    )
}

/// Keeps `[A-Za-z0-9._-]` of a name hint (others become `_`), at most 64
/// characters, so every object store accepts the name unencoded. An empty
/// hint becomes `file`.
pub fn sanitize_hint(name_hint: &str) -> String {
    let hint: String = name_hint
        .chars()
        .take(MAX_HINT_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A leading dot would hide the file on local disks; "." and ".." are
    // not valid path segments at all.
    let hint = hint.trim_start_matches('.');
    if hint.is_empty() {
        "file".to_string()
    } else {
        hint.to_string()
    }
}

/// Checks that `job_id` is one plain path segment (`[A-Za-z0-9._-]+`, not
/// `.` or `..`).
///
/// # Errors
/// [`StateError::Config`] naming the job id.
pub fn validate_job_id(job_id: &str) -> Result<()> {
    let plain = !job_id.is_empty()
        && job_id != "."
        && job_id != ".."
        && job_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain {
        Ok(())
    } else {
        Err(StateError::Config {
            key: "job-id".into(),
            message: format!(
                "'{job_id}' is not a valid job id: use letters, digits, '.', '_' and '-' only"
            ),
        })
    }
}

/// Splits the location of a directory (a path or a URL) into the parent
/// location and the directory's name.
///
/// # Errors
/// [`StateError::Config`] when there is no parent to split off or the name
/// is not one plain path segment.
pub fn split_dir_location(location: &str) -> Result<(String, String)> {
    let trimmed = location.trim_end_matches('/');
    let invalid = || StateError::Config {
        key: "location".into(),
        message: format!("'{location}' is not a directory below a parent directory or bucket"),
    };
    let (parent, name) = match trimmed.rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() => {
            // "s3://bucket" alone has no parent directory to split off.
            if parent.ends_with(':') || parent.ends_with(":/") {
                return Err(invalid());
            }
            let parent = if parent.is_empty() { "/" } else { parent };
            (parent.to_string(), name.to_string())
        }
        Some(_) => return Err(invalid()),
        None if !trimmed.is_empty() && !trimmed.contains(':') => {
            (".".to_string(), trimmed.to_string())
        }
        None => return Err(invalid()),
    };
    validate_job_id(&name).map_err(|_| StateError::Config {
        key: "location".into(),
        message: format!("directory name '{name}' must use letters, digits, '.', '_' and '-' only"),
    })?;
    Ok((parent, name))
}

/// The object path of `relative` (a handle's path) under `root`.
///
/// The relative path comes from handles that may have been read from
/// storage, so it is validated: `/`-separated non-empty segments, none `.`
/// or `..`, no control characters.
///
/// # Errors
/// [`StateError::Corrupt`] naming the path when it is not a valid relative
/// path.
pub fn resolve(root: &Path, relative: &str) -> Result<Path> {
    if relative.is_empty() || relative.starts_with('/') || relative.ends_with('/') {
        return Err(StateError::corrupt(
            relative,
            "not a relative file path under the job directory",
        ));
    }
    let mut path = root.clone();
    for segment in relative.split('/') {
        if segment.is_empty() {
            return Err(StateError::corrupt(relative, "empty path segment"));
        }
        let part = PathPart::parse(segment).map_err(|e| {
            StateError::corrupt(relative, format!("invalid path segment '{segment}': {e}"))
        })?;
        path = path.join(part);
    }
    Ok(path)
}

/// The path of `location` relative to `root`, or `None` when it is not
/// below it.
pub fn relative_to(root: &Path, location: &Path) -> Option<String> {
    let parts: Vec<String> = location
        .prefix_match(root)?
        .map(|p| p.as_ref().to_string())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

/// The checkpoint id of a `chk-<n>` directory name.
pub fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_DIR_PREFIX)?;
    // Reject "+5", "05" and friends so every id has exactly one directory.
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// The checkpoint id of a relative path inside `chk-<n>/`, and whether it is
/// that checkpoint's `_metadata`.
pub fn parse_checkpoint_file(relative: &str) -> Option<(u64, bool)> {
    let (dir, rest) = relative.split_once('/')?;
    let id = parse_checkpoint_dir(dir)?;
    Some((id, rest == METADATA_FILE_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_map_to_flink_directories() {
        assert_eq!(scope_dir(3, StateScope::Exclusive), "chk-3");
        assert_eq!(scope_dir(3, StateScope::Shared), "shared");
        assert_eq!(scope_dir(3, StateScope::TaskOwned), "taskowned");
        assert_eq!(metadata_path(42), "chk-42/_metadata");
    }

    #[test]
    fn new_file_paths_are_unique_and_keep_the_hint() {
        let a = new_file_path(3, StateScope::Exclusive, "heap-0");
        let b = new_file_path(3, StateScope::Exclusive, "heap-0");
        assert_ne!(a, b);
        assert!(a.starts_with("chk-3/heap-0-"), "{a}");
        let uuid = a.trim_start_matches("chk-3/heap-0-");
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");
        assert!(new_file_path(1, StateScope::Shared, "sst").starts_with("shared/sst-"));
    }

    #[test]
    fn hints_are_sanitized() {
        assert_eq!(sanitize_hint("op/1 state#2"), "op_1_state_2");
        assert_eq!(sanitize_hint(""), "file");
        assert_eq!(sanitize_hint(".."), "file");
        assert_eq!(sanitize_hint(".hidden"), "hidden");
        assert_eq!(sanitize_hint(&"x".repeat(200)).len(), MAX_HINT_LEN);
        assert_eq!(sanitize_hint("ü"), "_");
    }

    #[test]
    fn job_ids_are_single_segments() {
        assert!(validate_job_id("a1b2-c3_d.e").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(
                matches!(validate_job_id(bad), Err(StateError::Config { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn resolve_rejects_escapes_and_empty_segments() {
        let root = Path::from("base/job");
        assert_eq!(
            resolve(&root, "chk-3/x-1").unwrap(),
            Path::from("base/job/chk-3/x-1")
        );
        for bad in ["", "/abs", "a//b", "a/", "../x", "a/./b", "a/\u{1}"] {
            assert!(
                matches!(resolve(&root, bad), Err(StateError::Corrupt { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn relative_paths_round_trip() {
        let root = Path::from("base/job");
        let full = resolve(&root, "shared/f-1").unwrap();
        assert_eq!(relative_to(&root, &full).as_deref(), Some("shared/f-1"));
        assert_eq!(relative_to(&root, &Path::from("other/job/x")), None);
        assert_eq!(relative_to(&root, &root), None);
        // A root of "" (a local directory as base) works too.
        assert_eq!(
            relative_to(&Path::from("job"), &Path::from("job/chk-1/_metadata")).as_deref(),
            Some("chk-1/_metadata")
        );
    }

    #[test]
    fn savepoint_files_are_flat_and_exclusive() {
        let (path, scope) = DirectoryLayout::Savepoint.new_file(7, StateScope::Shared, "sst");
        assert!(path.starts_with("sst-") && !path.contains('/'), "{path}");
        assert_eq!(scope, StateScope::Exclusive);
        let (path, scope) = DirectoryLayout::Job.new_file(7, StateScope::Shared, "sst");
        assert!(path.starts_with("shared/sst-"), "{path}");
        assert_eq!(scope, StateScope::Shared);
        let name = new_savepoint_dir_name("a1b2c3d4e5/job");
        assert!(name.starts_with("savepoint-a1b2c3-"), "{name}");
        assert_eq!(name.len(), "savepoint-a1b2c3-".len() + 12);
        assert!(validate_job_id(&name).is_ok());
    }

    #[test]
    fn locations_split_into_parent_and_directory() {
        let split = |l: &str| split_dir_location(l).unwrap();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(split("/a/b/savepoint-x-1"), pair("/a/b", "savepoint-x-1"));
        assert_eq!(split("/a/b/savepoint-x-1/"), pair("/a/b", "savepoint-x-1"));
        assert_eq!(split("sp"), pair(".", "sp"));
        assert_eq!(split("/sp"), pair("/", "sp"));
        assert_eq!(split("s3://bucket/sps/job"), pair("s3://bucket/sps", "job"));
        assert_eq!(
            split("file:///tmp/savepoint-x-1"),
            pair("file:///tmp", "savepoint-x-1")
        );
        for bad in ["", "/", "s3://bucket", "/a/b c"] {
            assert!(
                matches!(split_dir_location(bad), Err(StateError::Config { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn checkpoint_dirs_parse_strictly() {
        assert_eq!(parse_checkpoint_dir("chk-0"), Some(0));
        assert_eq!(parse_checkpoint_dir("chk-17"), Some(17));
        for bad in [
            "chk-",
            "chk-+1",
            "chk-01",
            "chk--1",
            "chk-1a",
            "shared",
            "chk-99999999999999999999",
        ] {
            assert_eq!(parse_checkpoint_dir(bad), None, "{bad}");
        }
        assert_eq!(parse_checkpoint_file("chk-5/_metadata"), Some((5, true)));
        assert_eq!(parse_checkpoint_file("chk-5/heap-0-x"), Some((5, false)));
        assert_eq!(parse_checkpoint_file("shared/x"), None);
        assert_eq!(parse_checkpoint_file("chk-5"), None);
    }
}
