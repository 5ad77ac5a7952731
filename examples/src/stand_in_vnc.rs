//! A stand-in builder's VNC server for the quickstart: RFB 3.8 with VNC Authentication and a
//! static gradient framebuffer, so the quickstart offers VNC with no X server. Plus the small
//! client the quickstart's self-test uses. Demo code for loopback, not a hardened server.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use rand_core::Rng;
use remote_access_core::Secret;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The framebuffer's size.
pub const WIDTH: u16 = 320;
/// The framebuffer's size.
pub const HEIGHT: u16 = 200;

/// The builder's own VNC password, once installed.
type Installed = Arc<Mutex<Option<Secret<String>>>>;

/// A running stand-in VNC server.
pub struct StandInVnc {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    password: Installed,
    task: tokio::task::JoinHandle<()>,
}

impl StandInVnc {
    /// Serves on a free loopback port. Every login is refused until a password is installed
    /// ([`StandInVnc::install_password`]): the port is known before the build is issued, the
    /// password only after, as on a real builder.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let password = Installed::default();
        let installed = password.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let password = installed.clone();
                tokio::spawn(async move {
                    let _ = serve(tcp, &password).await;
                });
            }
        });
        Ok(Self { addr, password, task })
    }

    /// Installs the builder's own VNC password, as a platform writes the build's password file
    /// (`Credentials::builder_vnc_password_file`) for a real VNC server.
    pub fn install_password(&self, password: &Secret<String>) {
        *self.password.lock().unwrap_or_else(PoisonError::into_inner) = Some(password.clone());
    }
}

impl Drop for StandInVnc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pixel format a client asked for (only what encoding a pixel needs).
#[derive(Clone, Copy)]
struct PixelFormat {
    bytes: usize,
    big_endian: bool,
    max: [u16; 3],
    shift: [u8; 3],
}

const DEFAULT_FORMAT: [u8; 16] = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];

impl PixelFormat {
    fn parse(raw: &[u8; 16]) -> io::Result<Self> {
        let bytes = usize::from(raw[0] / 8);
        if ![1, 2, 4].contains(&bytes) || raw[3] == 0 {
            return Err(io::Error::other("only true-colour 8, 16 or 32 bpp"));
        }
        let word = |i: usize| u16::from_be_bytes([raw[i], raw[i + 1]]);
        Ok(Self {
            bytes,
            big_endian: raw[2] != 0,
            max: [word(4), word(6), word(8)],
            shift: [raw[10], raw[11], raw[12]],
        })
    }

    fn pixel(&self, rgb: [u8; 3], out: &mut Vec<u8>) {
        let mut value: u32 = 0;
        for ((channel, max), shift) in rgb.iter().zip(self.max).zip(self.shift) {
            value |= (u32::from(*channel) * u32::from(max) / 255) << shift;
        }
        let bytes = value.to_le_bytes();
        if self.big_endian {
            out.extend(bytes[..self.bytes].iter().rev());
        } else {
            out.extend(&bytes[..self.bytes]);
        }
    }
}

async fn serve(mut s: TcpStream, password: &Installed) -> io::Result<()> {
    s.write_all(b"RFB 003.008\n").await?;
    let mut version = [0u8; 12];
    s.read_exact(&mut version).await?;
    let v33 = &version == b"RFB 003.003\n";
    if v33 {
        s.write_all(&2u32.to_be_bytes()).await?;
    } else {
        s.write_all(&[1, 2]).await?;
        let mut chosen = [0u8; 1];
        s.read_exact(&mut chosen).await?;
    }
    let mut challenge = [0u8; 16];
    russh::keys::key::safe_rng().fill_bytes(&mut challenge);
    s.write_all(&challenge).await?;
    let mut answer = [0u8; 16];
    s.read_exact(&mut answer).await?;
    let expected = password
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|password| remote_access_core::vnc_auth_response(password.expose(), &challenge));
    if expected != Some(answer) {
        s.write_all(&[0, 0, 0, 1, 0, 0, 0, 21]).await?;
        s.write_all(b"Authentication failed").await?;
        return Ok(());
    }
    s.write_all(&0u32.to_be_bytes()).await?;
    let mut shared = [0u8; 1];
    s.read_exact(&mut shared).await?;
    let name = b"stand-in builder";
    let mut init = Vec::new();
    init.extend(WIDTH.to_be_bytes());
    init.extend(HEIGHT.to_be_bytes());
    init.extend(DEFAULT_FORMAT);
    init.extend((name.len() as u32).to_be_bytes());
    init.extend(name);
    s.write_all(&init).await?;
    let mut format = PixelFormat::parse(&DEFAULT_FORMAT)?;
    loop {
        let mut kind = [0u8; 1];
        s.read_exact(&mut kind).await?;
        match kind[0] {
            0 => {
                let mut raw = [0u8; 19];
                s.read_exact(&mut raw).await?;
                format = PixelFormat::parse(raw[3..].try_into().map_err(io::Error::other)?)?;
            }
            2 => {
                let mut head = [0u8; 3];
                s.read_exact(&mut head).await?;
                let count = usize::from(u16::from_be_bytes([head[1], head[2]]));
                skip(&mut s, count * 4).await?;
            }
            3 => {
                skip(&mut s, 9).await?;
                s.write_all(&frame(format)).await?;
            }
            4 => skip(&mut s, 7).await?,
            5 => skip(&mut s, 5).await?,
            6 => {
                let mut head = [0u8; 7];
                s.read_exact(&mut head).await?;
                let len = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
                if len > 1 << 20 {
                    return Err(io::Error::other("cut text too long"));
                }
                skip(&mut s, len).await?;
            }
            _ => return Err(io::Error::other("unknown client message")),
        }
    }
}

async fn skip<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> io::Result<()> {
    let copied = tokio::io::copy(&mut s.take(n as u64), &mut tokio::io::sink()).await?;
    if copied as usize == n { Ok(()) } else { Err(io::ErrorKind::UnexpectedEof.into()) }
}

/// A full-screen raw update: a gradient, so a screenshot shows something.
fn frame(format: PixelFormat) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 1];
    for v in [0u16, 0, WIDTH, HEIGHT] {
        out.extend(v.to_be_bytes());
    }
    out.extend(0i32.to_be_bytes()); // raw encoding
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let rgb = [
                (u32::from(x) * 255 / u32::from(WIDTH)) as u8,
                (u32::from(y) * 255 / u32::from(HEIGHT)) as u8,
                160,
            ];
            format.pixel(rgb, &mut out);
        }
    }
    out
}

/// The self-test's VNC client: logs in with `password` (RFB 3.8, VNC Authentication), reads
/// the server's size and one full frame. Returns the size.
pub async fn fetch_frame<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: &str,
) -> io::Result<(u16, u16)> {
    let (width, height, bytes_per_pixel) = login(s, password).await?;
    let got = request_update(s, width, height, bytes_per_pixel).await?;
    if got != usize::from(width) * usize::from(height) {
        return Err(io::Error::other("unexpected framebuffer update"));
    }
    Ok((width, height))
}

/// Logs in (RFB 3.8, VNC Authentication, shared) and reads ServerInit: (width, height, bytes
/// per pixel).
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: &str,
) -> io::Result<(u16, u16, usize)> {
    let mut version = [0u8; 12];
    s.read_exact(&mut version).await?;
    s.write_all(b"RFB 003.008\n").await?;
    let mut count = [0u8; 1];
    s.read_exact(&mut count).await?;
    let mut types = vec![0u8; usize::from(count[0])];
    s.read_exact(&mut types).await?;
    if !types.contains(&2) {
        return Err(io::Error::other("no VNC Authentication offered"));
    }
    s.write_all(&[2]).await?;
    let mut challenge = [0u8; 16];
    s.read_exact(&mut challenge).await?;
    s.write_all(&remote_access_core::vnc_auth_response(password, &challenge)).await?;
    let mut result = [0u8; 4];
    s.read_exact(&mut result).await?;
    if result != [0; 4] {
        return Err(io::Error::other("VNC authentication refused"));
    }
    s.write_all(&[1]).await?; // shared
    let mut init = [0u8; 24];
    s.read_exact(&mut init).await?;
    let (width, height) = (u16::from_be_bytes([init[0], init[1]]), u16::from_be_bytes([init[2], init[3]]));
    let bytes_per_pixel = usize::from(init[4] / 8);
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
    if name_len > 4096 {
        return Err(io::Error::other("desktop name too long"));
    }
    skip(s, name_len).await?;
    Ok((width, height, bytes_per_pixel))
}

/// Requests a non-incremental update of the top-left `width` x `height` region and reads it
/// (raw rectangles only); returns the pixels received.
pub async fn request_update<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    width: u16,
    height: u16,
    bytes_per_pixel: usize,
) -> io::Result<usize> {
    let mut request = vec![3, 0, 0, 0, 0, 0];
    request.extend(width.to_be_bytes());
    request.extend(height.to_be_bytes());
    s.write_all(&request).await?;
    loop {
        let mut kind = [0u8; 1];
        s.read_exact(&mut kind).await?;
        match kind[0] {
            0 => break,
            2 => continue, // bell
            3 => {
                let mut head = [0u8; 7];
                s.read_exact(&mut head).await?;
                let len = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
                skip(s, len.min(1 << 20)).await?;
            }
            _ => return Err(io::Error::other("unexpected server message")),
        }
    }
    let mut head = [0u8; 3];
    s.read_exact(&mut head).await?;
    let rects = u16::from_be_bytes([head[1], head[2]]);
    let mut pixels = 0;
    for _ in 0..rects {
        let mut rect = [0u8; 12];
        s.read_exact(&mut rect).await?;
        let (w, h) = (u16::from_be_bytes([rect[4], rect[5]]), u16::from_be_bytes([rect[6], rect[7]]));
        if rect[8..12] != [0, 0, 0, 0] {
            return Err(io::Error::other("only raw rectangles are expected"));
        }
        let n = usize::from(w) * usize::from(h);
        skip(s, n * bytes_per_pixel).await?;
        pixels += n;
    }
    Ok(pixels)
}
