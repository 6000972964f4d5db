//! Pictures for test artifacts: I420 to RGB (BT.601 limited range) and a minimal PNG writer
//! (stored deflate blocks: no compression library needed).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The directory test artifacts go to (`tests/artifacts`, gitignored).
pub fn artifacts_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// RGB bytes of an I420 picture.
pub fn i420_to_rgb(f: &comet_media::I420Frame) -> Vec<u8> {
    let (w, h) = (f.width as usize, f.height as usize);
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let yy = f64::from(f.y[y * f.stride_y + x]) - 16.0;
            let u = f64::from(f.u[(y / 2) * f.stride_u + x / 2]) - 128.0;
            let v = f64::from(f.v[(y / 2) * f.stride_v + x / 2]) - 128.0;
            let c = |x: f64| x.round().clamp(0.0, 255.0) as u8;
            out.push(c(1.164 * yy + 1.596 * v));
            out.push(c(1.164 * yy - 0.392 * u - 0.813 * v));
            out.push(c(1.164 * yy + 2.017 * u));
        }
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG file of `width x height` RGB pixels.
pub fn png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(rgb.len() + height as usize);
    for row in rgb.chunks(width as usize * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    // zlib stream of stored blocks.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Saves an I420 picture as `tests/artifacts/<name>.png`; returns the path.
pub fn save_png(name: &str, f: &comet_media::I420Frame) -> PathBuf {
    let path = artifacts_dir().join(format!("{name}.png"));
    std::fs::write(&path, png(f.width, f.height, &i420_to_rgb(f))).unwrap();
    path
}
