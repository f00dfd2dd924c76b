//! Media, the part that needs no storage: what an upload is, judged by its first bytes and
//! never by what the client claims, and how large an image says it is before anything
//! decodes it.
//!
//! A node reads the head of an upload (the first [`SNIFF_BYTES`]) and asks [`sniff`] for
//! the message kind and MIME type. For images, [`image_dimensions`] reads the width and
//! height from the header alone, so a "pixel flood" (a small file that declares 60000 x
//! 60000) is refused by [`check_image_pixels`] before a decoder allocates for it.

pub mod thumbnail;

use schema::frames::MessageKind;

/// How many leading bytes [`sniff`] and [`image_dimensions`] need at most (JPEG's size
/// marker can sit after large metadata segments; 64 KiB covers ordinary cameras' EXIF).
pub const SNIFF_BYTES: usize = 64 * 1024;

/// The most pixels an image may declare (about 8K x 6K): enough for any phone photo, and
/// a decoded RGBA image of that size is 200 MiB at most.
pub const MAX_IMAGE_PIXELS: u64 = 50_000_000;

/// What an upload's content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    /// The message kind it can be sent as: `image`, `audio`, `video`, or `file` for anything
    /// else.
    pub kind: MessageKind,
    /// Its MIME type, as downloads declare it.
    pub mime: &'static str,
}

const fn sniffed(kind: MessageKind, mime: &'static str) -> Sniffed {
    Sniffed { kind, mime }
}

/// The kind and MIME type of content starting with `head`. Content nobody recognises is a
/// `file` of `application/octet-stream`.
pub fn sniff(head: &[u8]) -> Sniffed {
    use MessageKind::{Audio, File, Image, Video};
    let starts = |magic: &[u8]| head.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        return sniffed(Image, "image/png");
    }
    if starts(b"\xff\xd8\xff") {
        return sniffed(Image, "image/jpeg");
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return sniffed(Image, "image/gif");
    }
    if starts(b"RIFF") && at(8, b"WEBP") {
        return sniffed(Image, "image/webp");
    }
    if starts(b"RIFF") && at(8, b"WAVE") {
        return sniffed(Audio, "audio/wav");
    }
    if starts(b"BM") && head.len() >= 26 && at(14, &[40, 0, 0, 0]) {
        return sniffed(Image, "image/bmp");
    }
    if at(4, b"ftyp") {
        let brand = head.get(8..12).unwrap_or_default();
        return match brand {
            b"heic" | b"heix" | b"mif1" | b"msf1" => sniffed(Image, "image/heic"),
            b"avif" | b"avis" => sniffed(Image, "image/avif"),
            b"M4A " | b"M4B " => sniffed(Audio, "audio/mp4"),
            b"qt  " => sniffed(Video, "video/quicktime"),
            b"3gp4" | b"3gp5" | b"3gp6" | b"3g2a" => sniffed(Video, "video/3gpp"),
            _ => sniffed(Video, "video/mp4"),
        };
    }
    if starts(b"\x1a\x45\xdf\xa3") {
        return if head.windows(4).take(64).any(|w| w == b"webm") {
            sniffed(Video, "video/webm")
        } else {
            sniffed(Video, "video/x-matroska")
        };
    }
    if starts(b"OggS") {
        return sniffed(Audio, "audio/ogg");
    }
    if starts(b"fLaC") {
        return sniffed(Audio, "audio/flac");
    }
    if starts(b"#!AMR") {
        return sniffed(Audio, "audio/amr");
    }
    if starts(b"ID3") {
        return sniffed(Audio, "audio/mpeg");
    }
    if let [0xff, second, ..] = head {
        // An MPEG audio frame (MP3) or an ADTS frame (AAC): 11 sync bits.
        if second & 0xe0 == 0xe0 {
            let layer = (second >> 1) & 0b11;
            return if layer == 0 { sniffed(Audio, "audio/aac") } else { sniffed(Audio, "audio/mpeg") };
        }
    }
    if starts(b"%PDF-") {
        return sniffed(File, "application/pdf");
    }
    if starts(b"PK\x03\x04") {
        return sniffed(File, "application/zip");
    }
    sniffed(File, "application/octet-stream")
}

/// Whether content sniffed as `sniffed` may be sent as `claimed`: media kinds must match
/// what the bytes are; anything may be sent as a `file`.
pub fn kind_matches(claimed: MessageKind, sniffed: &Sniffed) -> bool {
    claimed == MessageKind::File || claimed == sniffed.kind
}

/// The width and height an image's header declares, if its format is one this reads (PNG,
/// GIF, JPEG, WebP, BMP) and the header is within `head`.
pub fn image_dimensions(head: &[u8]) -> Option<(u32, u32)> {
    let be32 = |at: usize| head.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let le16 = |at: usize| head.get(at..at + 2).map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])));
    let be16 = |at: usize| head.get(at..at + 2).map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])));
    let le32 = |at: usize| head.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let le24 = |at: usize| head.get(at..at + 3).map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]));
    match sniff(head).mime {
        // The IHDR chunk comes first: width and height at 16 and 20.
        "image/png" if head.get(12..16) == Some(b"IHDR") => Some((be32(16)?, be32(20)?)),
        "image/gif" => Some((le16(6)?, le16(8)?)),
        "image/bmp" => {
            // Height is signed (negative: rows stored top-down).
            let height = le32(22)? as i32;
            Some((le32(18)?, height.unsigned_abs()))
        }
        "image/webp" => match head.get(12..16)? {
            b"VP8 " => Some((le16(26)? & 0x3fff, le16(28)? & 0x3fff)),
            b"VP8L" => {
                let bits = le32(21)?;
                Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
            }
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            _ => None,
        },
        "image/jpeg" => {
            // Walk the marker segments to the first start-of-frame.
            let mut at = 2;
            loop {
                if *head.get(at)? != 0xff {
                    return None;
                }
                let marker = *head.get(at + 1)?;
                match marker {
                    // Padding, and markers without a length.
                    0xff => at += 1,
                    0xd0..=0xd9 | 0x01 => at += 2,
                    // SOF0-SOF15 except DHT (c4), JPG (c8) and DAC (cc).
                    0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                        return Some((be16(at + 7)?, be16(at + 5)?));
                    }
                    _ => at += 2 + be16(at + 2)? as usize,
                }
            }
        }
        _ => None,
    }
}

/// Why an image is refused before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The header could not be read (truncated, or a format this does not read).
    #[error("the image's size could not be read from its header")]
    Unreadable,
    /// It declares no pixels.
    #[error("the image declares no pixels")]
    Empty,
    /// It declares more pixels than [`MAX_IMAGE_PIXELS`].
    #[error("the image declares {width} x {height} pixels; at most {MAX_IMAGE_PIXELS} are accepted")]
    TooManyPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
}

/// The image's declared size, if it is one a decoder may safely be given.
pub fn check_image_pixels(head: &[u8]) -> Result<(u32, u32), ImageError> {
    let (width, height) = image_dimensions(head).ok_or(ImageError::Unreadable)?;
    if width == 0 || height == 0 {
        return Err(ImageError::Empty);
    }
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(ImageError::TooManyPixels { width, height });
    }
    Ok((width, height))
}

/// Signs a download URL for `media` (its `variant`: "" for the media, "thumbnail") valid
/// until `expires_at` (ms): HMAC-SHA256 over all three, lowercase hex. Browsers fetch
/// `<img>` and `<video>` sources without auth headers, so the URL itself is the proof that
/// its holder was allowed to see the media when it was made.
pub fn sign_url(secret: &[u8], media: schema::MediaId, variant: &str, expires_at: u64) -> String {
    let message = format!("troupe media {} {variant} {expires_at}", media.0);
    hmac_sha256(secret, message.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `signature` is [`sign_url`]'s for these values (compared in constant time).
pub fn url_signature_holds(
    secret: &[u8],
    media: schema::MediaId,
    variant: &str,
    expires_at: u64,
    signature: &str,
) -> bool {
    let expected = sign_url(secret, media, variant, expires_at);
    expected.len() == signature.len()
        && expected.bytes().zip(signature.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// HMAC (RFC 2104) over SHA-256.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|k| k ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        bytes.extend(width.to_be_bytes());
        bytes.extend(height.to_be_bytes());
        bytes.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
        bytes
    }

    /// A JPEG head with an APP1 (EXIF) segment of `exif` bytes before its frame header.
    fn jpeg(width: u16, height: u16, exif: usize) -> Vec<u8> {
        let mut bytes = vec![0xff, 0xd8, 0xff, 0xe1];
        bytes.extend(((exif + 2) as u16).to_be_bytes());
        bytes.extend(std::iter::repeat_n(0u8, exif));
        bytes.extend([0xff, 0xdb, 0x00, 0x04, 0, 0]); // a short DQT
        bytes.extend([0xff, 0xc2, 0x00, 0x11, 8]);
        bytes.extend(height.to_be_bytes());
        bytes.extend(width.to_be_bytes());
        bytes.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        bytes
    }

    #[test]
    fn the_content_decides_the_kind() {
        let cases: &[(&[u8], MessageKind, &str)] = &[
            (b"\x89PNG\r\n\x1a\n....", MessageKind::Image, "image/png"),
            (b"\xff\xd8\xff\xe0..JFIF", MessageKind::Image, "image/jpeg"),
            (b"GIF89a....", MessageKind::Image, "image/gif"),
            (b"RIFF\x24\x00\x00\x00WEBPVP8 ", MessageKind::Image, "image/webp"),
            (b"RIFF\x24\x00\x00\x00WAVEfmt ", MessageKind::Audio, "audio/wav"),
            (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", MessageKind::Video, "video/mp4"),
            (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", MessageKind::Video, "video/quicktime"),
            (b"\x00\x00\x00\x1cftypM4A \x00\x00\x00\x00", MessageKind::Audio, "audio/mp4"),
            (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", MessageKind::Image, "image/heic"),
            (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", MessageKind::Video, "video/webm"),
            (b"OggS\x00\x02", MessageKind::Audio, "audio/ogg"),
            (b"ID3\x04\x00", MessageKind::Audio, "audio/mpeg"),
            (b"\xff\xfb\x90\x64", MessageKind::Audio, "audio/mpeg"),
            (b"\xff\xf1\x50\x80", MessageKind::Audio, "audio/aac"),
            (b"fLaC\x00", MessageKind::Audio, "audio/flac"),
            (b"#!AMR\n", MessageKind::Audio, "audio/amr"),
            (b"%PDF-1.7", MessageKind::File, "application/pdf"),
            (b"PK\x03\x04", MessageKind::File, "application/zip"),
            (b"hello, world", MessageKind::File, "application/octet-stream"),
            (b"", MessageKind::File, "application/octet-stream"),
        ];
        for (head, kind, mime) in cases {
            assert_eq!(sniff(head), Sniffed { kind: *kind, mime }, "{head:?}");
        }
    }

    #[test]
    fn a_claim_must_match_the_bytes_unless_it_is_a_file() {
        let png = sniff(&png(10, 10));
        assert!(kind_matches(MessageKind::Image, &png));
        assert!(kind_matches(MessageKind::File, &png), "any bytes may travel as a file");
        assert!(!kind_matches(MessageKind::Video, &png));
        assert!(!kind_matches(MessageKind::Image, &sniff(b"%PDF-1.4")));
    }

    #[test]
    fn image_headers_give_their_size() {
        assert_eq!(image_dimensions(&png(640, 480)), Some((640, 480)));
        assert_eq!(image_dimensions(b"GIF89a\x80\x02\xe0\x01"), Some((640, 480)));
        assert_eq!(image_dimensions(&jpeg(4032, 3024, 20_000)), Some((4032, 3024)), "past a large EXIF segment");
        let mut vp8x = b"RIFF\x00\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x10\x00\x00\x00".to_vec();
        vp8x.extend([0x7f, 0x02, 0x00, 0xdf, 0x01, 0x00]); // 640 - 1, 480 - 1
        assert_eq!(image_dimensions(&vp8x), Some((640, 480)));
        let mut bmp = b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00".to_vec();
        bmp.extend(640u32.to_le_bytes());
        bmp.extend((-480i32).to_le_bytes());
        assert_eq!(image_dimensions(&bmp), Some((640, 480)), "a top-down BMP");
        assert_eq!(image_dimensions(&png(640, 480)[..20]), None, "truncated");
        assert_eq!(image_dimensions(b"%PDF-1.4"), None);
    }

    #[test]
    fn a_pixel_flood_is_refused_before_decoding() {
        assert_eq!(
            check_image_pixels(&png(60_000, 60_000)),
            Err(ImageError::TooManyPixels { width: 60_000, height: 60_000 })
        );
        assert_eq!(check_image_pixels(&jpeg(65_000, 65_000, 10)).map_err(|_| ()), Err(()));
        assert_eq!(check_image_pixels(&png(0, 10)), Err(ImageError::Empty));
        assert_eq!(check_image_pixels(b"\x89PNG\r\n\x1a\n"), Err(ImageError::Unreadable));
        assert_eq!(check_image_pixels(&png(8000, 6000)), Ok((8000, 6000)));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_url_signature_binds_media_expiry_and_secret() {
        let (media, at) = (schema::MediaId(42), 1_000);
        let sig = sign_url(b"secret", media, "", at);
        assert!(url_signature_holds(b"secret", media, "", at, &sig));
        assert!(!url_signature_holds(b"secret", schema::MediaId(43), "", at, &sig));
        assert!(!url_signature_holds(b"secret", media, "thumbnail", at, &sig), "the variant is signed");
        assert!(!url_signature_holds(b"secret", media, "", at + 1, &sig));
        assert!(!url_signature_holds(b"other", media, "", at, &sig));
        assert!(!url_signature_holds(b"secret", media, "", at, &sig[..10]));
        assert!(!url_signature_holds(b"secret", media, "", at, ""));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = sniff(&bytes);
            let _ = image_dimensions(&bytes);
            let _ = check_image_pixels(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_magic_never_panic(
            magic in proptest::sample::select(vec![
                &b"\xff\xd8\xff"[..], &b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"[..], &b"RIFF\x00\x00\x00\x00WEBPVP8X"[..],
                &b"RIFF\x00\x00\x00\x00WEBPVP8L"[..], &b"GIF89a"[..], &b"BM"[..],
            ]),
            rest in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let head = [magic, &rest[..]].concat();
            let _ = image_dimensions(&head);
            let _ = check_image_pixels(&head);
        }
    }
}
