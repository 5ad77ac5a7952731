//! A screen of its own (Xvfb) for a VNC viewer or a browser to show on, screenshots of an X
//! display (`xwd`, parsed here), and painting a display a solid colour (`xsetroot`): a test
//! paints the builder's screen a colour no program draws by itself, then checks that the
//! viewer's screen shows it.

use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::programs::{Run, RunAsync};
use crate::server::Server;
use crate::vnc_servers::start_x_server;

/// How long the waits of the viewers and the browser last before they fail: long, because a
/// loaded 2-core machine starting Chromium is slow, and a passing test never waits that long.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// How often the waits look again.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// An X display of its own (Xvfb, 24-bit) for a client to show on; stopped on drop.
pub struct Screen {
    display: u32,
    width: u32,
    height: u32,
    _xvfb: Server,
}

impl Screen {
    /// Starts Xvfb on a free display (`-displayfd`, no race) with a `width`×`height` screen.
    /// `-noreset`: without it the server resets when its last client goes, losing what was
    /// drawn (e.g. a [`paint`]).
    pub fn new(width: u32, height: u32) -> Screen {
        let (xvfb, display) = start_x_server(
            "Xvfb",
            Command::new("Xvfb")
                .args(["-screen", "0", &format!("{width}x{height}x24"), "-nolisten", "tcp", "-noreset"])
                .stderr(Stdio::null()),
        );
        Screen { display, width, height, _xvfb: xvfb }
    }

    /// The display number N (`DISPLAY=:N`).
    pub fn display(&self) -> u32 {
        self.display
    }

    /// The screen's width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// The screen's height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// What the screen shows now.
    pub fn screenshot(&self) -> Image {
        screenshot(self.display)
    }

    /// Takes screenshots until one satisfies `check` (60 s at most, since a loaded machine
    /// starting a browser is slow): `Ok` with that one, or `Err` with the last one, whose
    /// `Debug` lists its main colours for the failure message (`.expect("shows the builder")`).
    /// Asynchronous, so that a gateway on the test's runtime keeps serving the client meanwhile.
    pub async fn wait_for(&self, mut check: impl FnMut(&Image) -> bool) -> Result<Image, Image> {
        let start = Instant::now();
        loop {
            let image = screenshot_async(self.display).await;
            if check(&image) {
                return Ok(image);
            }
            if start.elapsed() > PATIENCE {
                return Err(image);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// A screenshot of X display `:N` (`xwd -root`), e.g. of a builder's
/// [`VncServer::display`](crate::VncServer::display).
pub fn screenshot(display: u32) -> Image {
    let out = Command::new("xwd").args(xwd_args(display)).stdin(Stdio::null()).finish();
    from_xwd_output(display, &out)
}

async fn screenshot_async(display: u32) -> Image {
    let out = tokio::process::Command::new("xwd").args(xwd_args(display)).stdin(Stdio::null()).finish().await;
    from_xwd_output(display, &out)
}

fn xwd_args(display: u32) -> [String; 4] {
    ["-root".into(), "-silent".into(), "-display".into(), format!(":{display}")]
}

fn from_xwd_output(display: u32, out: &std::process::Output) -> Image {
    assert!(out.status.success(), "xwd on :{display} failed: {}", String::from_utf8_lossy(&out.stderr));
    Image::from_xwd(&out.stdout).unwrap_or_else(|err| panic!("xwd on :{display}: {err}"))
}

/// Fills X display `:N`'s root window with a solid colour (`xsetroot -solid '#rrggbb'`) and
/// checks that a screenshot shows exactly it (24-bit displays). The display must keep it after
/// `xsetroot` disconnects, which a plain Xvfb without clients does not (it resets and goes
/// black): a [`Screen`], the Xvfb of [`VncServer::x11vnc`](crate::VncServer::x11vnc) (x11vnc
/// stays connected) and [`VncServer::tigervnc`](crate::VncServer::tigervnc) do.
#[track_caller]
pub fn paint(display: u32, rgb: [u8; 3]) {
    let colour = format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
    let out = Command::new("xsetroot").args(["-solid", &colour, "-display", &format!(":{display}")]).finish();
    assert!(out.status.success(), "xsetroot on :{display} failed: {}", String::from_utf8_lossy(&out.stderr));
    let shot = screenshot(display);
    assert!(
        shot.share_of(rgb, 0) > 0.9,
        "painted :{display} {colour} but it shows {shot:?} (did the X server reset when xsetroot left?)"
    );
}

/// A screenshot: `width`×`height` RGB pixels, row by row from the top left.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` pixels, `[red, green, blue]`, row by row.
    pub pixels: Vec<[u8; 3]>,
}

impl Image {
    /// Parses an XWD file (what `xwd` writes): a big-endian header of `header_size` bytes (the
    /// window name ends it), `ncolors` colormap entries of 12 bytes, then the ZPixmap rows of
    /// `bytes_per_line` bytes, each pixel `bits_per_pixel` wide in the header's `byte_order`.
    /// TrueColor and DirectColor pixels are split with the header's masks; other visuals are
    /// looked up in the colormap.
    pub fn from_xwd(bytes: &[u8]) -> Result<Image, String> {
        let field = |i: usize| -> Result<u32, String> {
            let b = bytes.get(4 * i..4 * i + 4).ok_or("short XWD header")?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let [header_size, version, format, _depth, width, height] = [0, 1, 2, 3, 4, 5].map(field);
        let [byte_order, bits_per_pixel, bytes_per_line, visual_class] = [7, 11, 12, 13].map(field);
        let [red_mask, green_mask, blue_mask, ncolors] = [14, 15, 16, 19].map(field);
        let (width, height, bpp, line) = (width?, height?, bits_per_pixel?, bytes_per_line? as usize);
        if version? != 7 || format? != 2 {
            return Err("not an XWD version 7 ZPixmap".into());
        }
        if !matches!(bpp, 8 | 16 | 24 | 32) {
            return Err(format!("{bpp} bits per pixel"));
        }
        let colormap_start = header_size? as usize;
        let data_start = colormap_start + 12 * ncolors? as usize;
        let data = bytes.get(data_start..).ok_or("no pixel data")?;
        if data.len() < line * height as usize || line < (bpp / 8 * width) as usize {
            return Err(format!("{} bytes of pixels for {width}x{height}", data.len()));
        }
        let msb_first = byte_order? == 1;
        let true_colour = matches!(visual_class?, 4 | 5);
        let masks = [red_mask?, green_mask?, blue_mask?];
        let colormap: Vec<(u32, [u8; 3])> = bytes[colormap_start..data_start]
            .chunks_exact(12)
            .map(|e| (u32::from_be_bytes([e[0], e[1], e[2], e[3]]), [e[4], e[6], e[8]])) // high bytes
            .collect();
        let mut pixels = Vec::with_capacity((width * height) as usize);
        for row in data.chunks(line).take(height as usize) {
            for px in row.chunks_exact((bpp / 8) as usize).take(width as usize) {
                let fold = |value: u32, b: &u8| value << 8 | u32::from(*b);
                let value = if msb_first { px.iter().fold(0, fold) } else { px.iter().rev().fold(0, fold) };
                pixels.push(if true_colour {
                    masks.map(|mask| channel(value, mask))
                } else {
                    colormap.iter().find(|(pixel, _)| *pixel == value).map_or([0; 3], |(_, rgb)| *rgb)
                });
            }
        }
        Ok(Image { width, height, pixels })
    }

    /// The pixel at (`x`, `y`), from the top left.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        assert!(x < self.width && y < self.height, "({x}, {y}) is outside {}x{}", self.width, self.height);
        self.pixels[(y * self.width + x) as usize]
    }

    /// The fraction (0 to 1) of pixels within `tolerance` of `rgb` in every channel; a VNC
    /// encoding or a browser's scaling may shift a colour slightly.
    pub fn share_of(&self, rgb: [u8; 3], tolerance: u8) -> f64 {
        let near = |p: &&[u8; 3]| (0..3).all(|c| p[c].abs_diff(rgb[c]) <= tolerance);
        self.pixels.iter().filter(near).count() as f64 / self.pixels.len().max(1) as f64
    }

    /// The most common colours with their shares, most common first.
    pub fn colours(&self) -> Vec<([u8; 3], f64)> {
        let mut counts = std::collections::HashMap::new();
        for p in &self.pixels {
            *counts.entry(*p).or_insert(0usize) += 1;
        }
        let mut colours: Vec<_> = counts.into_iter().collect();
        colours.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let total = self.pixels.len().max(1) as f64;
        colours.into_iter().map(|(rgb, n)| (rgb, n as f64 / total)).collect()
    }

    /// Writes the image as a PNG (uncompressed), for a person to look at after a failure.
    pub fn save_png(&self, path: &Path) -> std::io::Result<()> {
        let mut raw = Vec::with_capacity(self.pixels.len() * 3 + self.height as usize);
        for row in self.pixels.chunks(self.width.max(1) as usize) {
            raw.push(0); // filter: none
            raw.extend(row.iter().flatten());
        }
        // zlib with stored deflate blocks: no compressor needed.
        let mut zlib = vec![0x78, 0x01];
        let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
        for (i, block) in blocks.iter().enumerate() {
            let len = block.len() as u16;
            zlib.push(u8::from(i + 1 == blocks.len()));
            zlib.extend(len.to_le_bytes().into_iter().chain((!len).to_le_bytes()));
            zlib.extend_from_slice(block);
        }
        let (a, b) = raw.iter().fold((1u32, 0u32), |(a, b), &x| {
            let a = (a + u32::from(x)) % 65_521;
            (a, (b + a) % 65_521)
        });
        zlib.extend((b << 16 | a).to_be_bytes());
        let mut header = Vec::from(self.width.to_be_bytes());
        header.extend(self.height.to_be_bytes());
        header.extend([8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
        let mut png = Vec::from(*b"\x89PNG\r\n\x1a\n");
        for (kind, data) in [(b"IHDR", &header), (b"IDAT", &zlib), (b"IEND", &Vec::new())] {
            png.extend((data.len() as u32).to_be_bytes());
            let start = png.len();
            png.extend_from_slice(kind);
            png.extend_from_slice(data);
            let crc = crc32(&png[start..]);
            png.extend(crc.to_be_bytes());
        }
        std::fs::write(path, png)
    }
}

/// Shows the size and the main colours, not a million pixels.
impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{} image of", self.width, self.height)?;
        for ([r, g, b], share) in self.colours().into_iter().take(5) {
            write!(f, " #{r:02x}{g:02x}{b:02x} {:.1}%", share * 100.0)?;
        }
        Ok(())
    }
}

/// The 8-bit value of the channel `mask` selects in `pixel`.
fn channel(pixel: u32, mask: u32) -> u8 {
    if mask == 0 {
        return 0;
    }
    let bits = mask.count_ones();
    let value = u64::from((pixel & mask) >> mask.trailing_zeros());
    (value * 255 / ((1u64 << bits) - 1)) as u8
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { crc >> 1 ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An XWD file as `xwd` writes it for a 24-bit TrueColor screen (32 bits per pixel).
    fn xwd(width: u32, height: u32, msb_first: bool, pixels: &[u32], ncolors: u32) -> Vec<u8> {
        let name = b"xwdump\0";
        let header_size = 100 + name.len() as u32;
        let fields = [
            header_size,
            7,
            2,
            24,
            width,
            height,
            0,
            u32::from(msb_first),
            32,
            0,
            32,
            32,
            width * 4,
            4,
            0xff0000,
            0x00ff00,
            0x0000ff,
            8,
            256,
            ncolors,
            width,
            height,
            0,
            0,
            0,
        ];
        let mut out: Vec<u8> = fields.iter().flat_map(|f| f.to_be_bytes()).collect();
        out.extend_from_slice(name);
        out.extend(std::iter::repeat_n(0, 12 * ncolors as usize));
        for p in pixels {
            out.extend(if msb_first { p.to_be_bytes() } else { p.to_le_bytes() });
        }
        out
    }

    #[test]
    fn xwd_pixels_are_split_with_the_masks_in_either_byte_order() {
        for msb_first in [false, true] {
            let image = Image::from_xwd(&xwd(2, 1, msb_first, &[0x00ff8000, 0x00123456], 3)).unwrap();
            assert_eq!((image.width, image.height), (2, 1));
            assert_eq!(image.pixels, vec![[0xff, 0x80, 0x00], [0x12, 0x34, 0x56]]);
            assert_eq!(image.share_of([0xff, 0x80, 0x00], 0), 0.5);
            assert_eq!(image.share_of([0x10, 0x30, 0x50], 6), 0.5);
            assert_eq!(image.share_of([0x10, 0x30, 0x50], 5), 0.0);
        }
        assert!(Image::from_xwd(&xwd(2, 2, false, &[0], 0)).is_err(), "too few pixels");
        assert!(Image::from_xwd(b"short").is_err());
    }

    #[test]
    fn the_png_has_a_valid_header_and_checksums() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        let image = Image { width: 2, height: 1, pixels: vec![[1, 2, 3], [4, 5, 6]] };
        let dir = tempfile::tempdir().unwrap();
        image.save_png(&dir.path().join("a.png")).unwrap();
        let png = std::fs::read(dir.path().join("a.png")).unwrap();
        assert_eq!(crate::png_size(&png), Some((2, 1)));
        assert!(png.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
        assert_eq!(format!("{image:?}"), "2x1 image of #010203 50.0% #040506 50.0%");
    }
}
