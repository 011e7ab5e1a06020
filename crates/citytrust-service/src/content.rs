//! Dataset content: uploads become immutable versions, and every read of
//! content — download or SQL — goes through `read_content` / `run_query`,
//! the one place where the read is permitted, logged and served.
//!
//! Files live under the content directory:
//! - `tmp/<upload>/`: an upload being received and converted (node-local;
//!   swept at start, removed when an upload fails or is dropped), and the
//!   spools of reads;
//! - `datasets/<id>/<version>/data.parquet` (+ `rejects.csv`, and `map.svg`
//!   once drawn): a version, stored just before its row commits — in the same
//!   directory by default, or under the same keys in an S3-compatible bucket
//!   when one is configured ([`citytrust_query::VersionStore`]). Files without
//!   a row (a crash between the two) are removed at start.
//!
//! A read is spooled to an unnamed temporary file while its SHA-256 is
//! computed; the log entry naming that digest is committed; only then does the
//! first byte leave (invariant 1). If logging fails, the read fails.

use citytrust_model::ProblemCode;
use citytrust_query::VersionChoice;
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use citytrust_model::catalogue::UpdateFrequency;
use citytrust_model::{Actor, Dataset, Spectrum};
use citytrust_query::export::{OutputFormat, Slice};
use citytrust_query::ingest::{IngestOptions, OnError, Progress};
use citytrust_query::quality::{QualityRules, QualityStatement};
use citytrust_query::sql::Limits;
use citytrust_query::{ColumnInfo, Declared, DigestWriter, InputFormat};
use citytrust_store::StoredVersion;
use serde::Serialize;
use sha2::Digest;

use crate::{Result, Service, ServiceError, rfc3339};

/// A version as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub dataset_id: String,
    pub version: i64,
    /// The format it was uploaded in.
    pub input_format: String,
    pub rows: i64,
    /// Rows set aside in the rejects file (quarantine uploads only).
    pub rejected: i64,
    /// Size of the stored Parquet file.
    pub bytes: i64,
    /// SHA-256 (hex) of the stored Parquet file.
    pub sha256: String,
    /// SHA-256 (hex) of the file as uploaded.
    pub source_sha256: String,
    #[schema(value_type = Vec<Object>)]
    pub columns: Vec<ColumnInfo>,
    /// The machine-readable data quality statement of this version.
    #[schema(value_type = Object)]
    pub quality: QualityStatement,
    /// The first errors of the rows set aside (quarantine uploads only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<citytrust_query::RowError>,
    pub created_at: String,
    /// The table name in SQL (latest version: without `@N`).
    pub table: String,
    /// True when the caller may not read the content: the quality statement
    /// then omits values taken from the data (minimum, maximum, mean, outliers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub values_withheld: bool,
    /// Set once the version is removed: its file is gone and a read of it is
    /// answered 410 Gone (a stream's compacted version holding readings past
    /// the stream's retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<VersionRemoval>,
}

/// The reason a version is removed when it holds readings past its
/// stream's retention.
pub(crate) const REMOVED_PAST_RETENTION: &str = "retention";

/// When a version was removed, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionRemoval {
    pub at: String,
    /// `retention`: it held readings past the stream's retention.
    pub reason: String,
}

impl VersionInfo {
    pub(crate) fn from_stored(v: StoredVersion) -> Result<VersionInfo> {
        let columns = serde_json::from_str(&v.columns)
            .map_err(|e| ServiceError::Internal(format!("stored columns: {e}")))?;
        let quality = serde_json::from_str(&v.quality)
            .map_err(|e| ServiceError::Internal(format!("stored quality: {e}")))?;
        Ok(VersionInfo {
            table: format!(
                "{}@{}",
                citytrust_query::sql::table_name(&v.dataset_id),
                v.version
            ),
            dataset_id: v.dataset_id,
            version: v.version,
            input_format: v.input_format,
            rows: v.rows,
            rejected: v.rejected,
            bytes: v.bytes,
            sha256: v.sha256,
            source_sha256: v.source_sha256,
            columns,
            quality,
            errors: Vec::new(),
            created_at: v.created_at,
            values_withheld: false,
            removed: v.removed.map(|(at, reason)| VersionRemoval { at, reason }),
        })
    }

    /// The version itself, if it can still be read: a removed one is 410 Gone.
    pub(crate) fn readable(self) -> Result<VersionInfo> {
        match &self.removed {
            None => Ok(self),
            Some(r) => Err(ServiceError::Gone(format!(
                "version {} of dataset '{}' was removed on {}{}; its content can no longer be read",
                self.version,
                self.dataset_id,
                r.at,
                match r.reason.as_str() {
                    REMOVED_PAST_RETENTION => ": it held readings past the stream's retention",
                    _ => "",
                }
            ))),
        }
    }

    /// As `actor` may see it: values from the data only for those who may read it.
    fn for_reader(mut self, actor: &Actor, dataset: &Dataset) -> VersionInfo {
        if may_read_content(actor, dataset).is_err() {
            self.quality = self.quality.without_values();
            self.errors.clear();
            self.values_withheld = true;
        }
        self
    }
}

/// How an upload is to be read.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub format: InputFormat,
    pub on_error: OnError,
    /// Column types the owner declares (`column` → `integer`, `timestamp:%m/%d/%y %H:%M`, …).
    pub declared: BTreeMap<String, String>,
    /// The body is gzip-compressed.
    pub gzip: bool,
}

/// An upload in progress: a private directory that disappears unless the version commits.
pub struct Upload {
    dataset: Dataset,
    dir: PathBuf,
    by: String,
    committed: bool,
}

impl Upload {
    /// Where the caller writes the body as received.
    pub fn body_path(&self) -> PathBuf {
        self.dir.join("upload.raw")
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Content ready to serve: already logged.
pub struct Served {
    /// The bytes, in an unnamed temporary file positioned at its start.
    pub file: std::fs::File,
    pub bytes: u64,
    pub rows: u64,
    pub sha256: String,
    pub media_type: &'static str,
    pub file_name: String,
    /// The transparency-log entry recording this read.
    pub log_index: i64,
    /// The rows were cut at the query's row limit.
    pub truncated: bool,
    /// The nonce of the log entry's commitment to these bytes (the
    /// `CityTrust-Log-Nonce` header): with it the reader can check that the
    /// entry commits to what they received.
    pub nonce: String,
}

/// What a read asks for.
#[derive(Debug, Clone, Default)]
pub struct ReadRequest {
    /// Which version: the latest, a number, or the one in force at a time.
    pub version: VersionChoice,
    pub format: OutputFormat,
    pub slice: Slice,
    pub purpose: Option<String>,
    /// The access level asked for (`None`: identified rows).
    pub level: Option<citytrust_model::AccessLevel>,
}

/// A SQL query as asked.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    pub sql: String,
    pub purpose: String,
    pub format: OutputFormat,
    pub max_rows: Option<usize>,
    /// The access level asked for (`None`: identified rows).
    pub level: Option<citytrust_model::AccessLevel>,
}

/// A read entry's fields, saying (for personal data) which subjects the read
/// admitted: `only_consenting`, `all_but_objecting` or `all`.
pub(crate) trait WithSubjects {
    fn with_subjects(self, scope: Option<&crate::residents::SubjectScope>) -> Self;
}

impl WithSubjects for serde_json::Value {
    fn with_subjects(mut self, scope: Option<&crate::residents::SubjectScope>) -> Self {
        if let (Some(scope), Some(map)) = (scope, self.as_object_mut()) {
            map.insert("subjects".into(), scope.rule.as_str().into());
        }
        self
    }
}

/// Who reads, as the public log names them: an organisation, never a person.
pub(crate) fn reader_label(actor: &Actor, dataset: &Dataset) -> String {
    match actor {
        Actor::Anonymous => "public".into(),
        _ if actor.is_member_of(&dataset.metadata.owner_organization_id) => {
            format!("organization:{}", dataset.metadata.owner_organization_id)
        }
        _ => actor
            .organization_ids()
            .first()
            .map(|o| format!("organization:{o}"))
            .unwrap_or_else(|| "individual".into()),
    }
}

/// Until access governance lands: open data is readable by anyone, anything
/// else only by members of the owning organisation. Deny by default.
pub fn may_read_content(actor: &Actor, dataset: &Dataset) -> std::result::Result<(), String> {
    let owner = &dataset.metadata.owner_organization_id;
    if dataset
        .metadata
        .derivation
        .as_ref()
        .is_some_and(|d| d.needs_reassessment)
    {
        return if actor.is_member_of(owner) {
            Ok(())
        } else {
            Err(format!(
                "dataset '{}' was derived from others and awaits its owner's re-assessment: \
                 until then only members of '{owner}' may read it",
                dataset.id
            ))
        };
    }
    if dataset.metadata.spectrum == Spectrum::Open {
        return Ok(());
    }
    if actor.is_member_of(&dataset.metadata.owner_organization_id) {
        return Ok(());
    }
    Err(format!(
        "dataset '{}' is {} data: only members of its owner '{}' may read its content",
        dataset.id,
        dataset.metadata.spectrum.label().to_lowercase(),
        dataset.metadata.owner_organization_id
    ))
}

pub(crate) fn clean_purpose(purpose: Option<&str>) -> Result<Option<String>> {
    match purpose.map(str::trim).filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(p) if p.chars().count() > 300 => Err(ServiceError::Unprocessable {
            code: ProblemCode::InvalidPurpose,
            message: "a purpose is at most 300 characters".into(),
        }),
        Some(p) => Ok(Some(p.to_string())),
    }
}

/// How long a version number's claim protects its files from other nodes'
/// start-up sweeps: far longer than storing a version's files takes.
const CLAIM_LIFETIME: time::Duration = time::Duration::hours(6);

impl Service {
    /// Where content files live (for operators and tests).
    pub fn content_dir(&self) -> &Path {
        &self.content_dir
    }

    fn content_root(&self) -> &Path {
        &self.content_dir
    }

    /// The key prefix of a version's files in the version store.
    fn version_key(dataset_id: &str, version: i64) -> String {
        format!("datasets/{dataset_id}/{version}")
    }

    /// Delete a removed version's files (its row is kept, marked removed).
    pub(crate) async fn remove_version_files(&self, dataset_id: &str, version: i64) -> Result<()> {
        Ok(self
            .versions
            .remove_dir(&Self::version_key(dataset_id, version))
            .await?)
    }

    /// Where DataFusion reads a version's Parquet file from.
    pub(crate) fn version_location(&self, dataset_id: &str, version: i64) -> String {
        self.versions.location(&format!(
            "{}/data.parquet",
            Self::version_key(dataset_id, version)
        ))
    }

    /// Where the read path reads a version's file from: on a node that keeps
    /// versions on its own disk, the file must be on that disk — when it is
    /// not, another node published it, and nodes sharing a database are set
    /// up without sharing an object store.
    pub(crate) fn version_file(&self, dataset_id: &str, version: i64) -> Result<String> {
        let location = self.version_location(dataset_id, version);
        if self.versions.is_local() && !Path::new(&location).exists() {
            return Err(ServiceError::Unavailable {
                code: ProblemCode::VersionsNotShared,
                message: format!(
                    "version {version} of dataset '{dataset_id}' is recorded in the database but its \
                     files are not on this node: this node keeps versions on its own disk while it \
                     shares the database with other nodes. Every node sharing a database must keep \
                     versions in the same object store (serve --object-store s3://…; \
                     see docs/OPERATING.md)"
                ),
            });
        }
        Ok(location)
    }

    /// Where versions' files are kept (for operators and tests).
    pub fn versions(&self) -> &citytrust_query::VersionStore {
        &self.versions
    }

    pub(crate) fn spool_dir(&self) -> PathBuf {
        self.content_root().join("tmp")
    }

    /// Claim the next version number of `dataset_id`, taking the one after
    /// when another node claimed it at the same moment.
    async fn claim_next_version(&self, dataset_id: &str) -> Result<i64> {
        let mut tries = 0;
        loop {
            match self
                .store
                .claim_version(dataset_id, &rfc3339(self.now()))
                .await
            {
                Err(citytrust_store::StoreError::Conflict(_)) if tries < 16 => tries += 1,
                other => return Ok(other?),
            }
        }
    }

    /// At start: remove uploads that never finished and version files that
    /// never got their row (a crash between storing them and the commit) —
    /// but not the files of an upload another node is publishing now (its
    /// claim on the number is younger than `CLAIM_LIFETIME`).
    pub(crate) async fn sweep_content(&self) -> Result<()> {
        let tmp = self.spool_dir();
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(self.content_root().join("datasets"))?;
        let cutoff = rfc3339(self.now() - CLAIM_LIFETIME);
        let mut known: std::collections::HashSet<(String, i64)> =
            self.store.all_version_keys().await?.into_iter().collect();
        known.extend(self.store.live_version_claims(&cutoff).await?);
        let mut orphans = std::collections::BTreeSet::new();
        let mut present = std::collections::HashSet::new();
        for key in self.versions.list("datasets").await? {
            let mut parts = key.split('/').skip(1);
            let (Some(id), Some(n)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Ok(n) = n.parse::<i64>() {
                present.insert((id.to_string(), n));
            }
            let committed = n
                .parse::<i64>()
                .is_ok_and(|n| known.contains(&(id.to_string(), n)));
            if !committed {
                orphans.insert(format!("datasets/{id}/{n}"));
            }
        }
        for dir in orphans {
            tracing::warn!(files = %dir, "removing version files with no committed version");
            self.versions.remove_dir(&dir).await?;
        }
        let elsewhere = self
            .store
            .all_version_keys()
            .await?
            .into_iter()
            .filter(|k| !present.contains(k))
            .count();
        if elsewhere > 0 {
            tracing::warn!(
                versions = elsewhere,
                at = %self.versions.describe(),
                "versions recorded in the database have no files where this node keeps them: \
                 another node shares the database without sharing its versions (give every node \
                 the same --object-store); reads of those versions are refused with \
                 versions_not_shared"
            );
        }
        Ok(())
    }

    /// Start an upload of a new version: only those who may edit the dataset.
    pub async fn begin_upload(&self, actor: &Actor, dataset_id: &str) -> Result<Upload> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let dataset = self.get_dataset(dataset_id).await?;
        citytrust_model::authz::may_edit_dataset(actor, &dataset.metadata, &dataset.metadata)?;
        let token = hex::encode(crate::accounts::random_bytes::<12>()?);
        let dir = self.spool_dir().join(token);
        std::fs::create_dir_all(&dir)?;
        Ok(Upload {
            by: crate::catalogue::acting_for(actor, &dataset),
            dataset,
            dir,
            committed: false,
        })
    }

    /// An upload the trust makes itself on the owner's behalf (a stream's
    /// compaction), named as the owner's organisation in the log.
    pub(crate) fn owner_upload(&self, dataset: &Dataset) -> Result<Upload> {
        let token = hex::encode(crate::accounts::random_bytes::<12>()?);
        let dir = self.spool_dir().join(token);
        std::fs::create_dir_all(&dir)?;
        Ok(Upload {
            by: format!("organization:{}", dataset.metadata.owner_organization_id),
            dataset: dataset.clone(),
            dir,
            committed: false,
        })
    }

    /// Convert the received body, measure its quality, move it into place and
    /// record the version with its log entry. `progress` sees rows as they go.
    pub async fn finish_upload(
        &self,
        mut upload: Upload,
        options: UploadOptions,
        progress: Option<Box<dyn FnMut(Progress) + Send>>,
    ) -> Result<VersionInfo> {
        let mut declared = BTreeMap::new();
        for (column, spec) in &options.declared {
            let d = Declared::parse(spec).map_err(|m| ServiceError::Unprocessable {
                code: ProblemCode::InvalidDeclaration,
                message: format!("column '{column}': {m}"),
            })?;
            declared.insert(column.clone(), d);
        }
        let mut ingest_options = IngestOptions::new(options.format);
        ingest_options.on_error = options.on_error;
        ingest_options.declared = declared;
        let dir = upload.dir.clone();
        let gzip = options.gzip;
        let mut progress = progress;
        let started = std::time::Instant::now();
        let report = tokio::task::spawn_blocking(move || {
            let raw = dir.join("upload.raw");
            // The file as sent is hashed on the other core while it is converted.
            let hashing = {
                let file = std::fs::File::open(&raw)?;
                std::thread::spawn(move || sha256_reader(file))
            };
            let input =
                if gzip {
                    let plain = dir.join("upload.plain");
                    let mut decoder = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
                        std::fs::File::open(&raw)?,
                    ));
                    let mut out = std::io::BufWriter::new(std::fs::File::create_new(&plain)?);
                    // A small gzip body can expand without end (a "gzip bomb"):
                    // read at most the bound, and refuse a body that reaches it.
                    let sent = std::fs::metadata(&raw)?.len();
                    let bound = gunzip_bound(sent);
                    let copied = std::io::copy(&mut (&mut decoder).take(bound + 1), &mut out)
                        .map_err(|e| ServiceError::Unprocessable {
                            code: ProblemCode::UnreadableContent,
                            message: format!("the body is not valid gzip: {e}"),
                        })?;
                    if copied > bound {
                        return Err(ServiceError::TooLarge(format!(
                            "the gzip body expands to more than {} MiB, the most a body of {} KiB \
                         may expand to here ({}× its size, at least {} MiB, at most {} GiB); \
                         nothing was stored",
                            bound >> 20,
                            sent.div_ceil(1024),
                            GUNZIP_MAX_RATIO,
                            GUNZIP_FLOOR >> 20,
                            GUNZIP_CEILING >> 30
                        )));
                    }
                    out.flush()?;
                    std::fs::remove_file(&raw)?;
                    plain
                } else {
                    raw
                };
            let staged = dir.join("version");
            std::fs::create_dir_all(&staged)?;
            let mut report_progress = |p: Progress| {
                if let Some(f) = progress.as_mut() {
                    f(p)
                }
            };
            let report = citytrust_query::ingest::ingest(
                &input,
                &ingest_options,
                &staged.join("data.parquet"),
                &staged.join("rejects.csv"),
                &mut report_progress,
            )?;
            let source_sha256 = hashing
                .join()
                .map_err(|_| ServiceError::Internal("hashing the upload failed".into()))??;
            std::fs::remove_file(&input)?;
            Ok::<_, ServiceError>((report, source_sha256))
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("upload task: {e}")))??;
        let (mut report, source_sha256) = report;
        let staged = upload.dir.join("version");
        let converted = started.elapsed();
        // A personal dataset: people erased from it never come back in a new
        // version, and the subjects it holds are indexed with it.
        let mut subjects = Vec::new();
        if let Some((column, erased)) = self.erased_for_upload(&upload.dataset).await? {
            let file = staged.join("data.parquet");
            if !erased.is_empty() {
                let stripped = staged.join("stripped.parquet");
                let filter = citytrust_query::subjects::SubjectFilter::all_but(&column, erased);
                let r = citytrust_query::subjects::rewrite(
                    &self.versions,
                    &file.to_string_lossy(),
                    &filter,
                    &stripped,
                )
                .await?;
                if r.rows_removed > 0 {
                    std::fs::rename(&stripped, &file)?;
                    report.rows = r.rows;
                    report.bytes = r.bytes;
                    report.sha256 = r.sha256;
                } else {
                    std::fs::remove_file(&stripped)?;
                }
            }
            subjects = citytrust_query::subjects::distinct_keys(&file, &column).await?;
        }
        let rules = self.quality_rules(&upload.dataset.id).await?;
        let mut quality = citytrust_query::quality::measure(
            &staged.join("data.parquet"),
            &report.columns,
            &rules,
        )
        .await?;
        quality.risk = citytrust_query::risk::measure_risk(
            &staged.join("data.parquet"),
            &report.columns,
            &upload.dataset.metadata.column_classes.quasi_identifying,
            quality.rows,
        )
        .await?;

        // The next number, claimed in the database: several nodes may be
        // publishing versions of this dataset at once, and only the claim's
        // holder writes its files. (Erasure, on this node, waits for it.)
        let _guard = self.upload_lock.lock().await;
        let id = upload.dataset.id.clone();
        let version = self.claim_next_version(&id).await?;
        let key = Self::version_key(&id, version);
        let release = || async {
            let _ = self.versions.remove_dir(&key).await;
            if let Err(e) = self.store.release_version_claim(&id, version).await {
                tracing::warn!(dataset = %id, version, error = %e, "could not release a version claim (swept later)");
            }
        };
        // No row or other claim has this number: anything there is a crash's leftover.
        if let Err(e) = self.versions.remove_dir(&key).await {
            release().await;
            return Err(e.into());
        }
        let published = async {
            for name in ["rejects.csv", "data.parquet"] {
                let file = staged.join(name);
                if file.exists() {
                    self.versions
                        .put_file(&file, &format!("{key}/{name}"))
                        .await?;
                }
            }
            Ok::<_, ServiceError>(())
        }
        .await;
        if let Err(e) = published {
            release().await;
            return Err(e);
        }
        let now = rfc3339(self.now());
        let stored = StoredVersion {
            dataset_id: id.clone(),
            version,
            input_format: options.format.to_string(),
            rows: i64::try_from(report.rows).unwrap_or(i64::MAX),
            rejected: i64::try_from(report.rejected).unwrap_or(i64::MAX),
            bytes: i64::try_from(report.bytes).unwrap_or(i64::MAX),
            sha256: report.sha256.clone(),
            source_sha256: source_sha256.clone(),
            columns: serde_json::to_string(&report.columns)
                .map_err(|e| ServiceError::Internal(e.to_string()))?,
            quality: serde_json::to_string(&quality)
                .map_err(|e| ServiceError::Internal(e.to_string()))?,
            created_by: upload.by.clone(),
            created_at: now,
            removed: None,
        };
        let (body, at) = self.log_entry(
            "version.published",
            serde_json::json!({
                "dataset": id,
                "version": version,
                "rows": report.rows,
                "rejected": report.rejected,
                "format": options.format.to_string(),
                "sha256": report.sha256,
                "source_sha256": source_sha256,
                "by": upload.by,
            }),
        )?;
        if let Err(e) = self
            .store
            .insert_version(
                &stored,
                &subjects,
                &crate::ledger::new_entry("version.published", &body, &at),
            )
            .await
        {
            release().await;
            return Err(e.into());
        }
        upload.committed = true;
        let _ = std::fs::remove_dir_all(&upload.dir);
        tracing::info!(
            dataset = %id,
            version,
            rows = report.rows,
            convert_ms = converted.as_millis() as u64,
            measure_ms = (started.elapsed() - converted).as_millis() as u64,
            "version published"
        );
        let mut info = VersionInfo::from_stored(stored)?;
        info.errors = report.errors;
        Ok(info)
    }

    /// A dataset's versions, newest first. That a version exists, its size and
    /// its quality shares are public like the catalogue; values taken from the
    /// data are withheld from those who may not read it.
    pub async fn list_versions(&self, actor: &Actor, dataset_id: &str) -> Result<Vec<VersionInfo>> {
        let dataset = self.get_dataset(dataset_id).await?;
        self.store
            .list_versions(dataset_id)
            .await?
            .into_iter()
            .map(|v| Ok(VersionInfo::from_stored(v)?.for_reader(actor, &dataset)))
            .collect()
    }

    /// One version (the latest when `version` is `None`), as `actor` may see it.
    pub async fn get_version(
        &self,
        actor: &Actor,
        dataset_id: &str,
        version: Option<i64>,
    ) -> Result<VersionInfo> {
        let dataset = self.get_dataset(dataset_id).await?;
        Ok(self
            .version_record(dataset_id, version)
            .await?
            .for_reader(actor, &dataset))
    }

    /// A version in full, for the read path itself.
    pub(crate) async fn version_record(
        &self,
        dataset_id: &str,
        version: Option<i64>,
    ) -> Result<VersionInfo> {
        self.get_dataset(dataset_id).await?;
        let v = self
            .store
            .get_version(dataset_id, version)
            .await?
            .ok_or_else(|| match version {
                Some(n) => ServiceError::NotFound(format!("version {n} of dataset '{dataset_id}'")),
                None => ServiceError::NotFound(format!(
                    "content of dataset '{dataset_id}' (no version uploaded yet)"
                )),
            });
        let v = match v {
            Ok(v) => v,
            // Every version removed: the newest says when and why.
            Err(e) => match self
                .store
                .list_versions(dataset_id)
                .await?
                .into_iter()
                .next()
            {
                Some(newest) if version.is_none() => newest,
                _ => return Err(e),
            },
        };
        VersionInfo::from_stored(v)
    }

    pub async fn quality_rules(&self, dataset_id: &str) -> Result<QualityRules> {
        match self.store.quality_rules(dataset_id).await? {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| ServiceError::Internal(format!("stored quality rules: {e}"))),
            None => Ok(QualityRules::default()),
        }
    }

    /// The owner's quality rules: who may edit the dataset may set them.
    pub async fn set_quality_rules(
        &self,
        actor: &Actor,
        dataset_id: &str,
        rules: QualityRules,
    ) -> Result<QualityRules> {
        if matches!(actor, Actor::Anonymous) {
            return Err(ServiceError::Unauthenticated);
        }
        let dataset = self.get_dataset(dataset_id).await?;
        citytrust_model::authz::may_edit_dataset(actor, &dataset.metadata, &dataset.metadata)?;
        let text =
            serde_json::to_string(&rules).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let (body, at) = self.log_entry(
            "quality_rules.changed",
            serde_json::json!({
                "dataset": dataset_id,
                "rules_sha256": hex::encode(sha2::Sha256::digest(text.as_bytes())),
                "by": crate::catalogue::acting_for(actor, &dataset),
            }),
        )?;
        self.store
            .set_quality_rules(
                dataset_id,
                &text,
                &crate::ledger::new_entry("quality_rules.changed", &body, &at),
            )
            .await?;
        Ok(rules)
    }

    /// The rejects file of a quarantine upload: the raw rows an upload set
    /// aside. It is content like any other — read through the read path
    /// (authorised at the identified level for a purpose, logged before it
    /// is served) — and, since its rows were never parsed, it cannot be
    /// filtered by whose they are: a read that only some residents' rows may
    /// reach is refused.
    pub async fn rejects_file(
        &self,
        actor: &Actor,
        dataset_id: &str,
        version: i64,
        purpose: Option<&str>,
    ) -> Result<Served> {
        let _slot = self.read_slot(actor).await?;
        let dataset = self.get_dataset(dataset_id).await?;
        let purpose = clean_purpose(purpose)?;
        let plan = self
            .plan_read(
                actor,
                dataset,
                purpose.as_deref(),
                citytrust_model::AccessLevel::Identified,
                VersionChoice::Number(version),
            )
            .await?;
        if plan
            .scope
            .as_ref()
            .is_some_and(|s| s.rule != citytrust_model::residents::SubjectRule::All)
            || plan.grant.columns.is_some()
        {
            return Err(ServiceError::Refused {
                rule: Some("rejects-not-filterable".into()),
                message: "rows set aside by an upload were never read into columns, so neither \
                          whose they are nor which of their fields you may see can be told: \
                          they are read only by whoever may read every row and column"
                    .into(),
            });
        }
        let version = plan.version.version;
        let key = format!("{}/rejects.csv", Self::version_key(dataset_id, version));
        let mut file = self
            .versions
            .open(&key, &self.spool_dir())
            .await?
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "rejected rows of version {version} (none were set aside)"
                ))
            })?;
        let sha256 = sha256_reader(file.try_clone()?)?;
        let bytes = file.metadata()?.len();
        file.rewind()?;
        let nonce = new_nonce()?;
        let log_index = self
            .log_read(
                &plan,
                serde_json::json!({
                    "part": "rejects",
                    "format": "csv",
                    "bytes": bytes,
                    "commitment": commitment("served", &nonce, &sha256),
                }),
                "rejects",
            )
            .await?;
        Ok(Served {
            file,
            bytes,
            rows: 0,
            sha256,
            media_type: "text/csv; charset=utf-8",
            file_name: format!("{}-v{version}-rejects.csv", plan.dataset.id),
            log_index,
            truncated: false,
            nonce,
        })
    }

    /// Read a dataset's content: permitted → spooled and digested → logged → served.
    pub async fn read_content(
        &self,
        actor: &Actor,
        dataset_id: &str,
        request: ReadRequest,
    ) -> Result<Served> {
        let _slot = self.read_slot(actor).await?;
        let dataset = self.get_dataset(dataset_id).await?;
        let purpose = clean_purpose(request.purpose.as_deref())?;
        let plan = self
            .plan_read(
                actor,
                dataset,
                purpose.as_deref(),
                request
                    .level
                    .unwrap_or(citytrust_model::AccessLevel::Identified),
                request.version,
            )
            .await?;
        let nonce = new_nonce()?;
        let mut spool = DigestWriter::new(std::io::BufWriter::new(tempfile::tempfile_in(
            self.spool_dir(),
        )?));
        let (rows, transform) = self
            .export_rows_at_level(&plan, request.slice, request.format, &mut spool)
            .await?;
        let (buffered, bytes, sha256) = spool.finish()?;
        let mut file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        // Committed (group commit) before a byte is served; no entry, no data.
        let log_index = self
            .log_read(
                &plan,
                serde_json::json!({
                    "transform": transform,
                    "format": request.format.extension(),
                    "offset": request.slice.offset,
                    "limit": request.slice.limit,
                    "rows": rows,
                    "bytes": bytes,
                    "commitment": commitment("served", &nonce, &sha256),
                }),
                "download",
            )
            .await?;
        Ok(Served {
            file,
            bytes,
            rows,
            sha256,
            media_type: request.format.media_type(),
            file_name: format!(
                "{}-v{}.{}",
                plan.dataset.id,
                plan.version.version,
                request.format.extension()
            ),
            log_index,
            truncated: false,
            nonce,
        })
    }

    /// The datasets a checked query names, each permitted to `actor` (or
    /// nothing runs), noted in `trail` as they are resolved; the tables to
    /// plan the query over.
    pub(crate) async fn resolve_tables(
        &self,
        actor: &Actor,
        checked: &citytrust_query::sql::CheckedQuery,
        purpose: Option<&str>,
        level: citytrust_model::AccessLevel,
        trail: &mut QueryTrail,
    ) -> Result<Vec<citytrust_query::sql::TableSource>> {
        let mut files = Vec::new();
        for table in &checked.tables {
            // A name that is no dataset is the caller's text: it never reaches the log.
            let dataset = self
                .store
                .get_dataset(&table.dataset_id)
                .await?
                .ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "table '{}' (no dataset '{}')",
                        table.table, table.dataset_id
                    ))
                })?;
            // Every input must be allowed for this purpose, or nothing runs.
            let grant = match self.authorize_read(actor, &dataset, purpose, level).await {
                Ok(grant) => grant,
                Err(e) => {
                    trail.refused = Some(dataset.id.clone());
                    return Err(match e {
                        ServiceError::Unauthenticated | ServiceError::SignInToRead { .. } => {
                            ServiceError::Refused {
                                rule: None,
                                message: format!(
                                    "table '{}' is not open data: sign in, and read it under an agreement",
                                    table.table
                                ),
                            }
                        }
                        other => other,
                    });
                }
            };
            let plan = self
                .plan_read_under(actor, dataset, grant, table.version)
                .await?;
            files.push(citytrust_query::sql::TableSource {
                table: table.table.clone(),
                location: plan.location.clone(),
                columns: plan.grant.columns.clone(),
                subjects: plan.subjects().cloned(),
            });
            trail.read.push(plan);
        }
        Ok(files)
    }

    /// Run one read-only SELECT over the datasets the caller may read.
    /// Every attempt is logged before its answer leaves — served, refused or
    /// failed — with commitments (not digests) to the SQL and the result.
    pub async fn run_query(&self, actor: &Actor, request: QueryRequest) -> Result<Served> {
        let _slot = self.read_slot(actor).await?;
        let nonce = new_nonce()?;
        let sql_commitment = commitment("sql", &nonce, &request.sql);
        let mut trail = QueryTrail::default();
        let result = self.attempt_query(actor, &request, &mut trail).await;
        let spooled = match result {
            Ok(spooled) => spooled,
            Err(e) => {
                self.log_query_attempt(actor, &trail, &sql_commitment, "query", &e)
                    .await?;
                return Err(e);
            }
        };
        let (body, at) = self.log_entry_by(
            actor,
            "query.run",
            serde_json::json!({
                "outcome": "served",
                "inputs": trail.inputs(),
                "sql_commitment": sql_commitment,
                "format": request.format.extension(),
                "rows": spooled.rows,
                "truncated": spooled.truncated,
                "bytes": spooled.bytes,
                "commitment": commitment("served", &nonce, &spooled.sha256),
                "purpose": trail.purpose,
                "by": trail.label(actor),
            }),
        )?;
        // Committed (group commit) before a byte is served; no entry, no data.
        let log_index = self.appender.append("query.run", body, at).await?;
        self.record_query_reads(&trail, log_index, "query").await?;
        Ok(Served {
            file: spooled.file,
            bytes: spooled.bytes,
            rows: spooled.rows,
            sha256: spooled.sha256,
            media_type: request.format.media_type(),
            file_name: format!("query.{}", request.format.extension()),
            log_index,
            truncated: spooled.truncated,
            nonce,
        })
    }

    /// A query up to its spooled result, noting in `trail` what it read.
    async fn attempt_query(
        &self,
        actor: &Actor,
        request: &QueryRequest,
        trail: &mut QueryTrail,
    ) -> Result<Spooled> {
        let purpose =
            clean_purpose(Some(&request.purpose))?.ok_or_else(|| ServiceError::Unprocessable {
                code: ProblemCode::PurposeRequired,
                message: "say what the query is for: 'purpose' is required".into(),
            })?;
        // Only the trust's own words for a purpose are ever logged.
        if self.purpose(&purpose).await?.is_some() {
            trail.purpose = Some(purpose.clone());
        }
        let checked = citytrust_query::sql::check(&request.sql)?;
        let level = request
            .level
            .unwrap_or(citytrust_model::AccessLevel::Identified);
        let files = self
            .resolve_tables(actor, &checked, Some(&purpose), level, trail)
            .await?;
        if level != citytrust_model::AccessLevel::Identified {
            // Permitted, but SQL could undo any transform (a GROUP BY of one
            // row, a join on a pseudonym's source): it runs on identified rows only.
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::LevelNotForSql,
                message: format!(
                    "SQL runs over identified rows only; at the level of {} read the \
                     dataset's rows at that level ({}), or ask for a table or a \
                     differentially private statistic",
                    level.label().to_lowercase(),
                    level.as_str()
                ),
            });
        }
        let limits = Limits {
            max_rows: request.max_rows.unwrap_or(10_000).clamp(1, 100_000),
            ..Limits::default()
        };
        self.spool_query(checked, &files, limits, request.format, MAX_RESULT_BYTES)
            .await
    }

    /// Run a checked query into a spool file: at most `limits.max_rows`
    /// rows (more are cut and said so) and `max_bytes` bytes (more is
    /// refused), within `limits.timeout`. Engine failures come back in
    /// CityTrust's words ([`query_failure`]).
    pub(crate) async fn spool_query(
        &self,
        checked: citytrust_query::sql::CheckedQuery,
        files: &[citytrust_query::sql::TableSource],
        limits: Limits,
        format: OutputFormat,
        max_bytes: u64,
    ) -> Result<Spooled> {
        let file = tempfile::tempfile_in(self.spool_dir())?;
        let versions = self.versions.clone();
        let files = files.to_vec();
        // On the query runtime's own threads: a costly query never holds the
        // threads that answer requests, and one past its time is stopped
        // from here (aborted at its next step).
        let mut task = self.query_runtime.spawn(async move {
            let capped = Capped::new(std::io::BufWriter::new(file), max_bytes);
            let over = capped.over.clone();
            let mut spool = DigestWriter::new(capped);
            let ran = async {
                let stream =
                    citytrust_query::sql::start(checked, &versions, &files, limits).await?;
                let limited = CutAt::new(stream, limits.max_rows);
                let cut = limited.cut.clone();
                let rows =
                    citytrust_query::export::write_stream(Box::pin(limited), format, &mut spool)
                        .await?;
                Ok::<_, citytrust_query::QueryError>((
                    rows,
                    cut.load(std::sync::atomic::Ordering::Relaxed),
                ))
            }
            .await;
            (ran, spool, over)
        })?;
        let (ran, spool, over) = match tokio::time::timeout(limits.timeout, &mut task).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(ServiceError::Internal(format!("a query's task: {e}"))),
            Err(_) => {
                task.abort();
                return Err(citytrust_query::QueryError::Timeout(limits.timeout.as_secs()).into());
            }
        };
        if over.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::ResultTooLarge,
                message: format!(
                    "the result is larger than the {} MiB a query may return; aggregate it, \
                     select fewer columns or add a LIMIT",
                    max_bytes >> 20
                ),
            });
        }
        let (rows, truncated) = ran.map_err(query_failure)?;
        let (capped, bytes, sha256) = spool.finish()?;
        let mut file = capped.inner.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(Spooled {
            file,
            bytes,
            rows,
            sha256,
            truncated,
        })
    }

    /// The log entry of a query attempt that did not serve: why (`outcome`
    /// refused or failed, the error's code, the rule), what it had read so
    /// far, a commitment to its SQL. Committed before the refusal is answered.
    pub(crate) async fn log_query_attempt(
        &self,
        actor: &Actor,
        trail: &QueryTrail,
        sql_commitment: &str,
        kind: &str,
        error: &ServiceError,
    ) -> Result<()> {
        let (outcome, code, rule) = attempt_outcome(error);
        let (body, at) = self.log_entry_by(
            actor,
            "query.run",
            serde_json::json!({
                "outcome": outcome,
                "error": code,
                "rule": rule,
                "inputs": trail.inputs(),
                "refused_dataset": trail.refused,
                "sql_commitment": sql_commitment,
                "purpose": trail.purpose,
                "for": kind,
                "by": trail.label(actor),
            }),
        )?;
        let log_index = self.appender.append("query.run", body, at).await?;
        // A failed query may still have shown something of the rows it read
        // (which rows made it fail): the residents concerned see it listed.
        if outcome == "failed" {
            self.record_query_reads(trail, log_index, kind).await?;
        }
        Ok(())
    }

    async fn record_query_reads(
        &self,
        trail: &QueryTrail,
        log_index: i64,
        kind: &str,
    ) -> Result<()> {
        for plan in &trail.read {
            self.record_personal_read(plan, log_index, kind).await?;
        }
        Ok(())
    }
}

/// How far a gzip upload may expand: `GUNZIP_MAX_RATIO` times what was sent
/// (CSV and JSON compress about 5–15×), at least `GUNZIP_FLOOR` (small,
/// very regular files) and never more than `GUNZIP_CEILING`.
pub const GUNZIP_MAX_RATIO: u64 = 100;
pub const GUNZIP_FLOOR: u64 = 64 << 20;
pub const GUNZIP_CEILING: u64 = 16 << 30;

/// The most a gzip body of `sent` bytes may expand to.
pub fn gunzip_bound(sent: u64) -> u64 {
    sent.saturating_mul(GUNZIP_MAX_RATIO)
        .clamp(GUNZIP_FLOOR, GUNZIP_CEILING)
}

/// The most bytes a query's result may take (it is spooled before it is served).
pub const MAX_RESULT_BYTES: u64 = 256 * 1024 * 1024;

/// How far a query attempt got: for its log entry, whatever its outcome.
#[derive(Default)]
pub(crate) struct QueryTrail {
    /// The purpose, when it is one of the trust's (free text is never logged).
    pub purpose: Option<String>,
    /// The datasets read, each as planned.
    pub read: Vec<crate::read::ReadPlan>,
    /// The dataset whose refusal stopped the query.
    pub refused: Option<String>,
}

impl QueryTrail {
    fn inputs(&self) -> Vec<serde_json::Value> {
        self.read
            .iter()
            .map(|t| {
                serde_json::json!({
                    "dataset": t.dataset.id,
                    "version": t.version.version,
                    "level": t.grant.level.as_str(),
                    "rule": t.grant.rule,
                    "agreement": t.grant.agreement_id,
                })
                .with_subjects(t.scope.as_ref())
            })
            .collect()
    }

    fn label(&self, actor: &Actor) -> String {
        match self.read.first() {
            Some(t) => reader_label(actor, &t.dataset),
            None => match actor {
                Actor::Anonymous => "public".into(),
                _ => actor
                    .organization_ids()
                    .first()
                    .map(|o| format!("organization:{o}"))
                    .unwrap_or_else(|| "individual".into()),
            },
        }
    }
}

/// A query's result in its spool file.
pub(crate) struct Spooled {
    pub file: std::fs::File,
    pub bytes: u64,
    pub rows: u64,
    pub sha256: String,
    pub truncated: bool,
}

/// A query's failure as the caller sees it: the engine's kind of failure in
/// CityTrust's words; the engine's own text (which may quote a value) only
/// in the server's debug log.
pub(crate) fn query_failure(e: citytrust_query::QueryError) -> ServiceError {
    match e {
        citytrust_query::QueryError::Failed(f) if f.code != ProblemCode::StoreUnavailable => {
            tracing::debug!(code = f.code.as_str(), detail = %f.detail, "a query failed");
            ServiceError::Unprocessable {
                code: f.code,
                message: f.message,
            }
        }
        other => other.into(),
    }
}

/// How an attempt that served nothing ended, for its log entry: the
/// outcome and the problem code the caller was answered with.
fn attempt_outcome(e: &ServiceError) -> (&'static str, ProblemCode, Option<String>) {
    match e {
        ServiceError::Refused { rule, .. } => ("refused", ProblemCode::Refused, rule.clone()),
        ServiceError::Unauthenticated | ServiceError::SignInToRead { .. } => {
            ("refused", ProblemCode::Unauthenticated, None)
        }
        ServiceError::Forbidden(_) => ("refused", ProblemCode::Forbidden, None),
        ServiceError::NotFound(_) => ("failed", ProblemCode::NotFound, None),
        ServiceError::Unprocessable { code, .. } => ("failed", *code, None),
        ServiceError::Invalid(_) => ("failed", ProblemCode::ValidationFailed, None),
        ServiceError::TooMany { .. } => ("refused", ProblemCode::TooManyRequests, None),
        ServiceError::Unavailable { code, .. } => ("failed", *code, None),
        _ => ("failed", ProblemCode::Internal, None),
    }
}

/// A fresh random nonce (hex), for a commitment.
pub(crate) fn new_nonce() -> Result<String> {
    Ok(hex::encode(crate::accounts::random_bytes::<16>()?))
}

/// A commitment to `text`: SHA-256 of a domain tag, `kind`, the nonce and
/// the text. Published in the log instead of a plain digest, which anyone
/// could confirm a guess against (a household id, a count); the reader, who
/// is given the nonce, can check it holds what they sent or received.
pub fn commitment(kind: &str, nonce: &str, text: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"citytrust-commitment-v1\n");
    h.update(kind.as_bytes());
    h.update(b"\n");
    h.update(nonce.as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

/// Writes through to `inner` until `max` bytes; past that every write fails
/// (and `over` says why), so a result cannot fill the disk.
struct Capped<W> {
    inner: W,
    left: u64,
    over: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<W> Capped<W> {
    fn new(inner: W, max: u64) -> Capped<W> {
        Capped {
            inner,
            left: max,
            over: Default::default(),
        }
    }
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            self.over.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other("the result is too large"));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Whether a dataset is refreshed on the timetable its owner declared.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RefreshState {
    /// The declared update frequency.
    #[schema(value_type = String)]
    pub update_frequency: UpdateFrequency,
    /// `on_time`, `overdue`, `awaiting_first_version` or `no_timetable`
    /// (irregular, never or unknown frequency).
    pub state: &'static str,
    pub overdue: bool,
    /// When the latest version was published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_version_at: Option<String>,
    /// When the next version is due; it is overdue a quarter of a period later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_due_at: Option<String>,
}

/// The period a frequency promises, if it promises one.
pub fn refresh_period(frequency: UpdateFrequency) -> Option<time::Duration> {
    use time::Duration;
    Some(match frequency {
        UpdateFrequency::Continuous => Duration::minutes(15),
        UpdateFrequency::Hourly => Duration::hours(1),
        UpdateFrequency::Daily => Duration::days(1),
        UpdateFrequency::Weekly => Duration::weeks(1),
        UpdateFrequency::Monthly => Duration::days(31),
        UpdateFrequency::Quarterly => Duration::days(92),
        UpdateFrequency::Annual => Duration::days(366),
        UpdateFrequency::Irregular | UpdateFrequency::Never | UpdateFrequency::Unknown => {
            return None;
        }
    })
}

impl Service {
    /// The dataset's timeliness now: due a period after the latest version
    /// (or after the dataset was catalogued, before any), overdue a quarter of
    /// a period after that.
    pub async fn timeliness(&self, dataset_id: &str) -> Result<RefreshState> {
        let dataset = self.get_dataset(dataset_id).await?;
        let frequency = dataset.metadata.update_frequency;
        let latest = self.store.get_version(dataset_id, None).await?;
        let last_version_at = latest.as_ref().map(|v| v.created_at.clone());
        let Some(period) = refresh_period(frequency) else {
            return Ok(RefreshState {
                update_frequency: frequency,
                state: "no_timetable",
                overdue: false,
                last_version_at,
                next_due_at: None,
            });
        };
        let since = last_version_at.as_deref().unwrap_or(&dataset.created_at);
        let since =
            time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
                .map_err(|e| ServiceError::Internal(format!("stored time '{since}': {e}")))?;
        let due = since + period;
        let overdue = self.now() > due + period / 4;
        Ok(RefreshState {
            update_frequency: frequency,
            state: match (overdue, latest.is_some()) {
                (true, _) => "overdue",
                (false, true) => "on_time",
                (false, false) => "awaiting_first_version",
            },
            overdue,
            last_version_at,
            next_due_at: Some(rfc3339(due)),
        })
    }

    /// An SVG map of a version's geometry, for those who may read it; `None`
    /// when it has no geometry or the caller may not read it. Drawn once per
    /// version and kept beside it (a version never changes).
    pub async fn map_preview(
        &self,
        actor: &Actor,
        dataset_id: &str,
        version: Option<i64>,
    ) -> Result<Option<String>> {
        let dataset = self.get_dataset(dataset_id).await?;
        if may_read_content(actor, &dataset).is_err() {
            return Ok(None);
        }
        let version = self.version_record(dataset_id, version).await?.readable()?;
        let key = Self::version_key(dataset_id, version.version);
        if let Some(svg) = self.versions.get_bytes(&format!("{key}/map.svg")).await? {
            return Ok(Some(String::from_utf8_lossy(&svg).into_owned()));
        }
        if self
            .versions
            .get_bytes(&format!("{key}/map.none"))
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let title = format!(
            "Map of {} (version {})",
            dataset.metadata.title, version.version
        );
        let parquet = self
            .versions
            .open(&format!("{key}/data.parquet"), &self.spool_dir())
            .await?
            .ok_or_else(|| ServiceError::Internal(format!("the file of {key} is missing")))?;
        let svg =
            tokio::task::spawn_blocking(move || citytrust_query::preview::map_svg(parquet, &title))
                .await
                .map_err(|e| ServiceError::Internal(format!("map task: {e}")))??;
        let (name, text) = match &svg {
            Some(svg) => ("map.svg", svg.as_bytes().to_vec()),
            None => ("map.none", Vec::new()),
        };
        self.versions
            .put_bytes(&format!("{key}/{name}"), text, &self.spool_dir())
            .await?;
        Ok(svg)
    }
}

fn sha256_reader(mut file: std::fs::File) -> Result<String> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Passes at most `max` rows and notes whether more were there.
struct CutAt {
    inner: citytrust_query::datafusion::execution::SendableRecordBatchStream,
    left: usize,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutAt {
    fn new(
        inner: citytrust_query::datafusion::execution::SendableRecordBatchStream,
        max: usize,
    ) -> CutAt {
        CutAt {
            inner,
            left: max,
            cut: Default::default(),
        }
    }
}

impl futures::Stream for CutAt {
    type Item = citytrust_query::datafusion::error::Result<
        citytrust_query::datafusion::arrow::array::RecordBatch,
    >;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.left == 0 {
            // Anything further means the limit cut the result.
            return match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(batch))) if batch.num_rows() > 0 => {
                    self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Ok(_))) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                let n = batch.num_rows();
                if n <= self.left {
                    self.left -= n;
                    Poll::Ready(Some(Ok(batch)))
                } else {
                    let keep = self.left;
                    self.left = 0;
                    self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
                    Poll::Ready(Some(Ok(batch.slice(0, keep))))
                }
            }
            other => other,
        }
    }
}

impl citytrust_query::datafusion::physical_plan::RecordBatchStream for CutAt {
    fn schema(&self) -> citytrust_query::datafusion::arrow::datatypes::SchemaRef {
        self.inner.schema()
    }
}
