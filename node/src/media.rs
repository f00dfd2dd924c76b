//! Media: the bytes of images, audio, video and files, in object storage through opendal (a
//! folder for one node, S3 for a cluster); their metadata in the store.
//!
//! `POST /media?kind=KIND` (with `Authorization: Bearer TOKEN`) streams the body into
//! storage: the node keeps the first 64 KiB to judge the content (its kind and MIME type come
//! from its bytes, never from the client; an image's declared size is checked before
//! anything decodes it), then passes the rest through in chunks while hashing and counting,
//! so its memory does not grow with the file. An upload that breaks a rule or ends early is
//! aborted: no object is left, and the bytes it reserved of the user's quota are given back.
//! Only a complete, checked object gets a record, and only a record makes a media id.
//!
//! `GET /media/ID?exp=...&sig=...` serves an object to whoever holds a URL that `media_url`
//! signed (browsers send no auth header for `<img>` and `<video>`): streamed, with Range
//! requests, the sniffed content type and `nosniff`.

use crate::config::{MediaBackend, MediaConfig};
use actors::media::{SNIFF_BYTES, Sniffed, check_image_pixels, image_dimensions, kind_matches, sniff};
use actors::{ApiError, System};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use opendal::{Operator, services};
use schema::frames::MessageKind;
use schema::frames::server::MediaView;
use schema::records::MediaRecord;
use schema::{ErrorCode, MediaId, UserId};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// Bytes handed to storage at once: S3 multipart parts must be at least 5 MiB, and this
/// bounds what one upload buffers.
const WRITE_CHUNK: usize = 8 * 1024 * 1024;

/// The node's media: where bytes go, and the rules for them.
pub struct Media {
    operator: Operator,
    system: Arc<System>,
    config: MediaConfig,
    /// Thumbnails are made one at a time: a decode may take up to its budget of memory.
    decodes: tokio::sync::Semaphore,
}

/// Why media storage could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MediaOpenError {
    /// The configuration is incomplete or wrong.
    #[error("media storage: {0}")]
    Config(String),
}

impl Media {
    /// Media storage as configured: a folder (`fs_root`, or `media` under `data_dir`) or
    /// an S3 bucket.
    pub fn open(config: &MediaConfig, data_dir: &Path, system: Arc<System>) -> Result<Arc<Media>, MediaOpenError> {
        let operator = match config.backend {
            MediaBackend::Fs => {
                let root =
                    if config.fs_root.as_os_str().is_empty() { data_dir.join("media") } else { config.fs_root.clone() };
                // Objects are written aside and renamed into place when complete, so a reader
                // (or a crash) never sees half an object; what a crash left aside goes now.
                let partial = root.join(".partial");
                let _ = std::fs::remove_dir_all(&partial);
                let builder =
                    services::Fs::default().root(&root.to_string_lossy()).atomic_write_dir(&partial.to_string_lossy());
                Operator::new(builder).map_err(|e| MediaOpenError::Config(e.to_string()))?
            }
            MediaBackend::S3 => {
                // The process-wide HTTP transport (reqwest over rustls); idempotent.
                opendal::install_default();
                if config.s3_bucket.is_empty() || config.s3_endpoint.is_empty() {
                    return Err(MediaOpenError::Config("media.s3_endpoint and media.s3_bucket are required".into()));
                }
                let builder = services::S3::default()
                    .endpoint(&config.s3_endpoint)
                    .bucket(&config.s3_bucket)
                    .region(&config.s3_region)
                    .access_key_id(&config.s3_access_key_id)
                    .secret_access_key(&config.s3_secret_access_key);
                Operator::new(builder).map_err(|e| MediaOpenError::Config(e.to_string()))?
            }
        };
        Ok(Arc::new(Media { operator, system, config: config.clone(), decodes: tokio::sync::Semaphore::new(1) }))
    }

    /// The key that signs download URLs: the configured one, else the cluster's secret
    /// (every node must verify every other's URLs), else a random one (a single node; its
    /// URLs die with the process, and they live minutes anyway).
    pub fn url_secret(config: &MediaConfig, cluster_secret: &str) -> Vec<u8> {
        let base = if !config.url_secret.is_empty() {
            config.url_secret.clone()
        } else if !cluster_secret.is_empty() {
            cluster_secret.to_owned()
        } else {
            format!("{:x}{:x}", actors::random_id(), actors::random_id())
        };
        Sha256::new().chain_update(b"troupe media urls\0").chain_update(base.as_bytes()).finalize().to_vec()
    }

    /// The largest upload of a kind.
    fn limit(&self, kind: MessageKind) -> u64 {
        match kind {
            MessageKind::Image => self.config.max_image_bytes,
            MessageKind::Audio => self.config.max_audio_bytes,
            MessageKind::Video => self.config.max_video_bytes,
            _ => self.config.max_file_bytes,
        }
    }
}

/// Why an upload was refused. Each maps to one HTTP status and one protocol error code.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No `Authorization: Bearer TOKEN`.
    #[error("send the session token as `Authorization: Bearer TOKEN`")]
    Unauthenticated,
    /// A request rule from the actor layer (bad token, unavailable store).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The query is missing `kind` or names no media kind.
    #[error("give ?kind=image, audio, video or file")]
    BadKind,
    /// A presign without the upload's size.
    #[error("give ?size=BYTES, the upload's exact size")]
    BadSize,
    /// Larger than the kind's limit.
    #[error("the upload is over the {limit}-byte limit for its kind")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The user's quota would be exceeded.
    #[error("the upload would take you past your media quota")]
    QuotaExceeded,
    /// The bytes are not the kind claimed.
    #[error("the content is {found} ({mime}), not {claimed}")]
    KindMismatch {
        /// What the client said.
        claimed: &'static str,
        /// What the bytes are.
        found: &'static str,
        /// Their MIME type.
        mime: &'static str,
    },
    /// An image that cannot be taken as it is.
    #[error("{0}")]
    InvalidMedia(String),
    /// The body ended before it was complete, or could not be read.
    #[error("the upload ended early: {0}")]
    Truncated(String),
    /// Object storage failed.
    #[error("media storage failed: {0}")]
    Storage(String),
    /// The storage cannot presign (a folder): upload through `POST /media`.
    #[error("this node's media storage cannot presign uploads; POST /media instead")]
    NotSupported,
    /// No upload of the caller's under that id.
    #[error("no upload of yours with that id")]
    NotFound,
}

impl UploadError {
    fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            UploadError::Unauthenticated => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
            UploadError::Api(error) => {
                let status = match error.code() {
                    ErrorCode::InvalidToken | ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
                    ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                (status, error.code())
            }
            UploadError::BadKind | UploadError::BadSize | UploadError::Truncated(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidField)
            }
            UploadError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::MediaTooLarge),
            UploadError::QuotaExceeded => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::QuotaExceeded),
            UploadError::KindMismatch { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::KindMismatch),
            UploadError::InvalidMedia(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidMedia),
            UploadError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            UploadError::NotSupported => (StatusCode::NOT_IMPLEMENTED, ErrorCode::NotSupported),
            UploadError::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
        }
    }
}

impl IntoResponse for UploadError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({ "code": code, "message": self.to_string() });
        (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

/// `POST /media?kind=KIND`: stores an upload and answers its [`MediaView`] (201).
pub async fn upload(State(media): State<Arc<Media>>, request: Request) -> Response {
    match accept(&media, request).await {
        Ok(view) => (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], json(&view)).into_response(),
        Err(error) => {
            tracing::debug!(%error, "upload refused");
            error.into_response()
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The user a request's `Authorization: Bearer TOKEN` names.
async fn caller(media: &Media, headers: &axum::http::HeaderMap) -> Result<UserId, UploadError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(UploadError::Unauthenticated)?
        .trim()
        .to_owned();
    Ok(media.system.accounts.authenticate(&token).await?.user.id)
}

async fn accept(media: &Media, request: Request) -> Result<MediaView, UploadError> {
    let user = caller(media, request.headers()).await?;
    let claimed = claimed_kind(request.uri().query().unwrap_or("")).ok_or(UploadError::BadKind)?;
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let id = MediaId(actors::random_id());
    store_upload(media, user, claimed, id, declared, request.into_body()).await
}

/// Checks and stores an upload's bytes as media `id` of `user`, reserving its quota, and
/// records it; nothing stays if anything fails.
async fn store_upload(
    media: &Media,
    user: UserId,
    claimed: MessageKind,
    id: MediaId,
    declared: Option<u64>,
    body: Body,
) -> Result<MediaView, UploadError> {
    let limit = media.limit(claimed);
    if declared.is_some_and(|len| len > limit) {
        return Err(UploadError::TooLarge { limit });
    }
    // Reserve what the upload may take; what it did not use goes back afterwards. Without
    // a declared length, whatever the quota has left (up to the kind's limit) is reserved,
    // and the upload may not grow past it.
    let store = &media.system.store;
    let quota = media.config.quota_bytes;
    let reserved = match declared {
        Some(len) => len,
        None => limit.min(quota.saturating_sub(store.media_bytes(user).await.map_err(ApiError::from)?)),
    };
    if (reserved == 0 && declared.is_none())
        || !store.reserve_media_bytes(user, reserved, quota).await.map_err(ApiError::from)?
    {
        return Err(UploadError::QuotaExceeded);
    }
    let bounds = Bounds { limit, reserved };
    let stored = store_object(media, id, claimed, bounds, body).await;
    let record = match stored {
        Ok(record) => MediaRecord { uploader: user, ..record },
        Err(error) => {
            release(media, user, reserved).await;
            return Err(error);
        }
    };
    let unsent_until = record.created_at + media.config.unsent_ttl.as_millis() as u64;
    let recorded = store.insert_media(&record, unsent_until).await.map_err(ApiError::from);
    if !matches!(recorded, Ok(true)) {
        // A record failed: the object must not stay. But when the id is taken, the objects
        // under it are the record's (a second completion of the same presigned upload wrote
        // the same bytes there; or, once in 2^53, another upload): they stay.
        if recorded.is_err() {
            let _ = media.operator.delete(&MediaRecord::object_key(id)).await;
            let _ = media.operator.delete(&MediaRecord::thumbnail_key(id)).await;
        }
        release(media, user, reserved).await;
        return Err(match recorded {
            Err(error) => error.into(),
            Ok(_) => UploadError::Storage("media id collision; retry".into()),
        });
    }
    release(media, user, reserved.saturating_sub(record.size)).await;
    tracing::debug!(media = %id, %user, size = record.size, mime = %record.mime, "media stored");
    Ok(actors::views::media(&record))
}

async fn release(media: &Media, user: UserId, bytes: u64) {
    if bytes == 0 {
        return;
    }
    if let Err(error) = media.system.store.release_media_bytes(user, bytes).await {
        tracing::warn!(%user, bytes, %error, "could not give back reserved media bytes");
    }
}

/// The media kind named by `kind=` in a query string.
fn claimed_kind(query: &str) -> Option<MessageKind> {
    MessageKind::parse_media(query_param(query, "kind")?)
}

/// The value of `name=` in a query string.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// How large an upload may grow: its kind's limit, and what it reserved of the quota.
#[derive(Clone, Copy)]
struct Bounds {
    limit: u64,
    reserved: u64,
}

impl Bounds {
    /// Refuses `size` bytes if they pass either bound.
    fn check(self, size: u64) -> Result<(), UploadError> {
        if size > self.limit {
            Err(UploadError::TooLarge { limit: self.limit })
        } else if size > self.reserved {
            Err(UploadError::QuotaExceeded)
        } else {
            Ok(())
        }
    }
}

/// Streams `body` into storage under the media's key and returns its record (without the
/// uploader). On any refusal or failure the object is aborted, so nothing is left.
async fn store_object(
    media: &Media,
    id: MediaId,
    claimed: MessageKind,
    bounds: Bounds,
    body: Body,
) -> Result<MediaRecord, UploadError> {
    let mut stream = body.into_data_stream();
    let mut head = Vec::new();
    let mut ended = false;
    while head.len() < SNIFF_BYTES {
        match stream.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(error)) => return Err(UploadError::Truncated(error.to_string())),
            None => {
                ended = true;
                break;
            }
        }
        bounds.check(head.len() as u64)?;
    }
    if head.is_empty() {
        return Err(UploadError::InvalidMedia("the upload is empty".into()));
    }
    let sniffed = sniff(&head);
    if !kind_matches(claimed, &sniffed) {
        return Err(UploadError::KindMismatch {
            claimed: claimed.as_str(),
            found: sniffed.kind.as_str(),
            mime: sniffed.mime,
        });
    }
    let dimensions = dimensions(&sniffed, &head)?;
    let key = MediaRecord::object_key(id);
    let storage = |e: opendal::Error| UploadError::Storage(e.to_string());
    let mut writer = media.operator.writer_with(&key).chunk(WRITE_CHUNK).await.map_err(storage)?;
    let mut hasher = Sha256::new();
    let mut size = head.len() as u64;
    hasher.update(&head);
    let written: Result<(), UploadError> = async {
        writer.write(head).await.map_err(storage)?;
        while !ended {
            match stream.next().await {
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    bounds.check(size)?;
                    hasher.update(&chunk);
                    writer.write(chunk).await.map_err(storage)?;
                }
                Some(Err(error)) => return Err(UploadError::Truncated(error.to_string())),
                None => ended = true,
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = written {
        if let Err(abort) = writer.abort().await {
            tracing::warn!(media = %id, %abort, "could not abort a refused upload");
        }
        return Err(error);
    }
    writer.close().await.map_err(storage)?;
    let thumbnail = if claimed == MessageKind::Image {
        match make_thumbnail(media, id, &key).await {
            Ok(thumbnail) => thumbnail,
            Err(error) => {
                // Not a valid image after all: it must not stay.
                let _ = media.operator.delete(&key).await;
                return Err(error);
            }
        }
    } else {
        None
    };
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(MediaRecord {
        id,
        uploader: UserId(0),
        // `kind_matches` held: a media kind equals what the bytes are, a file is a file.
        kind: claimed,
        mime: sniffed.mime.to_owned(),
        size,
        sha256,
        dimensions,
        thumbnail,
        created_at: actors::now_ms(),
    })
}

/// Decodes a stored image (one at a time, off the async threads, under a memory budget)
/// and stores its JPEG thumbnail; its size, or None for an image this node does not decode.
/// `InvalidMedia` if the bytes are not a valid image.
async fn make_thumbnail(media: &Media, id: MediaId, key: &str) -> Result<Option<(u32, u32)>, UploadError> {
    let storage = |e: opendal::Error| UploadError::Storage(e.to_string());
    let _turn = media.decodes.acquire().await.map_err(|e| UploadError::Storage(e.to_string()))?;
    let bytes = media.operator.read(key).await.map_err(storage)?.to_vec();
    let made = tokio::task::spawn_blocking(move || actors::media::thumbnail::thumbnail(&bytes))
        .await
        .map_err(|e| UploadError::Storage(format!("thumbnail task: {e}")))?;
    let Some(thumbnail) = made.map_err(|e| UploadError::InvalidMedia(e.to_string()))? else {
        return Ok(None);
    };
    media.operator.write(&MediaRecord::thumbnail_key(id), thumbnail.jpeg).await.map_err(storage)?;
    Ok(Some((thumbnail.width, thumbnail.height)))
}

/// An image's declared size, refused if no decoder should be given it; for other content,
/// the size if it happens to be a readable image (a photo sent as a file).
fn dimensions(sniffed: &Sniffed, head: &[u8]) -> Result<Option<(u32, u32)>, UploadError> {
    if sniffed.kind == MessageKind::Image {
        return check_image_pixels(head).map(Some).map_err(|e| UploadError::InvalidMedia(e.to_string()));
    }
    Ok(image_dimensions(head))
}

/// How long a presigned upload URL works.
const PRESIGNED_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Where a presigned upload lands until the node has checked it: under the uploader, so
/// only they can complete it. (A bucket lifecycle rule on `uploads/` clears the ones never
/// completed.)
fn pending_key(user: UserId, id: MediaId) -> String {
    format!("uploads/{user}/{id}")
}

/// `POST /media/presign?kind=KIND&size=BYTES`: a URL to `PUT` the bytes straight into the
/// bucket, where the storage can presign (S3). Then `POST /media/ID/complete?kind=KIND`.
pub async fn presign(State(media): State<Arc<Media>>, request: Request) -> Response {
    match presign_upload(&media, request).await {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn presign_upload(media: &Media, request: Request) -> Result<serde_json::Value, UploadError> {
    let user = caller(media, request.headers()).await?;
    let query = request.uri().query().unwrap_or("");
    let claimed = claimed_kind(query).ok_or(UploadError::BadKind)?;
    let size = query_param(query, "size").and_then(|v| v.parse::<u64>().ok()).ok_or(UploadError::BadSize)?;
    let limit = media.limit(claimed);
    if size > limit {
        return Err(UploadError::TooLarge { limit });
    }
    if !media.operator.info().capability().presign_write {
        return Err(UploadError::NotSupported);
    }
    let id = MediaId(actors::random_id());
    let presigned = media
        .operator
        .presign_write(&pending_key(user, id), PRESIGNED_FOR)
        .await
        .map_err(|e| UploadError::Storage(e.to_string()))?;
    let headers: serde_json::Map<String, serde_json::Value> = presigned
        .header()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), serde_json::Value::from(value.to_str().ok()?))))
        .collect();
    let expires_at = actors::now_ms() + PRESIGNED_FOR.as_millis() as u64;
    Ok(serde_json::json!({
        "media": id, "method": presigned.method().as_str(), "url": presigned.uri().to_string(),
        "headers": headers, "expires_at": expires_at,
    }))
}

/// `POST /media/ID/complete?kind=KIND`: checks a presigned upload as `POST /media` checks
/// its body (it reads the object back: kind, size, SHA-256, thumbnail), stores it as media
/// `ID`, and removes the pending object whatever the outcome.
pub async fn complete(State(media): State<Arc<Media>>, request: Request) -> Response {
    match complete_upload(&media, request).await {
        Ok(view) => (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], json(&view)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn complete_upload(media: &Media, request: Request) -> Result<MediaView, UploadError> {
    let user = caller(media, request.headers()).await?;
    let claimed = claimed_kind(request.uri().query().unwrap_or("")).ok_or(UploadError::BadKind)?;
    let id = request
        .uri()
        .path()
        .strip_prefix("/media/")
        .and_then(|p| p.strip_suffix("/complete"))
        .and_then(|id| id.parse::<u64>().ok())
        .map(MediaId)
        .ok_or(UploadError::NotFound)?;
    let key = pending_key(user, id);
    let storage = |e: opendal::Error| UploadError::Storage(e.to_string());
    let size = match media.operator.stat(&key).await {
        Ok(meta) => meta.content_length(),
        Err(error) if error.kind() == opendal::ErrorKind::NotFound => return Err(UploadError::NotFound),
        Err(error) => return Err(storage(error)),
    };
    let stored = async {
        let reader = media.operator.reader_with(&key).chunk(READ_CHUNK).await.map_err(storage)?;
        let stream = reader.into_bytes_stream(0..size).await.map_err(storage)?;
        store_upload(media, user, claimed, id, Some(size), Body::from_stream(stream)).await
    }
    .await;
    if let Err(error) = media.operator.delete(&key).await {
        tracing::warn!(media = %id, %error, "could not remove a pending upload");
    }
    stored
}

/// The most unsent media one sweep looks at.
const UNSENT_PER_SWEEP: usize = 256;

/// Deletes media that were uploaded and never sent within `media.unsent_ttl`: object,
/// thumbnail, record, and the bytes they counted against their uploader's quota. Each
/// node takes the media the placement gives it (by media id, like groups), so one node
/// deletes each.
pub fn spawn_unsent_sweeper(media: Arc<Media>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(media.config.unsent_sweep_interval.max(std::time::Duration::from_millis(20)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = sweep_unsent(&media).await {
                tracing::warn!(%error, "could not sweep unsent media");
            }
        }
    })
}

async fn sweep_unsent(media: &Media) -> Result<(), actors::store::StoreError> {
    let (system, store) = (&media.system, &media.system.store);
    for (due_at, id) in store.unsent_media(actors::now_ms(), UNSENT_PER_SWEEP).await? {
        if system.owner(schema::GroupId(id.0)) != Some(system.node) {
            continue;
        }
        // One entry that fails (storage, a record that will not read) must not stop the
        // sweep: the index is read oldest first, so it would block every later one for good.
        if let Err(error) = sweep_one_unsent(media, due_at, id).await {
            tracing::warn!(media = %id, %error, "could not sweep an unsent media; the next sweep tries again");
        }
    }
    Ok(())
}

async fn sweep_one_unsent(media: &Media, due_at: u64, id: MediaId) -> Result<(), actors::store::StoreError> {
    let store = &media.system.store;
    if store.media_groups(id).await?.is_empty()
        && let Some(record) = store.media(id).await?
    {
        // The objects first (deleting a missing one succeeds); if storage fails, the
        // media stays whole and the next sweep tries again.
        for key in [MediaRecord::object_key(id), MediaRecord::thumbnail_key(id)] {
            media.operator.delete(&key).await.map_err(|e| actors::store::StoreError::Unavailable(e.to_string()))?;
        }
        store.delete_media(id).await?;
        store.release_media_bytes(record.uploader, record.size).await?;
        tracing::debug!(media = %id, "deleted media that was never sent");
    }
    store.forget_unsent_media(due_at, id).await
}

/// Why a download was refused.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No signature, a wrong one, or one for another media.
    #[error("this media URL is not valid; ask for a new one with media_url")]
    BadSignature,
    /// The URL's time is over.
    #[error("this media URL has expired; ask for a new one with media_url")]
    Expired,
    /// No such media (deleted, or never completed).
    #[error("media not found")]
    NotFound,
    /// A Range outside the object.
    #[error("the range is outside the object's {size} bytes")]
    BadRange {
        /// The object's size.
        size: u64,
    },
    /// The store or object storage failed.
    #[error("media storage failed: {0}")]
    Storage(String),
}

impl IntoResponse for DownloadError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            DownloadError::BadSignature => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            DownloadError::Expired => (StatusCode::FORBIDDEN, ErrorCode::Expired),
            DownloadError::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            DownloadError::BadRange { .. } => (StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::InvalidField),
            DownloadError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
        };
        let body = serde_json::json!({ "code": code, "message": self.to_string() }).to_string();
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let DownloadError::BadRange { size } = self
            && let Ok(value) = header::HeaderValue::from_str(&format!("bytes */{size}"))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    }
}

/// Bytes read from storage at once while serving a download.
const READ_CHUNK: usize = 256 * 1024;

/// `GET /media/ID?exp=MS&sig=HEX`: the object's bytes, or the part a `Range` asks for.
pub async fn download(State(media): State<Arc<Media>>, request: Request) -> Response {
    let (request, _) = request.into_parts();
    match serve(&media, &request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve(media: &Media, request: &axum::http::request::Parts) -> Result<Response, DownloadError> {
    let path = request.uri.path().strip_prefix("/media/").ok_or(DownloadError::NotFound)?;
    let (id, variant) = match path.strip_suffix("/thumbnail") {
        Some(id) => (id, "thumbnail"),
        None => (path, ""),
    };
    let id = id.parse::<u64>().map(MediaId).map_err(|_| DownloadError::NotFound)?;
    let query = request.uri.query().unwrap_or("");
    let param = |name: &str| query_param(query, name);
    let expires_at = param("exp").and_then(|v| v.parse::<u64>().ok()).ok_or(DownloadError::BadSignature)?;
    let signature = param("sig").ok_or(DownloadError::BadSignature)?;
    if !actors::media::url_signature_holds(media.system.media_secret(), id, variant, expires_at, signature) {
        return Err(DownloadError::BadSignature);
    }
    let now = actors::now_ms();
    if expires_at <= now {
        return Err(DownloadError::Expired);
    }
    let record = media.system.store.media(id).await.map_err(|e| DownloadError::Storage(e.to_string()))?;
    let record = record.ok_or(DownloadError::NotFound)?;
    let thumbnail = variant == "thumbnail";
    let (key, mime) = match (thumbnail, record.thumbnail) {
        (false, _) => (MediaRecord::object_key(id), record.mime.as_str()),
        (true, Some(_)) => (MediaRecord::thumbnail_key(id), "image/jpeg"),
        (true, None) => return Err(DownloadError::NotFound),
    };
    let storage = |e: opendal::Error| DownloadError::Storage(e.to_string());
    let size = if thumbnail { media.operator.stat(&key).await.map_err(storage)?.content_length() } else { record.size };
    let range = match request.headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) => parse_range(value, size)?,
        None => None,
    };
    let (start, end) = range.unwrap_or((0, size));
    let reader = media.operator.reader_with(&key).chunk(READ_CHUNK).await.map_err(storage)?;
    let stream = reader.into_bytes_stream(start..end).await.map_err(storage)?;
    let status = if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, mime)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("x-content-type-options", "nosniff")
        .header(header::CACHE_CONTROL, format!("private, max-age={}", (expires_at - now) / 1000));
    if range.is_some() {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{}/{size}", end - 1));
    }
    if record.kind == MessageKind::File && !thumbnail {
        // A file is saved, never rendered by the browser in the node's origin.
        builder = builder.header(header::CONTENT_DISPOSITION, "attachment");
    }
    builder.body(Body::from_stream(stream)).map_err(|e| DownloadError::Storage(e.to_string()))
}

/// The byte range `[start, end)` a `Range: bytes=...` header asks for, within `size`; None
/// (the whole object) for several ranges or another unit, which servers may ignore.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, DownloadError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else { return Ok(None) };
    let bad = DownloadError::BadRange { size };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        // `bytes=-N`: the last N bytes.
        (Err(_), Ok(suffix)) if first.is_empty() && suffix > 0 => (size.saturating_sub(suffix), size),
        (Ok(start), Err(_)) if last.is_empty() => (start, size),
        (Ok(start), Ok(end)) if end >= start => (start, end.saturating_add(1).min(size)),
        _ => return Err(bad),
    };
    if range.0 >= size {
        return Err(bad);
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let ok = |v: &str| parse_range(v, 1000).ok().flatten();
        assert_eq!(ok("bytes=0-99"), Some((0, 100)));
        assert_eq!(ok("bytes=900-"), Some((900, 1000)));
        assert_eq!(ok("bytes=-100"), Some((900, 1000)));
        assert_eq!(ok("bytes=-5000"), Some((0, 1000)), "a suffix longer than the object is all of it");
        assert_eq!(ok("bytes=990-5000"), Some((990, 1000)), "an end past the object is clipped");
        assert!(parse_range("bytes=0-1,5-9", 1000).unwrap().is_none(), "several ranges: the whole object");
        assert!(parse_range("items=0-1", 1000).unwrap().is_none());
        for bad in ["bytes=1000-", "bytes=5-1", "bytes=-0", "bytes=x-y", "bytes=2000-3000"] {
            assert!(matches!(parse_range(bad, 1000), Err(DownloadError::BadRange { size: 1000 })), "{bad}");
        }
    }
}
