//! Media uploads over real HTTP: kind and MIME from the bytes, limits, the quota, the pixel
//! flood, and uploads that end early; nothing partial is ever left in storage.

mod common;

use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// A PNG header declaring `width` x `height`, then `extra` bytes.
fn png(width: u32, height: u32, extra: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    bytes.extend(width.to_be_bytes());
    bytes.extend(height.to_be_bytes());
    bytes.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend((0..extra).map(|i| (i * 7 % 251) as u8));
    bytes
}

/// A real PNG of `width` x `height` noisy pixels (noise does not compress: about 4 bytes a
/// pixel).
fn noise_png(width: u32, height: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let image = image::RgbaImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        image::Rgba(state.to_le_bytes())
    });
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
    bytes
}

/// Every media object in the node's media folder (thumbnails and partial ones aside).
fn objects(data: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".partial") {
                continue;
            }
            if path.is_dir() {
                walk(&path, out)
            } else if !path.to_string_lossy().contains("/thumbnails/") {
                out.push(path)
            }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("media"), &mut out);
    out
}

fn partial_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("media").join(".partial")).map_or(0, |d| d.count())
}

fn code_of(answer: &Option<(u16, Value)>) -> (u16, &str) {
    let (status, body) = answer.as_ref().expect("an answer");
    (*status, body["code"].as_str().unwrap_or("(none)"))
}

#[tokio::test]
async fn uploads_are_judged_by_their_bytes_and_stored_whole() {
    let node = TestNode::start().await;
    let (_, _, token) = node.user_with_token("up").await;
    let image = noise_png(320, 240);
    let (status, view) = upload(node.http, Some(&token), "image", UploadBody::Whole(image.clone())).await.unwrap();
    assert_eq!(status, 201, "{view}");
    assert_eq!((view["kind"].as_str(), view["mime"].as_str()), (Some("image"), Some("image/png")));
    assert_eq!((view["width"].as_u64(), view["height"].as_u64()), (Some(320), Some(240)));
    assert_eq!(view["thumbnail"], serde_json::json!({ "width": 256, "height": 192 }), "decoded and shrunk");
    assert_eq!(view["size"], image.len());
    let sha: String = Sha256::digest(&image).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(view["sha256"], sha);
    let stored = objects(&node.data);
    assert_eq!(stored.len(), 1);
    assert_eq!(std::fs::read(&stored[0]).unwrap(), image, "stored byte for byte");
    assert!(stored[0].ends_with(view["media"].as_u64().unwrap().to_string()));

    // A PDF travels as a file; a photo may too, and keeps its size.
    let pdf = b"%PDF-1.7\n%...".repeat(1000);
    let (status, view) = upload(node.http, Some(&token), "file", UploadBody::Whole(pdf)).await.unwrap();
    assert_eq!((status, view["mime"].as_str(), view["kind"].as_str()), (201, Some("application/pdf"), Some("file")));
    let (status, view) = upload(node.http, Some(&token), "file", UploadBody::Whole(png(10, 20, 10))).await.unwrap();
    assert_eq!((status, view["kind"].as_str(), view["width"].as_u64()), (201, Some("file"), Some(10)));
    assert!(view["thumbnail"].is_null(), "files are not decoded");
    // Streamed without a length, in pieces.
    let video = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41".to_vec();
    let body = UploadBody::Chunked { head: video, total: 3_000_000, chunk: 64 * 1024 };
    let (status, view) = upload(node.http, Some(&token), "video", body).await.unwrap();
    assert_eq!((status, view["mime"].as_str(), view["size"].as_u64()), (201, Some("video/mp4"), Some(3_000_000)));
    assert_eq!(objects(&node.data).len(), 4);
}

#[tokio::test]
async fn refused_uploads_leave_nothing_behind() {
    // A quota as small as the limit: a reservation not given back shows in the last upload.
    let node = TestNode::start_with_env(&[
        ("TROUPE_MEDIA__MAX_IMAGE_BYTES", "100000"),
        ("TROUPE_MEDIA__QUOTA_BYTES", "100000"),
    ])
    .await;
    let (_, _, token) = node.user_with_token("up").await;
    let whole = |bytes: Vec<u8>| UploadBody::Whole(bytes);

    let answer = upload(node.http, Some(&token), "video", whole(png(10, 10, 100))).await;
    assert_eq!(code_of(&answer), (415, "kind_mismatch"), "a PNG is not a video");
    let answer = upload(node.http, Some(&token), "image", whole(b"%PDF-1.4 not a picture".to_vec())).await;
    assert_eq!(code_of(&answer), (415, "kind_mismatch"));
    let answer = upload(node.http, Some(&token), "image", whole(png(10, 10, 200_000))).await;
    assert_eq!(code_of(&answer), (413, "media_too_large"), "refused by its declared length");
    let chunked = UploadBody::Chunked { head: png(10, 10, 100), total: 500_000, chunk: 16 * 1024 };
    let answer = upload(node.http, Some(&token), "image", chunked).await;
    assert_eq!(code_of(&answer), (413, "media_too_large"), "refused mid-stream");
    let answer = upload(node.http, Some(&token), "image", whole(png(60_000, 60_000, 1000))).await;
    assert_eq!(code_of(&answer), (422, "invalid_media"), "a pixel flood is refused before decoding");
    let answer = upload(node.http, Some(&token), "image", whole(png(10, 10, 0)[..20].to_vec())).await;
    assert_eq!(code_of(&answer), (422, "invalid_media"), "a truncated header");
    let answer = upload(node.http, Some(&token), "image", whole(Vec::new())).await;
    assert_eq!(code_of(&answer), (422, "invalid_media"), "nothing at all");
    let answer = upload(node.http, Some(&token), "image", whole(png(64, 64, 5_000))).await;
    assert_eq!(code_of(&answer), (422, "invalid_media"), "a PNG header over garbage does not decode");
    let answer = upload(node.http, None, "image", whole(png(10, 10, 10))).await;
    assert_eq!(code_of(&answer), (401, "unauthenticated"));
    let answer = upload(node.http, Some(&"0".repeat(64)), "image", whole(png(10, 10, 10))).await;
    assert_eq!(code_of(&answer), (401, "invalid_token"));
    let answer = upload(node.http, Some(&token), "sticker", whole(png(10, 10, 10))).await;
    assert_eq!(code_of(&answer), (400, "invalid_field"));

    // The client goes away halfway through, after the node has started writing (past the
    // 64 KiB it reads to judge the content).
    let gone = UploadBody::Truncated { declared: 95_000, body: png(10, 10, 80_000) };
    assert!(upload(node.http, Some(&token), "image", gone).await.is_none());
    let deadline = tokio::time::Instant::now() + WAIT;
    while partial_files(&node.data) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "a partial object stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(objects(&node.data), Vec::<std::path::PathBuf>::new(), "nothing refused was stored");
    // And every reservation was given back: a full-size upload still fits the quota. The
    // node gives back the abandoned upload's bytes once it has read to the cut, which may be
    // after the test looked (the partial object may not even exist yet): try until it fits,
    // since a refused upload reserves nothing.
    let fits = noise_png(150, 150);
    assert!(fits.len() < 100_000);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = upload(node.http, Some(&token), "image", whole(fits.clone())).await;
        if answer.as_ref().map(|(status, _)| *status) == Some(201) {
            break;
        }
        assert_eq!(code_of(&answer), (413, "quota_exceeded"), "only a reservation not yet given back");
        assert!(tokio::time::Instant::now() < deadline, "the abandoned upload's reservation was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(partial_files(&node.data), 0);
}

#[tokio::test]
async fn the_quota_holds() {
    let node = TestNode::start_with_env(&[("TROUPE_MEDIA__QUOTA_BYTES", "500000")]).await;
    let (_, _, token) = node.user_with_token("up").await;
    let (status, _) = upload(node.http, Some(&token), "file", UploadBody::Whole(png(8, 8, 300_000))).await.unwrap();
    assert_eq!(status, 201);
    let answer = upload(node.http, Some(&token), "file", UploadBody::Whole(png(8, 8, 300_000))).await;
    assert_eq!(code_of(&answer), (413, "quota_exceeded"));
    // Without a length, the upload may use what is left, and no more.
    let fits = UploadBody::Chunked { head: png(8, 8, 100), total: 150_000, chunk: 16 * 1024 };
    assert_eq!(upload(node.http, Some(&token), "file", fits).await.unwrap().0, 201);
    let over = UploadBody::Chunked { head: png(8, 8, 100), total: 100_000, chunk: 16 * 1024 };
    assert_eq!(code_of(&upload(node.http, Some(&token), "file", over).await), (413, "quota_exceeded"));
    let (_, _, other) = node.user_with_token("other").await;
    let (status, _) = upload(node.http, Some(&other), "file", UploadBody::Whole(png(8, 8, 300_000))).await.unwrap();
    assert_eq!(status, 201, "the quota is per user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_upload_streams_through_bounded_memory() {
    let node = TestNode::start().await;
    let (_, _, token) = node.user_with_token("big").await;
    let rss = |stats: Value| stats["process"]["rss_bytes"].as_u64().expect("rss");
    let before = rss(node.console("stats").await);
    let console = node.console;
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(stats) = troupe::console::client::ask(console, "stats").await
                    && let Some(now) = stats["process"]["rss_bytes"].as_u64()
                {
                    peak.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let video = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41".to_vec();
    let total = 200 * 1024 * 1024;
    let body = UploadBody::Chunked { head: video, total, chunk: 256 * 1024 };
    let (status, view) = upload(node.http, Some(&token), "video", body).await.expect("an answer");
    sampling.abort();
    assert_eq!((status, view["size"].as_u64()), (201, Some(total as u64)), "{view}");
    let growth = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before);
    eprintln!("node RSS grew by {} MiB during a 200 MiB upload", growth / (1024 * 1024));
    assert!(growth < 64 * 1024 * 1024, "RSS grew by {growth} bytes");
}

#[tokio::test]
async fn media_messages_reach_members_who_download_through_signed_urls() {
    let node = TestNode::start().await;
    let (ann, _, ann_token) = node.user_with_token("ann").await;
    let (bob, _) = node.user("bob").await;
    let (cat, _) = node.user("cat").await;
    let group = create_group(&ann, "photos", true).await;
    bob.request("join", serde_json::json!({ "group": group })).await.unwrap();

    let image = noise_png(320, 240);
    let (_, uploaded) = upload(node.http, Some(&ann_token), "image", UploadBody::Whole(image.clone())).await.unwrap();
    let media = uploaded["media"].as_u64().unwrap();
    let send = |kind: &str, media: u64, id: &str| serde_json::json!({ "group": group, "client_msg_id": id, "type": kind, "body": { "media": media } });
    assert_eq!(code(bob.request("send", send("image", media, "b1")).await), "not_found", "only its uploader sends it");
    assert_eq!(code(ann.request("send", send("video", media, "a0")).await), "invalid_field", "an image is not a video");
    assert_eq!(code(ann.request("send", send("image", 424242, "a0")).await), "not_found");
    // Before it is sent anywhere, only its uploader may fetch it.
    assert_eq!(code(bob.request("media_url", serde_json::json!({ "media": media })).await), "not_found");
    ann.request("send", send("image", media, "a1")).await.expect("send");

    let message = bob.next_event_named("message", WAIT).await.expect("bob gets the image");
    assert_eq!(message["type"], "image");
    assert_eq!(message["body"]["media"], media);
    assert_eq!((message["body"]["width"].as_u64(), message["body"]["mime"].as_str()), (Some(320), Some("image/png")));

    let signed = bob.request("media_url", serde_json::json!({ "media": media })).await.expect("a member may fetch it");
    let url = signed["url"].as_str().unwrap().to_owned();
    let (status, headers, body) = http_get(node.http, &url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, image, "the bytes as uploaded");
    assert_eq!(header(&headers, "content-type"), Some("image/png"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    let (status, headers, body) = http_get(node.http, &url, &[("Range", "bytes=100-199")]).await;
    assert_eq!((status, body.as_slice()), (206, &image[100..200]));
    assert_eq!(header(&headers, "content-range"), Some(format!("bytes 100-199/{}", image.len()).as_str()));
    let (status, _, body) = http_get(node.http, &url, &[("Range", "bytes=-10")]).await;
    assert_eq!((status, body.as_slice()), (206, &image[image.len() - 10..]));
    let (status, _, _) = http_get(node.http, &url, &[("Range", "bytes=999999-")]).await;
    assert_eq!(status, 416);
    let thumb = bob.request("media_url", serde_json::json!({ "media": media, "thumbnail": true })).await.unwrap();
    let (status, headers, body) = http_get(node.http, thumb["url"].as_str().unwrap(), &[]).await;
    assert_eq!((status, header(&headers, "content-type")), (200, Some("image/jpeg")));
    let decoded = image::load_from_memory(&body).expect("a JPEG");
    assert_eq!((decoded.width(), decoded.height()), (256, 192));
    let swapped = thumb["url"].as_str().unwrap().replace("/thumbnail", "");
    assert_eq!(http_get(node.http, &swapped, &[]).await.0, 403, "a thumbnail's URL does not open the original");

    // Outsiders learn nothing; a URL is only good as signed.
    assert_eq!(code(cat.request("media_url", serde_json::json!({ "media": media })).await), "not_found");
    let tampered = url.replace(&format!("/media/{media}"), &format!("/media/{}", media + 1));
    assert_eq!(http_get(node.http, &tampered, &[]).await.0, 403);
    let later = url.replacen("exp=", "exp=9", 1);
    assert_eq!(http_get(node.http, &later, &[]).await.0, 403, "a stretched expiry breaks the signature");
    assert_eq!(http_get(node.http, &format!("/media/{media}"), &[]).await.0, 403, "no signature");
}

#[tokio::test]
async fn a_media_url_expires() {
    let node = TestNode::start_with_env(&[("TROUPE_ACTORS__MEDIA_URL_TTL", "0.5")]).await;
    let (ann, _, token) = node.user_with_token("ann").await;
    let (_, uploaded) =
        upload(node.http, Some(&token), "file", UploadBody::Whole(b"%PDF-1.4 x".to_vec())).await.unwrap();
    let signed = ann.request("media_url", serde_json::json!({ "media": uploaded["media"] })).await.unwrap();
    let url = signed["url"].as_str().unwrap();
    let (status, headers, _) = http_get(node.http, url, &[]).await;
    assert_eq!(
        (status, header(&headers, "content-disposition")),
        (200, Some("attachment")),
        "files are saved, not shown"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, _, body) = http_get(node.http, url, &[]).await;
    assert_eq!(status, 403);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["code"], "expired");
}

/// The same paths against a real S3-compatible server (what a cluster uses): whole and
/// streamed uploads (the large one goes up in multipart chunks), downloads with Range, and
/// refused uploads that leave no object in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_live_in_an_s3_bucket() {
    let s3 = common::s3::TestS3::start().await;
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = TestNode::start_with_env(&env).await;
    let (ann, _, token) = node.user_with_token("ann").await;

    let image = noise_png(250, 200);
    let (status, view) = upload(node.http, Some(&token), "image", UploadBody::Whole(image.clone())).await.unwrap();
    assert_eq!(status, 201, "{view}");
    let media = view["media"].as_u64().unwrap();
    let video = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2mp41".to_vec();
    let streamed = UploadBody::Chunked { head: video, total: 20 * 1024 * 1024, chunk: 256 * 1024 };
    let (status, big) = upload(node.http, Some(&token), "video", streamed).await.unwrap();
    assert_eq!((status, big["size"].as_u64()), (201, Some(20 * 1024 * 1024)), "{big}");

    let objects = s3.objects();
    assert_eq!(objects.len(), 3, "two media and a thumbnail: {objects:?}");
    let stored = objects.iter().find(|p| p.ends_with(media.to_string())).expect("the image's object");
    assert_eq!(std::fs::read(stored).unwrap(), image);

    let signed = ann.request("media_url", serde_json::json!({ "media": media })).await.unwrap();
    let url = signed["url"].as_str().unwrap();
    let (status, _, body) = http_get(node.http, url, &[]).await;
    assert_eq!((status, body.len()), (200, image.len()));
    assert_eq!(body, image);
    let (status, _, body) = http_get(node.http, url, &[("Range", "bytes=1000-1999")]).await;
    assert_eq!((status, body.as_slice()), (206, &image[1000..2000]));

    let refused = upload(node.http, Some(&token), "video", UploadBody::Whole(png(8, 8, 1000))).await;
    assert_eq!(code_of(&refused), (415, "kind_mismatch"));
    let node_limit = 20 * 1024 * 1024 + 1;
    let too_big = UploadBody::Chunked { head: png(8, 8, 100), total: node_limit as usize, chunk: 1024 * 1024 };
    assert_eq!(code_of(&upload(node.http, Some(&token), "image", too_big).await), (413, "media_too_large"));
    let corrupt = upload(node.http, Some(&token), "image", UploadBody::Whole(png(64, 64, 5000))).await;
    assert_eq!(code_of(&corrupt), (422, "invalid_media"));
    assert_eq!(s3.objects().len(), 3, "nothing refused reached the bucket");
}

#[tokio::test]
async fn media_never_sent_are_deleted_and_free_their_quota() {
    let node = TestNode::start_with_env(&[
        ("TROUPE_MEDIA__UNSENT_TTL", "1"),
        ("TROUPE_MEDIA__UNSENT_SWEEP_INTERVAL", "0.1"),
        ("TROUPE_MEDIA__QUOTA_BYTES", "250000"),
    ])
    .await;
    let (ann, _, token) = node.user_with_token("ann").await;
    let group = create_group(&ann, "album", false).await;
    let image = noise_png(200, 150);
    let (_, kept) = upload(node.http, Some(&token), "image", UploadBody::Whole(image.clone())).await.unwrap();
    let draft = [b"%PDF-1.4 draft".as_slice(), &[b' '; 100_000]].concat();
    let (_, dropped) = upload(node.http, Some(&token), "file", UploadBody::Whole(draft)).await.unwrap();
    let body = serde_json::json!({ "media": kept["media"] });
    ann.request("send", serde_json::json!({ "group": group, "client_msg_id": "m1", "type": "image", "body": body }))
        .await
        .expect("send");
    assert_eq!(objects(&node.data).len(), 2);
    let too_much = UploadBody::Whole(vec![b'x'; 200_000]);
    assert_eq!(code_of(&upload(node.http, Some(&token), "file", too_much).await), (413, "quota_exceeded"));

    let deadline = tokio::time::Instant::now() + WAIT;
    while objects(&node.data).len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "the unsent media was never deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A sweep deletes the objects, then the record, and gives the bytes back last: once an
    // upload that needs them fits, the rest is done too. One that does not fit changes nothing.
    let fits = vec![b'x'; 200_000 - image.len() - 1000];
    loop {
        let answer = upload(node.http, Some(&token), "file", UploadBody::Whole(fits.clone())).await;
        if answer.as_ref().is_some_and(|(status, _)| *status == 201) {
            break;
        }
        assert_eq!(code_of(&answer), (413, "quota_exceeded"));
        assert!(tokio::time::Instant::now() < deadline, "the deleted bytes were never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = ann.request("media_url", serde_json::json!({ "media": dropped["media"] })).await;
    assert_eq!(code(gone), "not_found");
    let signed =
        ann.request("media_url", serde_json::json!({ "media": kept["media"] })).await.expect("the sent one stays");
    assert_eq!(http_get(node.http, signed["url"].as_str().unwrap(), &[]).await.2, image);
}

/// A raw HTTP/1.1 request with a body to an absolute `http://host:port/path` URL; the
/// status.
async fn put(url: &str, headers: &Value, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect to the bucket");
    let mut head = format!("PUT {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers.as_object().into_iter().flatten() {
        if !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{name}: {}\r\n", value.as_str().unwrap_or("")));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// An authenticated `POST` without a body to the node.
async fn post(http: std::net::SocketAddr, token: &str, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: troupe\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Clients upload straight to the bucket with a presigned URL; the node then checks the
/// object as it checks its own uploads before a media id exists, and removes what fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_uploads_are_checked_before_they_count() {
    let s3 = common::s3::TestS3::start().await;
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = TestNode::start_with_env(&env).await;
    let (ann, _, token) = node.user_with_token("ann").await;
    let (_, _, bob_token) = node.user_with_token("bob").await;

    let image = noise_png(120, 90);
    let (status, presigned) = post(node.http, &token, &format!("/media/presign?kind=image&size={}", image.len())).await;
    assert_eq!(status, 200, "{presigned}");
    assert_eq!(presigned["method"], "PUT");
    let media = presigned["media"].as_u64().unwrap();
    assert_eq!(put(presigned["url"].as_str().unwrap(), &presigned["headers"], &image).await, 200, "the bucket took it");
    let (status, _) = post(node.http, &bob_token, &format!("/media/{media}/complete?kind=image")).await;
    assert_eq!(status, 404, "only the uploader completes an upload");
    let (status, view) = post(node.http, &token, &format!("/media/{media}/complete?kind=image")).await;
    assert_eq!(status, 201, "{view}");
    assert_eq!((view["media"].as_u64(), view["width"].as_u64()), (Some(media), Some(120)));
    assert!(view["thumbnail"].is_object());
    let signed = ann.request("media_url", serde_json::json!({ "media": media })).await.unwrap();
    assert_eq!(http_get(node.http, signed["url"].as_str().unwrap(), &[]).await.2, image);
    let (status, _) = post(node.http, &token, &format!("/media/{media}/complete?kind=image")).await;
    assert_eq!(status, 404, "completed once");

    // A PDF presented as an image: refused, and gone from the bucket.
    let before = s3.objects().len();
    let pdf = b"%PDF-1.4 not an image".to_vec();
    let (_, presigned) = post(node.http, &token, &format!("/media/presign?kind=image&size={}", pdf.len())).await;
    assert_eq!(put(presigned["url"].as_str().unwrap(), &presigned["headers"], &pdf).await, 200);
    assert_eq!(s3.objects().len(), before + 1, "the pending object");
    let forged = presigned["media"].as_u64().unwrap();
    let (status, answer) = post(node.http, &token, &format!("/media/{forged}/complete?kind=image")).await;
    assert_eq!((status, answer["code"].as_str()), (415, Some("kind_mismatch")));
    assert_eq!(s3.objects().len(), before, "nothing of it stays");
    let (status, answer) = post(node.http, &token, "/media/presign?kind=video&size=999999999999").await;
    assert_eq!((status, answer["code"].as_str()), (413, Some("media_too_large")));
}

#[tokio::test]
async fn a_folder_store_does_not_presign() {
    let node = TestNode::start().await;
    let (_, _, token) = node.user_with_token("ann").await;
    let (status, answer) = post(node.http, &token, "/media/presign?kind=image&size=100").await;
    assert_eq!((status, answer["code"].as_str()), (501, Some("not_supported")));
}
