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
        Ok(Arc::new(Media { operator, system, config: config.clone() }))
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
            UploadError::BadKind | UploadError::Truncated(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidField),
            UploadError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::MediaTooLarge),
            UploadError::QuotaExceeded => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::QuotaExceeded),
            UploadError::KindMismatch { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::KindMismatch),
            UploadError::InvalidMedia(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidMedia),
            UploadError::Storage(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
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

async fn accept(media: &Media, request: Request) -> Result<MediaView, UploadError> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(UploadError::Unauthenticated)?
        .trim()
        .to_owned();
    let user = media.system.accounts.authenticate(&token).await?.user.id;
    let claimed = claimed_kind(request.uri().query().unwrap_or("")).ok_or(UploadError::BadKind)?;
    let limit = media.limit(claimed);
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
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
    let id = MediaId(actors::random_id());
    let stored = store_object(media, id, claimed, bounds, request.into_body()).await;
    let record = match stored {
        Ok(record) => MediaRecord { uploader: user, ..record },
        Err(error) => {
            release(media, user, reserved).await;
            return Err(error);
        }
    };
    let recorded = store.insert_media(&record).await.map_err(ApiError::from);
    if !matches!(recorded, Ok(true)) {
        // A record failed (or, once in 2^53, the id was taken): the object must not stay.
        let _ = media.operator.delete(&MediaRecord::object_key(id)).await;
        release(media, user, reserved).await;
        return Err(match recorded {
            Err(error) => error.into(),
            Ok(_) => UploadError::Storage("media id collision; retry".into()),
        });
    }
    release(media, user, reserved.saturating_sub(record.size)).await;
    tracing::debug!(media = %id, %user, size = record.size, mime = %record.mime, "media stored");
    Ok(MediaView {
        media: id,
        kind: record.kind,
        mime: record.mime,
        size: record.size,
        sha256: record.sha256,
        width: record.dimensions.map(|d| d.0),
        height: record.dimensions.map(|d| d.1),
    })
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
    let value = query.split('&').find_map(|pair| pair.strip_prefix("kind="))?;
    match value {
        "image" => Some(MessageKind::Image),
        "audio" => Some(MessageKind::Audio),
        "video" => Some(MessageKind::Video),
        "file" => Some(MessageKind::File),
        _ => None,
    }
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
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(MediaRecord {
        id,
        uploader: UserId(0),
        kind: if claimed == MessageKind::File { MessageKind::File } else { sniffed.kind },
        mime: sniffed.mime.to_owned(),
        size,
        sha256,
        dimensions,
        created_at: actors::now_ms(),
    })
}

/// An image's declared size, refused if no decoder should be given it; for other content,
/// the size if it happens to be a readable image (a photo sent as a file).
fn dimensions(sniffed: &Sniffed, head: &[u8]) -> Result<Option<(u32, u32)>, UploadError> {
    if sniffed.kind == MessageKind::Image {
        return check_image_pixels(head).map(Some).map_err(|e| UploadError::InvalidMedia(e.to_string()));
    }
    Ok(image_dimensions(head))
}
