//! Where stored versions live: a local directory (the default) or a bucket of
//! an S3-compatible object store (AWS S3, MinIO, Ceph RGW, …) through the
//! `object_store` crate.
//!
//! Files are named by keys such as `datasets/<id>/<version>/data.parquet`.
//! Reads go through DataFusion, which is given the store (see
//! [`VersionStore::register`]) and a location per table ([`VersionStore::location`]),
//! so a query streams from the bucket without the node keeping a copy.
//!
//! Credentials for S3 come from the standard environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, …) and are never logged.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use url::Url;

use crate::{QueryError, Result};

/// Parts of a large file sent at once, and their size.
const PART_BYTES: usize = 16 << 20;
const PARTS_IN_FLIGHT: usize = 2;

/// The store of version files, and the runtime (memory pool, spill
/// allowance) every read session over them shares. Cheap to clone.
#[derive(Clone)]
pub struct VersionStore {
    backend: Backend,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
}

impl std::fmt::Debug for VersionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionStore")
            .field("backend", &self.backend)
            .finish()
    }
}

/// The runtime read sessions get until [`VersionStore::with_resources`] says otherwise.
fn default_runtime() -> Arc<datafusion::execution::runtime_env::RuntimeEnv> {
    crate::limits::ReadResources::default()
        .runtime()
        .unwrap_or_else(|_| Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()))
}

#[derive(Clone, Debug)]
enum Backend {
    Local(PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        /// `s3://bucket` — what DataFusion knows the store by.
        base: Url,
        /// The key prefix inside the bucket (may be empty).
        prefix: String,
    },
}

fn remote_error(e: object_store::Error) -> QueryError {
    QueryError::StoreUnavailable(e.to_string())
}

impl VersionStore {
    /// Files under a local directory.
    pub fn local(root: impl Into<PathBuf>) -> VersionStore {
        VersionStore {
            backend: Backend::Local(root.into()),
            runtime: default_runtime(),
        }
    }

    /// An S3-compatible bucket named by `s3://bucket[/prefix]`, configured
    /// from the environment.
    pub fn s3(url: &str) -> Result<VersionStore> {
        let parsed = Url::parse(url)
            .map_err(|e| QueryError::Unreadable(format!("object store URL '{url}': {e}")))?;
        if parsed.scheme() != "s3" {
            return Err(QueryError::Unreadable(format!(
                "object store URL '{url}': only s3://bucket[/prefix] is supported"
            )));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                QueryError::Unreadable(format!("object store URL '{url}' names no bucket"))
            })?
            .to_string();
        // A store that does not answer is reported within seconds (a read
        // or upload then fails with a clear 503) rather than retried for
        // object_store's default three minutes; transient errors are still
        // retried a few times.
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: std::time::Duration::from_secs(15),
        };
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_retry(retry)
            .build()
            .map_err(|e| QueryError::Unreadable(format!("object store '{url}': {e}")))?;
        let base = Url::parse(&format!("s3://{bucket}"))
            .map_err(|e| QueryError::Unreadable(format!("object store URL '{url}': {e}")))?;
        Ok(VersionStore {
            backend: Backend::Remote {
                store: Arc::new(store),
                base,
                prefix: parsed.path().trim_matches('/').to_string(),
            },
            runtime: default_runtime(),
        })
    }

    /// Every read session shares `resources` (one memory pool, one spill allowance).
    pub fn with_resources(
        mut self,
        resources: &crate::limits::ReadResources,
    ) -> Result<VersionStore> {
        self.runtime = resources.runtime()?;
        Ok(self)
    }

    /// A session for reading versions: the shared runtime, the store registered.
    pub fn session(&self) -> SessionContext {
        let ctx = SessionContext::new_with_config_rt(crate::export::config(), self.runtime.clone());
        self.register(&ctx);
        ctx
    }

    /// Where the files are, for operators' logs (no credentials).
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local(root) => root.display().to_string(),
            Backend::Remote { base, prefix, .. } => format!("{base}/{prefix}"),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local(_))
    }

    fn object_path(prefix: &str, key: &str) -> ObjectPath {
        if prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{prefix}/{key}"))
        }
    }

    fn local_path(root: &Path, key: &str) -> PathBuf {
        key.split('/')
            .fold(root.to_path_buf(), |p, part| p.join(part))
    }

    /// Make the store known to a DataFusion session (a no-op for local files).
    pub fn register(&self, ctx: &SessionContext) {
        if let Backend::Remote { store, base, .. } = &self.backend {
            ctx.register_object_store(base, store.clone());
        }
    }

    /// The location DataFusion reads `key` from.
    pub fn location(&self, key: &str) -> String {
        match &self.backend {
            Backend::Local(root) => Self::local_path(root, key).to_string_lossy().into_owned(),
            Backend::Remote { base, prefix, .. } => {
                format!("{base}/{}", Self::object_path(prefix, key))
            }
        }
    }

    /// Store the local file `from` as `key`; a local store moves it.
    pub async fn put_file(&self, from: &Path, key: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(root) => {
                let to = Self::local_path(root, key);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(from, &to)?;
                Ok(())
            }
            Backend::Remote { store, prefix, .. } => {
                let path = Self::object_path(prefix, key);
                let mut file = File::open(from)?;
                let size = file.metadata()?.len();
                if size <= PART_BYTES as u64 {
                    let mut bytes = Vec::with_capacity(size as usize);
                    file.read_to_end(&mut bytes)?;
                    store
                        .put(&path, PutPayload::from(bytes))
                        .await
                        .map_err(remote_error)?;
                    return Ok(());
                }
                let upload = store.put_multipart(&path).await.map_err(remote_error)?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                let mut buf = vec![0u8; 1 << 20];
                let sent = async {
                    loop {
                        let n = file.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        writer
                            .wait_for_capacity(PARTS_IN_FLIGHT)
                            .await
                            .map_err(remote_error)?;
                        writer.write(&buf[..n]);
                    }
                    Ok::<_, QueryError>(())
                }
                .await;
                match sent {
                    Ok(()) => {
                        writer.finish().await.map_err(remote_error)?;
                        Ok(())
                    }
                    Err(e) => {
                        let _ = writer.abort().await;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Store small bytes as `key` (replacing it atomically).
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>, tmp_dir: &Path) -> Result<()> {
        match &self.backend {
            Backend::Local(root) => {
                let to = Self::local_path(root, key);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // In the node's spool directory (same file system), then moved into place.
                let mut file = tempfile::NamedTempFile::new_in(tmp_dir)?;
                file.write_all(&bytes)?;
                file.persist(&to).map_err(|e| e.error)?;
                Ok(())
            }
            Backend::Remote { store, prefix, .. } => {
                store
                    .put(&Self::object_path(prefix, key), PutPayload::from(bytes))
                    .await
                    .map_err(remote_error)?;
                Ok(())
            }
        }
    }

    /// The bytes of `key`, or `None` if there is no such file.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match &self.backend {
            Backend::Local(root) => match std::fs::read(Self::local_path(root, key)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            },
            Backend::Remote { store, prefix, .. } => {
                match store.get(&Self::object_path(prefix, key)).await {
                    Ok(got) => Ok(Some(got.bytes().await.map_err(remote_error)?.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(remote_error(e)),
                }
            }
        }
    }

    /// `key` as a readable file: the file itself when local, else a copy in an
    /// unnamed temporary file under `tmp_dir`. `None` if there is no such file.
    pub async fn open(&self, key: &str, tmp_dir: &Path) -> Result<Option<File>> {
        match &self.backend {
            Backend::Local(root) => match File::open(Self::local_path(root, key)) {
                Ok(file) => Ok(Some(file)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            },
            Backend::Remote { store, prefix, .. } => {
                let got = match store.get(&Self::object_path(prefix, key)).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(remote_error(e)),
                };
                let mut file = tempfile::tempfile_in(tmp_dir)?;
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    file.write_all(&chunk.map_err(remote_error)?)?;
                }
                use std::io::Seek;
                file.rewind()?;
                Ok(Some(file))
            }
        }
    }

    /// Every key under `dir` (recursively).
    pub async fn list(&self, dir: &str) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Local(root) => {
                let mut keys = Vec::new();
                let start = Self::local_path(root, dir);
                if !start.exists() {
                    return Ok(keys);
                }
                let mut pending = vec![start];
                while let Some(d) = pending.pop() {
                    for entry in std::fs::read_dir(&d)? {
                        let entry = entry?;
                        let path = entry.path();
                        if entry.file_type()?.is_dir() {
                            pending.push(path);
                        } else if let Ok(rel) = path.strip_prefix(root) {
                            keys.push(
                                rel.components()
                                    .map(|c| c.as_os_str().to_string_lossy())
                                    .collect::<Vec<_>>()
                                    .join("/"),
                            );
                        }
                    }
                }
                Ok(keys)
            }
            Backend::Remote { store, prefix, .. } => {
                let start = Self::object_path(prefix, dir);
                let mut listing = store.list(Some(&start));
                let mut keys = Vec::new();
                let strip = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("{prefix}/")
                };
                while let Some(meta) = listing.next().await {
                    let meta = meta.map_err(remote_error)?;
                    let full = meta.location.to_string();
                    keys.push(full.strip_prefix(&strip).unwrap_or(&full).to_string());
                }
                Ok(keys)
            }
        }
    }

    /// Remove every file under `dir`.
    pub async fn remove_dir(&self, dir: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(root) => {
                let path = Self::local_path(root, dir);
                match std::fs::remove_dir_all(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                    _ => Ok(()),
                }
            }
            Backend::Remote { store, prefix, .. } => {
                for key in self.list(dir).await? {
                    match store.delete(&Self::object_path(prefix, &key)).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(remote_error(e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Put the local file `from` in place of `key`, destroying the old bytes:
    /// a local file is overwritten with zeros and synced before the new one
    /// is renamed over it; an object is overwritten (a bucket that keeps old
    /// object versions must have them expired by its lifecycle rules).
    pub async fn replace_securely(&self, from: &Path, key: &str) -> Result<()> {
        if let Backend::Local(root) = &self.backend {
            let to = Self::local_path(root, key);
            if let Ok(old) = std::fs::OpenOptions::new().write(true).open(&to) {
                let len = old.metadata()?.len();
                let mut w = std::io::BufWriter::new(&old);
                let zeros = vec![0u8; 1 << 16];
                let mut left = len;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    w.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
                w.flush()?;
                drop(w);
                old.sync_all()?;
            }
        }
        self.put_file(from, key).await
    }

    /// Remove one file; none there is not an error.
    pub async fn remove_file(&self, key: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(root) => match std::fs::remove_file(Self::local_path(root, key)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
            Backend::Remote { store, prefix, .. } => {
                match store.delete(&Self::object_path(prefix, key)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(remote_error(e)),
                }
            }
        }
    }
}
