//! Building an [`ObjectStoreCheckpointStorage`] from a checkpoint directory
//! URL, as Flink's `execution.checkpointing.dir`.
//!
//! | URL | store | feature |
//! |-----|-------|---------|
//! | `/path`, `relative/path`, `file:///path` | local disk | always |
//! | `memory://` | in memory (one per call) | always |
//! | `s3://bucket/prefix` | S3 and S3-compatible stores | `s3` |
//! | `gs://bucket/prefix` | Google Cloud Storage | `gcs` |
//! | `az://container/prefix` (and `abfs(s)://`, `azure://`) | Azure Blob Storage | `azure` |
//!
//! Cloud stores read their configuration from the environment
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and then from the options map, whose
//! keys are the `object_store` configuration keys, e.g. `endpoint`,
//! `allow_http`, `region`, `access_key_id`, `secret_access_key` for S3.

use std::sync::Arc;

use object_store::path::Path;
use state_api::{Result, StateError};
use url::Url;

use crate::access::ObjectStoreCheckpointStorage;

/// The configuration key errors name.
const CONFIG_KEY: &str = "execution.checkpointing.dir";

impl ObjectStoreCheckpointStorage {
    /// Storage of job `job_id` under the checkpoint directory `url_or_path`
    /// (see the [module docs](crate::url) for the schemes), configured with
    /// `options` (`object_store` configuration keys) on top of the
    /// environment.
    ///
    /// ```
    /// use state_storage::ObjectStoreCheckpointStorage;
    /// use state_api::CheckpointStorageAccess;
    /// let no_options: [(&str, &str); 0] = [];
    /// let storage = ObjectStoreCheckpointStorage::from_url("memory://", "job-1", no_options)?;
    /// assert_eq!(storage.location(), "memory:///job-1");
    /// # Ok::<(), state_api::StateError>(())
    /// ```
    ///
    /// # Errors
    /// [`StateError::Config`] for an unparsable URL, an unknown scheme, a
    /// scheme whose cargo feature is off (the message names the feature),
    /// an unknown option key or an invalid store configuration;
    /// [`StateError::Storage`] when a local directory cannot be created.
    pub fn from_url<I, K, V>(url_or_path: &str, job_id: &str, options: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let options: Vec<(String, String)> = options
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let Some((scheme, _)) = url_or_path.split_once("://") else {
            // No scheme: a local path.
            return Self::local(url_or_path, job_id);
        };
        let url = Url::parse(url_or_path).map_err(|e| config(format!("'{url_or_path}': {e}")))?;
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| config(format!("'{url_or_path}' is not a local file path")))?;
                Self::local(dir, job_id)
            }
            "memory" => {
                // Host and path together are the prefix: memory://a/b and
                // memory:///a/b both mean "a/b".
                let rest = url_or_path.get(scheme.len() + 3..).unwrap_or_default();
                let prefix = Path::parse(rest)
                    .map_err(|e| config(format!("invalid path in '{url_or_path}': {e}")))?;
                let location = format!("memory:///{prefix}");
                Self::with_location(
                    Arc::new(object_store::memory::InMemory::new()),
                    prefix,
                    job_id,
                    location,
                )
            }
            "s3" | "s3a" => cloud::s3(&url, job_id, &options),
            "gs" => cloud::gcs(&url, job_id, &options),
            "az" | "azure" | "abfs" | "abfss" | "adl" => cloud::azure(&url, job_id, &options),
            other => Err(config(format!(
                "unsupported scheme '{other}' in '{url_or_path}': use a local path, file://, memory://, s3://, gs:// or az://"
            ))),
        }
    }
}

impl ObjectStoreCheckpointStorage {
    /// Storage rooted at the existing directory `url_or_path` itself (no
    /// job directory below it): for tools that read a job directory, a
    /// checkpoint's job or a savepoint. A local directory may have any name
    /// and may be given relative (`.`, `chk-3`); in an object store the last
    /// segment must be a plain name (`[A-Za-z0-9._-]`).
    ///
    /// # Errors
    /// [`StateError::FileNotFound`] for a local directory that does not
    /// exist (nothing is created); as [`from_url`](Self::from_url).
    pub fn open_dir(url_or_path: &str) -> Result<Self> {
        if let Some(dir) = local_path(url_or_path)? {
            return Self::local_dir(dir);
        }
        let (parent, name) = crate::layout::split_dir_location(url_or_path)?;
        let no_options: [(&str, &str); 0] = [];
        Self::from_url(&parent, &name, no_options)
    }
}

/// The local directory `url_or_path` names (a path or a `file://` URL),
/// `None` for other schemes.
///
/// # Errors
/// [`StateError::Config`] for a `file://` URL that is not a local path.
pub fn local_path(url_or_path: &str) -> Result<Option<std::path::PathBuf>> {
    match url_or_path.split_once("://") {
        None => Ok(Some(std::path::PathBuf::from(url_or_path))),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("file") => {
            let url =
                Url::parse(url_or_path).map_err(|e| config(format!("'{url_or_path}': {e}")))?;
            url.to_file_path()
                .map(Some)
                .map_err(|()| config(format!("'{url_or_path}' is not a local file path")))
        }
        Some(_) => Ok(None),
    }
}

/// A [`StateError::Config`] on the checkpoint directory.
fn config(message: String) -> StateError {
    StateError::Config {
        key: CONFIG_KEY.into(),
        message,
    }
}

/// The key prefix a URL's path names (`s3://bucket/a/b` → `a/b`).
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn url_prefix(url: &Url) -> Result<Path> {
    Path::from_url_path(url.path()).map_err(|e| config(format!("invalid path in '{url}': {e}")))
}

#[cfg(any(not(feature = "s3"), not(feature = "gcs"), not(feature = "azure")))]
fn feature_off(url: &Url, feature: &str) -> StateError {
    config(format!(
        "'{url}' needs the state-storage cargo feature '{feature}', which this build does not enable"
    ))
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn apply_options<B>(
    mut builder: B,
    options: &[(String, String)],
    store: &str,
    with_config: impl Fn(B, &str, &str) -> std::result::Result<B, object_store::Error>,
) -> Result<B> {
    for (key, value) in options {
        builder = with_config(builder, key, value).map_err(|e| StateError::Config {
            key: key.clone(),
            message: format!("not a valid {store} option: {e}"),
        })?;
    }
    Ok(builder)
}

/// The cloud stores, each behind its feature.
mod cloud {
    use super::*;

    #[cfg(feature = "s3")]
    pub(super) fn s3(
        url: &Url,
        job_id: &str,
        options: &[(String, String)],
    ) -> Result<ObjectStoreCheckpointStorage> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let builder = AmazonS3Builder::from_env().with_url(url.as_str());
        let builder = apply_options(builder, options, "S3", |b, k, v| {
            Ok(b.with_config(k.parse::<AmazonS3ConfigKey>()?, v))
        })?;
        let store = builder
            .build()
            .map_err(|e| config(format!("cannot configure S3 for '{url}': {e}")))?;
        build(Arc::new(store), url, job_id)
    }

    #[cfg(not(feature = "s3"))]
    pub(super) fn s3(
        url: &Url,
        _job_id: &str,
        _options: &[(String, String)],
    ) -> Result<ObjectStoreCheckpointStorage> {
        Err(feature_off(url, "s3"))
    }

    #[cfg(feature = "gcs")]
    pub(super) fn gcs(
        url: &Url,
        job_id: &str,
        options: &[(String, String)],
    ) -> Result<ObjectStoreCheckpointStorage> {
        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
        let builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
        let builder = apply_options(builder, options, "GCS", |b, k, v| {
            Ok(b.with_config(k.parse::<GoogleConfigKey>()?, v))
        })?;
        let store = builder
            .build()
            .map_err(|e| config(format!("cannot configure GCS for '{url}': {e}")))?;
        build(Arc::new(store), url, job_id)
    }

    #[cfg(not(feature = "gcs"))]
    pub(super) fn gcs(
        url: &Url,
        _job_id: &str,
        _options: &[(String, String)],
    ) -> Result<ObjectStoreCheckpointStorage> {
        Err(feature_off(url, "gcs"))
    }

    #[cfg(feature = "azure")]
    pub(super) fn azure(
        url: &Url,
        job_id: &str,
        options: &[(String, String)],
    ) -> Result<ObjectStoreCheckpointStorage> {
        use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
        let builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
        let builder = apply_options(builder, options, "Azure", |b, k, v| {
            Ok(b.with_config(k.parse::<AzureConfigKey>()?, v))
        })?;
        let store = builder
            .build()
            .map_err(|e| config(format!("cannot configure Azure for '{url}': {e}")))?;
        build(Arc::new(store), url, job_id)
    }

    #[cfg(not(feature = "azure"))]
    pub(super) fn azure(
        url: &Url,
        _job_id: &str,
        _options: &[(String, String)],
    ) -> Result<ObjectStoreCheckpointStorage> {
        Err(feature_off(url, "azure"))
    }

    /// Roots the storage at the URL's path inside the bucket.
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    fn build(
        store: Arc<dyn object_store::ObjectStore>,
        url: &Url,
        job_id: &str,
    ) -> Result<ObjectStoreCheckpointStorage> {
        let prefix = url_prefix(url)?;
        let location = url.as_str().to_string();
        ObjectStoreCheckpointStorage::with_location(store, prefix, job_id, location)
    }
}

#[cfg(test)]
mod tests {
    use state_api::CheckpointStorageAccess;

    use super::*;

    const NONE: [(&str, &str); 0] = [];

    #[test]
    fn plain_paths_and_file_urls_are_local() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        let s =
            ObjectStoreCheckpointStorage::from_url(plain.to_str().unwrap(), "job", NONE).unwrap();
        assert!(s.location().ends_with("/plain/job"), "{}", s.location());
        assert!(plain.is_dir());

        let url = Url::from_directory_path(dir.path().join("viaurl")).unwrap();
        let s = ObjectStoreCheckpointStorage::from_url(url.as_str(), "job", NONE).unwrap();
        assert!(s.location().ends_with("/viaurl/job"), "{}", s.location());
    }

    #[test]
    fn memory_urls_keep_their_prefix() {
        let s = ObjectStoreCheckpointStorage::from_url("memory:///base/dir", "job", NONE).unwrap();
        assert_eq!(s.root().as_ref(), "base/dir/job");
        assert_eq!(s.location(), "memory:///base/dir/job");
    }

    #[test]
    fn unknown_schemes_are_config_errors() {
        let err = ObjectStoreCheckpointStorage::from_url("ftp://host/x", "job", NONE).unwrap_err();
        assert!(matches!(err, StateError::Config { .. }), "{err}");
        assert!(err.to_string().contains("ftp"), "{err}");
    }

    #[test]
    fn bad_job_ids_are_config_errors() {
        let err = ObjectStoreCheckpointStorage::from_url("memory://", "a/b", NONE).unwrap_err();
        assert!(matches!(err, StateError::Config { .. }), "{err}");
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_without_the_feature_names_it() {
        let err = ObjectStoreCheckpointStorage::from_url("s3://bucket/x", "job", NONE).unwrap_err();
        assert!(err.to_string().contains("feature 's3'"), "{err}");
    }

    #[cfg(not(feature = "gcs"))]
    #[test]
    fn gcs_without_the_feature_names_it() {
        let err = ObjectStoreCheckpointStorage::from_url("gs://bucket/x", "job", NONE).unwrap_err();
        assert!(err.to_string().contains("feature 'gcs'"), "{err}");
    }

    #[cfg(not(feature = "azure"))]
    #[test]
    fn azure_without_the_feature_names_it() {
        let err =
            ObjectStoreCheckpointStorage::from_url("az://container/x", "job", NONE).unwrap_err();
        assert!(err.to_string().contains("feature 'azure'"), "{err}");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_options_are_applied_and_unknown_keys_named() {
        let s = ObjectStoreCheckpointStorage::from_url(
            "s3://bucket/base",
            "job",
            [
                ("endpoint", "http://127.0.0.1:1"),
                ("allow_http", "true"),
                ("region", "us-east-1"),
                ("access_key_id", "a"),
                ("secret_access_key", "b"),
            ],
        )
        .unwrap();
        assert_eq!(s.root().as_ref(), "base/job");
        assert_eq!(s.location(), "s3://bucket/base/job");
        let err =
            ObjectStoreCheckpointStorage::from_url("s3://bucket", "job", [("no_such_key", "x")])
                .unwrap_err();
        assert!(
            matches!(&err, StateError::Config { key, .. } if key == "no_such_key"),
            "{err}"
        );
    }
}
