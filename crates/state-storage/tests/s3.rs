//! The shared storage and store tests against a real S3-compatible server.
//!
//! Needs the `s3` feature and a server; start one on loopback with
//! `scripts/s3-server.sh start` and export its variables with
//! `eval "$(scripts/s3-server.sh env)"`:
//! `STATE_S3_ENDPOINT`, `STATE_S3_BUCKET` and the usual `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`. Without `STATE_S3_ENDPOINT` every
//! test prints a SKIPPED line and returns.
#![cfg(feature = "s3")]
// Test support code: panicking on unexpected errors is the point.
#![allow(clippy::unwrap_used)]

mod common;

use state_storage::ObjectStoreCheckpointStorage;

/// Bucket used when `STATE_S3_BUCKET` is unset (the script's default).
const DEFAULT_BUCKET: &str = "state-checkpoints";

/// A fresh prefix in the bucket per test, so tests run in parallel and
/// reruns never see old objects.
fn env() -> Option<common::Env> {
    let Ok(endpoint) = std::env::var("STATE_S3_ENDPOINT") else {
        eprintln!("SKIPPED: S3 tests need STATE_S3_ENDPOINT (run scripts/s3-server.sh start)");
        return None;
    };
    let bucket = std::env::var("STATE_S3_BUCKET").unwrap_or_else(|_| DEFAULT_BUCKET.into());
    let url = format!("s3://{bucket}/tests-{}", uuid::Uuid::new_v4());
    let allow_http = endpoint.starts_with("http://").to_string();
    Some(common::Env::new(
        move || {
            ObjectStoreCheckpointStorage::from_url(
                &url,
                "job",
                [
                    ("endpoint", endpoint.as_str()),
                    ("allow_http", allow_http.as_str()),
                ],
            )
            .unwrap()
        },
        None,
    ))
}

common::backend_tests!(env);
