//! Pulling and unpacking images into containerd.
//!
//! containerd 1.6 has no Transfer service, so the node does what `ctr pull` does client-side:
//! resolve the manifest at the registry, write blobs into the content store (with GC labels tying
//! manifest → config/layers), apply layers into committed snapshots named by chain ID, label the
//! config with the top snapshot, and point the image name at the manifest. All of it runs under
//! one lease so containerd's GC cannot collect half-written objects.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, Info,
    InfoRequest, ReadContentRequest, UpdateImageRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor as CdDescriptor;
use futures::{SinkExt, StreamExt};
use oci_client::client::SizedStream;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use voiyd_messages::image::{self as reference, Reference, ReferenceError};

use super::auth::RegistryAuth;
use super::oci::{self, ImageConfig, Platform};
use super::registry::{FetchedManifest, RegistryClient, RegistryError};
use crate::containerd::client::{random_suffix, Containerd, ContainerdError, Lease};

/// How long the pull lease lives if the node dies before deleting it.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);
/// Bytes per Content.Write message.
const WRITE_CHUNK: usize = 1 << 20;
const GC_SNAPSHOT_LABEL: &str = "containerd.io/gc.ref.snapshot.";

/// When to contact the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always resolve at the registry (blobs already present are not downloaded again).
    Always,
    /// Use the image in containerd when it is there and unpacked.
    IfNotPresent,
    /// Never contact the registry; fail when the image is missing.
    Never,
}

impl PullPolicy {
    /// The policy for a task: its `pull_policy` value when set, else Kubernetes' default
    /// (Always for `:latest` or no tag, IfNotPresent otherwise).
    pub fn resolve(task_value: &str, reference: &Reference) -> Result<Self, PullError> {
        match task_value.to_ascii_lowercase().as_str() {
            "" => Ok(if reference::is_floating(reference) {
                Self::Always
            } else {
                Self::IfNotPresent
            }),
            "always" => Ok(Self::Always),
            "ifnotpresent" => Ok(Self::IfNotPresent),
            "never" => Ok(Self::Never),
            _ => Err(PullError::Policy(task_value.to_string())),
        }
    }
}

/// Settings of a pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registry hosts (`host[:port]`) reached over plain HTTP (loopback always is).
    pub insecure_registries: Vec<String>,
    /// Credentials.
    pub auth: RegistryAuth,
    /// When to contact the registry.
    pub policy: PullPolicy,
    /// containerd snapshotter to unpack into.
    pub snapshotter: String,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            auth: RegistryAuth::anonymous(),
            policy: PullPolicy::IfNotPresent,
            snapshotter: "overlayfs".to_string(),
        }
    }
}

/// Download progress in compressed bytes of manifests, config and layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullProgress {
    /// Bytes written or found present so far.
    pub bytes_done: u64,
    /// Total bytes of the image.
    pub bytes_total: u64,
}

/// An image present and unpacked in containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// containerd image name (the normalised reference).
    pub name: String,
    /// Digest of the image target (the index when the reference names one).
    pub target_digest: String,
    /// Digest of this platform's manifest.
    pub manifest_digest: String,
    /// Runtime defaults from the image config.
    pub config: ImageConfig,
    /// Chain ID of the top layer: the committed snapshot to prepare a rootfs from
    /// (empty for an image without layers).
    pub chain_id: String,
    /// Snapshotter holding the layers.
    pub snapshotter: String,
}

/// Why a pull or image lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The registry refused or could not be reached.
    #[error("pull {reference}: {source}")]
    Registry {
        /// The reference as given.
        reference: String,
        /// What the registry said.
        source: RegistryError,
    },
    /// containerd failed while storing or unpacking.
    #[error("pull {reference}: {source}")]
    Containerd {
        /// The reference as given.
        reference: String,
        /// The containerd failure.
        source: ContainerdError,
    },
    /// Policy Never and the image is missing.
    #[error("image {reference} is not present on this node and its pull policy is Never; pull it on the node or use IfNotPresent")]
    NotPresent {
        /// The reference as given.
        reference: String,
    },
    /// The image is not in containerd's image store.
    #[error(
        "image {name} is not in containerd's image store (namespace {namespace}); pull it first"
    )]
    NotFound {
        /// containerd image name.
        name: String,
        /// containerd namespace searched.
        namespace: String,
    },
    /// The image's documents are inconsistent or unsupported.
    #[error("image {name} cannot be used: {reason}")]
    Invalid {
        /// Image name or reference.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Unknown pull policy value.
    #[error("unknown pull policy '{0}'; use Always, IfNotPresent or Never")]
    Policy(String),
}

/// Pulls `reference` into containerd and unpacks it into `opts.snapshotter`, reporting progress.
pub async fn pull<F>(
    cd: &Containerd,
    reference: &str,
    opts: &PullOptions,
    progress: F,
) -> Result<PulledImage, PullError>
where
    F: Fn(PullProgress),
{
    let r = reference::parse(reference)?;
    let name = r.to_string();
    if opts.policy != PullPolicy::Always {
        match present_image(cd, &name, &opts.snapshotter).await {
            Ok(img) => return Ok(img),
            Err(e) if is_connect_error(&e) => return Err(e),
            Err(_) if opts.policy == PullPolicy::Never => {
                return Err(PullError::NotPresent {
                    reference: reference.to_string(),
                })
            }
            Err(_) => {}
        }
    }

    let reg_err = |source| PullError::Registry {
        reference: reference.to_string(),
        source,
    };
    let cd_err = |source| PullError::Containerd {
        reference: reference.to_string(),
        source,
    };
    let registry =
        RegistryClient::new(&r, &opts.auth, &opts.insecure_registries).map_err(reg_err)?;
    let resolved = registry
        .resolve(&r, &Platform::host())
        .await
        .map_err(reg_err)?;
    let manifest = &resolved.parsed;
    let config_bytes = registry
        .blob_bytes(&r, manifest.config())
        .await
        .map_err(reg_err)?;
    let config_file: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| PullError::Invalid {
            name: name.clone(),
            reason: format!("image config is not valid JSON: {e}"),
        })?;
    let diff_ids = config_file.rootfs().diff_ids();
    let layers: Vec<Blob> = (manifest.layers().iter().enumerate())
        .map(|(index, d)| Blob {
            index,
            ..Blob::of(d)
        })
        .collect();
    if diff_ids.len() != layers.len() {
        return Err(PullError::Invalid {
            name,
            reason: format!(
                "manifest lists {} layers but the config {} diff IDs",
                layers.len(),
                diff_ids.len()
            ),
        });
    }
    let config_blob = Blob::of(manifest.config());
    let chains = oci::chain_ids(diff_ids);

    let mut tracker = Tracker {
        done: 0,
        total: resolved
            .index
            .as_ref()
            .map_or(0, |(i, _)| i.bytes.len() as u64)
            + resolved.manifest.bytes.len() as u64
            + config_bytes.len() as u64
            + layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>(),
        report: &progress,
    };
    tracker.add(0);

    let lease = cd.create_lease(LEASE_EXPIRY).await.map_err(cd_err)?;
    let result = async {
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let labels =
                HashMap::from([("containerd.io/uncompressed".to_string(), diff_id.clone())]);
            // One writer per blob in this agent: a concurrent pull of an image sharing
            // it waits here and then finds it written.
            let _writing = blob_guard(&layer.digest).await;
            if content_exists(&lease, cd, &layer.digest).await? {
                tracker.add(layer.size.max(0) as u64);
                continue;
            }
            let body = registry
                .blob_stream(&r, &manifest.layers()[layer.index])
                .await
                .map_err(BlobError::Registry)?;
            write_stream(cd, &lease, layer, labels, body, &mut tracker)
                .await
                .map_err(|e| match e {
                    StreamError::Blob(e) => e,
                    StreamError::Download(e) => BlobError::Registry(
                        registry.broken_download(&manifest.layers()[layer.index], &e),
                    ),
                })?;
        }
        write_small(
            cd,
            &lease,
            &config_blob,
            &config_bytes,
            HashMap::new(),
            &mut tracker,
        )
        .await?;
        let mut mlabels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            config_blob.digest.clone(),
        )]);
        for (i, l) in layers.iter().enumerate() {
            mlabels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest.clone(),
            );
        }
        let mdesc = Blob::fetched(&resolved.manifest);
        write_small(
            cd,
            &lease,
            &mdesc,
            &resolved.manifest.bytes,
            mlabels,
            &mut tracker,
        )
        .await?;
        if let Some((index, parsed)) = &resolved.index {
            let ilabels = parsed
                .manifests()
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    (
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        m.digest().to_string(),
                    )
                })
                .collect();
            write_small(
                cd,
                &lease,
                &Blob::fetched(index),
                &index.bytes,
                ilabels,
                &mut tracker,
            )
            .await?;
        }
        unpack(cd, &lease, &opts.snapshotter, &layers, diff_ids, &chains).await?;
        if let Some(top) = chains.last() {
            label_content(
                cd,
                &lease,
                &config_blob.digest,
                &format!("{GC_SNAPSHOT_LABEL}{}", opts.snapshotter),
                top,
            )
            .await?;
        }
        put_image(cd, &lease, &name, &Blob::fetched(resolved.target())).await?;
        Ok::<(), BlobError>(())
    }
    .await;
    let released = lease.release().await;
    result.map_err(|e| match e {
        BlobError::Registry(source) => reg_err(source),
        BlobError::Containerd(source) => cd_err(source),
        BlobError::Invalid(reason) => PullError::Invalid {
            name: name.clone(),
            reason,
        },
    })?;
    released.map_err(cd_err)?;
    tracker.finish();
    Ok(PulledImage {
        name,
        target_digest: resolved.target().digest.clone(),
        manifest_digest: resolved.manifest.digest.clone(),
        config: ImageConfig::of_raw(&config_file, &config_bytes),
        chain_id: chains.last().cloned().unwrap_or_default(),
        snapshotter: opts.snapshotter.clone(),
    })
}

/// Reads an image back from containerd's stores (no registry access).
pub async fn image_config(cd: &Containerd, name: &str) -> Result<PulledImage, PullError> {
    image_config_in(cd, name, "overlayfs").await
}

/// [`image_config`] for images unpacked into `snapshotter`.
pub async fn image_config_in(
    cd: &Containerd,
    name: &str,
    snapshotter: &str,
) -> Result<PulledImage, PullError> {
    let cd_err = |source| PullError::Containerd {
        reference: name.to_string(),
        source,
    };
    let invalid = |reason: String| PullError::Invalid {
        name: name.to_string(),
        reason,
    };
    let image = match cd
        .images()
        .get(cd.request(GetImageRequest {
            name: name.to_string(),
        }))
        .await
    {
        Ok(resp) => resp.into_inner().image,
        Err(s) if s.code() == Code::NotFound => None,
        Err(s) => return Err(cd_err(cd.map_status("get image", s))),
    };
    let target = image
        .and_then(|i| i.target)
        .ok_or_else(|| PullError::NotFound {
            name: name.to_string(),
            namespace: cd.namespace().to_string(),
        })?;
    let mut manifest_digest = target.digest.clone();
    let mut bytes = read_content(cd, &target.digest).await.map_err(cd_err)?;
    if oci::is_index(&target.media_type) {
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("image index: {e}")))?;
        let platform = Platform::host();
        let chosen = platform
            .select(&index)
            .ok_or_else(|| invalid(format!("no manifest for {platform}")))?;
        manifest_digest = chosen.digest().to_string();
        bytes = read_content(cd, &manifest_digest).await.map_err(cd_err)?;
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("image manifest: {e}")))?;
    let config_bytes = read_content(cd, manifest.config().digest().as_ref())
        .await
        .map_err(cd_err)?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| invalid(format!("image config: {e}")))?;
    Ok(PulledImage {
        name: name.to_string(),
        target_digest: target.digest,
        manifest_digest,
        config: ImageConfig::of_raw(&config, &config_bytes),
        chain_id: oci::chain_ids(config.rootfs().diff_ids())
            .pop()
            .unwrap_or_default(),
        snapshotter: snapshotter.to_string(),
    })
}

/// Removes an image name from containerd and waits for its garbage collection, so the
/// space of content no other image shares is free on return. Returns false when there
/// was no such image.
pub async fn remove_image(cd: &Containerd, name: &str) -> Result<bool, PullError> {
    match cd
        .images()
        .delete(cd.request(DeleteImageRequest {
            name: name.to_string(),
            sync: true,
            target: None,
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(PullError::Containerd {
            reference: name.to_string(),
            source: cd.map_status("delete image", s),
        }),
    }
}

/// True when a committed snapshot named `key` exists.
pub async fn snapshot_exists(
    cd: &Containerd,
    snapshotter: &str,
    key: &str,
) -> Result<bool, ContainerdError> {
    match cd
        .snapshots()
        .stat(cd.request(StatSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(cd.map_status("stat snapshot", s)),
    }
}

fn is_connect_error(e: &PullError) -> bool {
    matches!(
        e,
        PullError::Containerd {
            source: ContainerdError::Connect { .. },
            ..
        }
    )
}

/// The image when it is in the image store and its top snapshot exists.
async fn present_image(
    cd: &Containerd,
    name: &str,
    snapshotter: &str,
) -> Result<PulledImage, PullError> {
    let img = image_config_in(cd, name, snapshotter).await?;
    let ok = img.chain_id.is_empty()
        || snapshot_exists(cd, snapshotter, &img.chain_id)
            .await
            .map_err(|source| PullError::Containerd {
                reference: name.to_string(),
                source,
            })?;
    if ok {
        Ok(img)
    } else {
        Err(PullError::Invalid {
            name: name.to_string(),
            reason: "its layers are not unpacked".into(),
        })
    }
}

/// Failures inside the leased section, mapped to [`PullError`] by the caller.
enum BlobError {
    Registry(RegistryError),
    Containerd(ContainerdError),
    Invalid(String),
}

impl From<ContainerdError> for BlobError {
    fn from(e: ContainerdError) -> Self {
        Self::Containerd(e)
    }
}

struct Tracker<'a, F: Fn(PullProgress)> {
    done: u64,
    total: u64,
    report: &'a F,
}

impl<F: Fn(PullProgress)> Tracker<'_, F> {
    fn add(&mut self, n: u64) {
        self.done = (self.done + n).min(self.total);
        (self.report)(PullProgress {
            bytes_done: self.done,
            bytes_total: self.total,
        });
    }
    fn finish(&mut self) {
        if self.done < self.total {
            self.add(self.total - self.done);
        }
    }
}

/// What containerd needs to know of a blob (from a descriptor or a fetched document).
#[derive(Debug, Clone)]
struct Blob {
    media_type: String,
    digest: String,
    size: i64,
    /// Position among the manifest's layers (0 for other blobs).
    index: usize,
}

impl Blob {
    fn of(d: &Descriptor) -> Self {
        Self {
            media_type: d.media_type().to_string(),
            digest: d.digest().to_string(),
            size: i64::try_from(d.size()).unwrap_or(i64::MAX),
            index: 0,
        }
    }

    fn fetched(m: &FetchedManifest) -> Self {
        Self {
            media_type: m.media_type.clone(),
            digest: m.digest.clone(),
            size: m.bytes.len() as i64,
            index: 0,
        }
    }
}

fn cd_descriptor(d: &Blob) -> CdDescriptor {
    CdDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: HashMap::new(),
    }
}

async fn content_exists(
    lease: &Lease,
    cd: &Containerd,
    digest: &str,
) -> Result<bool, ContainerdError> {
    match cd
        .content()
        .info(lease.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(cd.map_status("content info", s)),
    }
}

async fn read_content(cd: &Containerd, digest: &str) -> Result<Vec<u8>, ContainerdError> {
    let mut stream = cd
        .content()
        .read(cd.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(|s| cd.map_status(&format!("read content {digest}"), s))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|s| cd.map_status(&format!("read content {digest}"), s))?;
        out.extend_from_slice(&msg.data);
    }
    Ok(out)
}

/// Holds the right to write blob `digest` in this process. containerd locks a write by
/// its ref, and two pulls of images sharing a blob would otherwise collide part-way
/// through a write ("ref … locked"), after the open that waits for the lock succeeded.
async fn blob_guard(digest: &str) -> tokio::sync::OwnedMutexGuard<()> {
    static WRITING: std::sync::OnceLock<
        std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    let lock = {
        let mut all = WRITING
            .get_or_init(Default::default)
            .lock()
            .expect("blob locks");
        // Forget blobs no one writes any more.
        all.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
        all.entry(digest.to_string()).or_default().clone()
    };
    lock.lock_owned().await
}

/// Writes an in-memory blob unless present.
async fn write_small<F: Fn(PullProgress)>(
    cd: &Containerd,
    lease: &Lease,
    desc: &Blob,
    data: &[u8],
    labels: HashMap<String, String>,
    tracker: &mut Tracker<'_, F>,
) -> Result<(), BlobError> {
    let _writing = blob_guard(&desc.digest).await;
    if content_exists(lease, cd, &desc.digest).await? {
        tracker.add(data.len() as u64);
        return Ok(());
    }
    let mut writer = ContentWriter::open(cd, lease, desc, labels).await?;
    writer.write(data).await?;
    tracker.add(data.len() as u64);
    writer.commit().await
}

/// Streams a blob from the registry into the content store; containerd checks size and digest
/// (and so does the stream, at its end).
async fn write_stream<F: Fn(PullProgress)>(
    cd: &Containerd,
    lease: &Lease,
    desc: &Blob,
    labels: HashMap<String, String>,
    mut body: SizedStream,
    tracker: &mut Tracker<'_, F>,
) -> Result<(), StreamError> {
    let mut writer = ContentWriter::open(cd, lease, desc, labels)
        .await
        .map_err(|e| StreamError::Blob(e.into()))?;
    let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
    loop {
        let chunk = body
            .next()
            .await
            .transpose()
            .map_err(StreamError::Download)?;
        let end = chunk.is_none();
        if let Some(c) = chunk {
            buf.extend_from_slice(&c);
        }
        if buf.len() >= WRITE_CHUNK || (end && !buf.is_empty()) {
            writer
                .write(&buf)
                .await
                .map_err(|e| StreamError::Blob(e.into()))?;
            tracker.add(buf.len() as u64);
            buf.clear();
        }
        if end {
            break;
        }
    }
    writer.commit().await.map_err(StreamError::Blob)
}

/// How streaming a blob into containerd failed: on containerd's side, or the download.
enum StreamError {
    Blob(BlobError),
    Download(std::io::Error),
}

/// One Content.Write session. containerd answers every request message, so the writer runs
/// in lock-step: send one message, read its response.
struct ContentWriter<'a> {
    cd: &'a Containerd,
    tx: futures::channel::mpsc::Sender<WriteContentRequest>,
    /// The server's replies; none when the content existed before the write opened.
    rx: Option<
        containerd_client::tonic::codec::Streaming<
            containerd_client::services::v1::WriteContentResponse,
        >,
    >,
    reference: String,
    desc: Blob,
    labels: HashMap<String, String>,
    offset: i64,
    /// Content appeared meanwhile (another pull wrote it): writes become no-ops.
    exists: bool,
}

/// Why a content write could not open.
enum Opening {
    /// Another writer holds the blob's ref (a concurrent pull of an image sharing it).
    Locked(ContainerdError),
    /// Anything else.
    Failed(ContainerdError),
}

/// How long a pull waits for another pull writing the same blob.
const LOCKED_WAIT: Duration = Duration::from_secs(60);

impl<'a> ContentWriter<'a> {
    /// Opens a write of `desc`; while another pull writes the same blob, waits for it (it
    /// commits, and this write then finds the content there).
    async fn open(
        cd: &'a Containerd,
        lease: &Lease,
        desc: &Blob,
        labels: HashMap<String, String>,
    ) -> Result<ContentWriter<'a>, ContainerdError> {
        let started = std::time::Instant::now();
        loop {
            match Self::open_once(cd, lease, desc, labels.clone()).await {
                Ok(w) => return Ok(w),
                Err(Opening::Locked(_)) if started.elapsed() < LOCKED_WAIT => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(Opening::Locked(e)) | Err(Opening::Failed(e)) => return Err(e),
            }
        }
    }

    async fn open_once(
        cd: &'a Containerd,
        lease: &Lease,
        desc: &Blob,
        labels: HashMap<String, String>,
    ) -> Result<ContentWriter<'a>, Opening> {
        let op = format!("write content {}", desc.digest);
        let failed = |s: containerd_client::tonic::Status| {
            let locked = s.code() == Code::Unavailable && s.message().contains("locked");
            let e = cd.map_status(&op, s);
            if locked {
                Opening::Locked(e)
            } else {
                Opening::Failed(e)
            }
        };
        let (mut tx, rx) = futures::channel::mpsc::channel(2);
        let reference = format!("voiyd-{}", desc.digest.replace(':', "-"));
        // The stat message opens the writer; it must be queued before the call so the server
        // has something to answer (its response headers come with the first reply).
        let _ = tx
            .send(WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: reference.clone(),
                total: desc.size,
                expected: desc.digest.clone(),
                ..Default::default()
            })
            .await;
        let opened = cd.content().write(lease.request(rx)).await;
        // Another pull (an image sharing this layer) committed it first: nothing to write.
        if let Err(s) = &opened {
            if s.code() == Code::AlreadyExists {
                return Ok(ContentWriter::already_there(
                    cd, tx, desc, reference, labels,
                ));
            }
        }
        let mut stream = opened.map_err(failed)?.into_inner();
        let mut exists = false;
        let offset = match stream.next().await {
            Some(Ok(r)) => r.offset,
            Some(Err(s)) if s.code() == Code::AlreadyExists => {
                exists = true;
                0
            }
            Some(Err(s)) => return Err(failed(s)),
            None => {
                return Err(Opening::Failed(ContainerdError::rpc(
                    op.clone(),
                    containerd_client::tonic::Status::unknown("write stream closed"),
                )))
            }
        };
        let _ = offset; // a previous partial write is overwritten from offset 0
        Ok(ContentWriter {
            cd,
            tx,
            rx: Some(stream),
            reference,
            desc: desc.clone(),
            labels,
            offset: 0,
            exists,
        })
    }

    /// A writer for content that is there already: every write and the commit are no-ops.
    fn already_there(
        cd: &'a Containerd,
        tx: futures::channel::mpsc::Sender<WriteContentRequest>,
        desc: &Blob,
        reference: String,
        labels: HashMap<String, String>,
    ) -> ContentWriter<'a> {
        ContentWriter {
            cd,
            tx,
            rx: None,
            reference,
            desc: desc.clone(),
            labels,
            offset: 0,
            exists: true,
        }
    }

    async fn roundtrip(&mut self, req: WriteContentRequest) -> Result<(), ContainerdError> {
        let op = format!("write content {}", self.desc.digest);
        if self.tx.send(req).await.is_err() {
            // The server ended the stream; its status is in the response stream.
        }
        let Some(rx) = self.rx.as_mut() else {
            return Ok(());
        };
        match rx.next().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(s)) if s.code() == Code::AlreadyExists => {
                self.exists = true;
                Ok(())
            }
            Some(Err(s)) => Err(self.cd.map_status(&op, s)),
            None => Err(ContainerdError::rpc(
                op,
                containerd_client::tonic::Status::unknown("write stream closed early"),
            )),
        }
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), ContainerdError> {
        if self.exists {
            return Ok(());
        }
        for part in data.chunks(WRITE_CHUNK) {
            let req = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: self.reference.clone(),
                total: self.desc.size,
                expected: self.desc.digest.clone(),
                offset: self.offset,
                data: part.to_vec(),
                labels: HashMap::new(),
            };
            self.roundtrip(req).await?;
            self.offset += part.len() as i64;
        }
        Ok(())
    }

    async fn commit(mut self) -> Result<(), BlobError> {
        if self.exists {
            return Ok(());
        }
        if self.offset != self.desc.size {
            return Err(BlobError::Invalid(format!(
                "blob {} has {} bytes, the manifest says {}",
                self.desc.digest, self.offset, self.desc.size
            )));
        }
        let req = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            total: self.desc.size,
            expected: self.desc.digest.clone(),
            offset: self.offset,
            data: Vec::new(),
            labels: std::mem::take(&mut self.labels),
        };
        self.roundtrip(req).await?;
        Ok(())
    }
}

/// Sets one label on a content blob.
async fn label_content(
    cd: &Containerd,
    lease: &Lease,
    digest: &str,
    key: &str,
    value: &str,
) -> Result<(), ContainerdError> {
    cd.content()
        .update(lease.request(UpdateRequest {
            info: Some(Info {
                digest: digest.to_string(),
                labels: HashMap::from([(key.to_string(), value.to_string())]),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{key}")],
            }),
        }))
        .await
        .map_err(|s| cd.map_status("label content", s))?;
    Ok(())
}

/// Applies each missing layer on top of its parent and commits it under its chain ID.
async fn unpack(
    cd: &Containerd,
    lease: &Lease,
    snapshotter: &str,
    layers: &[Blob],
    diff_ids: &[String],
    chains: &[String],
) -> Result<(), BlobError> {
    let mut parent = String::new();
    for ((layer, diff_id), chain) in layers.iter().zip(diff_ids).zip(chains) {
        if snapshot_exists(cd, snapshotter, chain).await? {
            parent = chain.clone();
            continue;
        }
        let key = format!("voiyd-extract-{}-{chain}", random_suffix());
        let mounts = cd
            .snapshots()
            .prepare(lease.request(PrepareSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.clone(),
                parent: parent.clone(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| cd.map_status("prepare snapshot", s))?
            .into_inner()
            .mounts;
        let applied = cd
            .diff()
            .apply(lease.request(ApplyRequest {
                diff: Some(cd_descriptor(layer)),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            }))
            .await;
        let outcome = match applied {
            Err(s) => Err(BlobError::Containerd(
                cd.map_status(&format!("apply layer {}", layer.digest), s),
            )),
            Ok(resp) => {
                let got = resp
                    .into_inner()
                    .applied
                    .map(|d| d.digest)
                    .unwrap_or_default();
                if &got != diff_id {
                    Err(BlobError::Invalid(format!(
                        "layer {} unpacked to {got}, the config says {diff_id}",
                        layer.digest
                    )))
                } else {
                    commit_snapshot(cd, lease, snapshotter, &key, chain).await
                }
            }
        };
        if let Err(e) = outcome {
            remove_snapshot(cd, lease, snapshotter, &key).await;
            return Err(e);
        }
        parent = chain.clone();
    }
    Ok(())
}

async fn commit_snapshot(
    cd: &Containerd,
    lease: &Lease,
    snapshotter: &str,
    key: &str,
    name: &str,
) -> Result<(), BlobError> {
    match cd
        .snapshots()
        .commit(lease.request(CommitSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            name: name.to_string(),
            key: key.to_string(),
            labels: HashMap::new(),
        }))
        .await
    {
        Ok(_) => Ok(()),
        // A concurrent pull committed the same layer stack first: theirs is identical.
        Err(s) if s.code() == Code::AlreadyExists => {
            remove_snapshot(cd, lease, snapshotter, key).await;
            Ok(())
        }
        Err(s) => Err(cd.map_status("commit snapshot", s).into()),
    }
}

async fn remove_snapshot(cd: &Containerd, lease: &Lease, snapshotter: &str, key: &str) {
    let _ = cd
        .snapshots()
        .remove(lease.request(RemoveSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.to_string(),
        }))
        .await;
}

/// Points image `name` at `target`, creating or updating it.
async fn put_image(
    cd: &Containerd,
    lease: &Lease,
    name: &str,
    target: &Blob,
) -> Result<(), ContainerdError> {
    let image = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(cd_descriptor(target)),
        created_at: None,
        updated_at: None,
    };
    match cd
        .images()
        .create(lease.request(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => {
            cd.images()
                .update(lease.request(UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".to_string()],
                    }),
                    source_date_epoch: None,
                }))
                .await
                .map_err(|s| cd.map_status("update image", s))?;
            Ok(())
        }
        Err(s) => Err(cd.map_status("create image", s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_follows_kubernetes() {
        let latest = reference::parse("busybox").unwrap();
        let explicit_latest = reference::parse("busybox:latest").unwrap();
        let pinned = reference::parse("busybox:1.36").unwrap();
        assert_eq!(
            PullPolicy::resolve("", &latest).unwrap(),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::resolve("", &explicit_latest).unwrap(),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::resolve("", &pinned).unwrap(),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::resolve("Always", &pinned).unwrap(),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::resolve("IfNotPresent", &latest).unwrap(),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::resolve("Never", &latest).unwrap(),
            PullPolicy::Never
        );
        let e = PullPolicy::resolve("Sometimes", &latest).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown pull policy 'Sometimes'; use Always, IfNotPresent or Never"
        );
    }

    #[test]
    fn tracker_reports_cumulative_bytes_capped_at_total() {
        let seen = std::cell::RefCell::new(Vec::new());
        let f = |p: PullProgress| seen.borrow_mut().push(p.bytes_done);
        let mut t = Tracker {
            done: 0,
            total: 10,
            report: &f,
        };
        t.add(4);
        t.add(4);
        t.add(4);
        t.finish();
        assert_eq!(*seen.borrow(), vec![4, 8, 10]);
    }
}
