//! Thumbnails: an image decoded under a memory budget and shrunk to a small JPEG.
//!
//! This is CPU work on untrusted bytes: callers run it off the async threads
//! (`spawn_blocking`) and one at a time per node, so its memory is bounded by
//! [`DECODE_BUDGET`] however many uploads arrive together.

use image::{ImageError, ImageReader, Limits};
use std::io::Cursor;

/// The longest edge of a thumbnail, in pixels.
pub const THUMBNAIL_EDGE: u32 = 256;

/// The most memory one decode may allocate: a 12-megapixel photo decodes in 48 MiB.
pub const DECODE_BUDGET: u64 = 64 * 1024 * 1024;

/// A thumbnail: a JPEG and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

/// Why an image has no thumbnail and must be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the image could not be decoded: {0}")]
pub struct Corrupt(pub String);

/// The thumbnail of an image; `Ok(None)` when it is fine but not made here (a format this
/// node does not decode, such as HEIC, or an image over the decode budget), an error when
/// the bytes are not a valid image of the format they claim.
pub fn thumbnail(bytes: &[u8]) -> Result<Option<Thumbnail>, Corrupt> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| Corrupt(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(DECODE_BUDGET);
    reader.limits(limits);
    let image = match reader.decode() {
        Ok(image) => image,
        Err(ImageError::Limits(_) | ImageError::Unsupported(_)) => return Ok(None),
        Err(error) => return Err(Corrupt(error.to_string())),
    };
    // `thumbnail` would also enlarge a small image: keep those as they are.
    let fits = image.width() <= THUMBNAIL_EDGE && image.height() <= THUMBNAIL_EDGE;
    let small = if fits { image.to_rgb8() } else { image.thumbnail(THUMBNAIL_EDGE, THUMBNAIL_EDGE).to_rgb8() };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&small)
        .map_err(|e| Corrupt(e.to_string()))?;
    Ok(Some(Thumbnail { jpeg, width: small.width(), height: small.height() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image =
            image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255]));
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    }

    #[test]
    fn a_thumbnail_keeps_the_aspect_and_fits_the_edge() {
        let thumb = thumbnail(&png(1024, 512)).unwrap().expect("a thumbnail");
        assert_eq!((thumb.width, thumb.height), (256, 128));
        assert!(thumb.jpeg.starts_with(b"\xff\xd8\xff"), "a JPEG");
        let small = thumbnail(&png(40, 30)).unwrap().expect("a thumbnail");
        assert_eq!((small.width, small.height), (40, 30), "small images are not enlarged");
    }

    #[test]
    fn corrupt_images_are_refused_and_unknown_formats_are_let_through() {
        let mut broken = png(64, 64);
        broken.truncate(broken.len() / 2);
        assert!(thumbnail(&broken).is_err(), "half a PNG");
        let mut fake = png(8, 8)[..33].to_vec();
        fake.extend([0x55; 500]);
        assert!(thumbnail(&fake).is_err(), "a PNG header over garbage");
        assert_eq!(thumbnail(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00rest"), Ok(None), "HEIC is not decoded here");
    }

    #[test]
    fn an_image_over_the_decode_budget_gets_no_thumbnail() {
        // 5000 x 5000 RGBA is 95 MiB decoded, over the budget; as a PNG it is small.
        let rgba = image::RgbaImage::new(5000, 5000);
        let mut big = Vec::new();
        rgba.write_to(&mut Cursor::new(&mut big), image::ImageFormat::Png).unwrap();
        assert_eq!(thumbnail(&big), Ok(None));
    }
}
