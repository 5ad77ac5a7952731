//! A VNC client session through the gateway, playing the user's screen: RFB 3.8 with VNC
//! Authentication (the library's `vnc_auth_response`), raw encoding.
//!
//! Also compiled into `tests/attacks.rs` and `tests/adversarial.rs`, the binaries of their own
//! that a counting global allocator needs.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Whatever carries RFB: TCP, or a WebSocket (`tests/it/vnc_encrypted.rs`).
pub trait RfbStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RfbStream for T {}

/// A VNC client session through the gateway (RFB 3.8, VNC Authentication, raw encoding),
/// held open: the user's screen. It reads every message RFB 3.8 lets a server send at any
/// time, in any order, with every length capped.
pub struct VncViewer {
    tcp: Box<dyn RfbStream>,
    bytes_per_pixel: u64,
    width: u16,
    height: u16,
    /// FramebufferUpdateRequests sent: `refresh` alternates between two areas by it.
    requests: u32,
}

/// Longest failure reason or desktop name accepted (vnc.md §5 caps them at about 4 KiB).
const MAX_TEXT: u32 = 4096;
/// Longest clipboard text accepted (it is skipped, never held in memory).
const MAX_CUT_TEXT: u32 = 1 << 20;

impl VncViewer {
    /// RFB 3.8 with VNC Authentication, then ClientInit (shared), the ServerInit, and
    /// SetEncodings asking for Raw only.
    pub async fn connect(port: u16, password: &str) -> VncViewer {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Self::connect_over(Box::new(tcp), password).await
    }

    /// The same over any carriage (a WebSocket, say).
    pub async fn connect_over(tcp: Box<dyn RfbStream>, password: &str) -> VncViewer {
        Self::login(tcp, password).await.unwrap_or_else(|refused| panic!("{refused}"))
    }

    /// The same, returning a refusal's reason instead of panicking on it.
    pub async fn login(mut tcp: Box<dyn RfbStream>, password: &str) -> Result<VncViewer, String> {
        let handshake = async {
            let mut version = [0u8; 12];
            tcp.read_exact(&mut version).await.unwrap();
            assert_eq!(&version, b"RFB 003.008\n", "the gateway speaks RFB 3.8");
            tcp.write_all(b"RFB 003.008\n").await.unwrap();
            let count = tcp.read_u8().await.unwrap() as usize;
            if count == 0 {
                return Err(format!("VNC connection refused: {}", read_text(&mut tcp).await));
            }
            let mut types = vec![0u8; count];
            tcp.read_exact(&mut types).await.unwrap();
            if !types.contains(&2) {
                return Err(format!("VNC Authentication not offered: {types:?}"));
            }
            tcp.write_all(&[2]).await.unwrap();
            let mut challenge = [0u8; 16];
            tcp.read_exact(&mut challenge).await.unwrap();
            tcp.write_all(&remote_access_core::vnc_auth_response(password, &challenge)).await.unwrap();
            let result = tcp.read_u32().await.unwrap();
            if result != 0 {
                return Err(format!("VNC login refused ({result}): {}", read_text(&mut tcp).await));
            }
            tcp.write_all(&[1]).await.unwrap();
            // ServerInit: width, height, PIXEL_FORMAT (bits-per-pixel first), then the name.
            let mut init = [0u8; 20];
            tcp.read_exact(&mut init).await.unwrap();
            let _name = read_text(&mut tcp).await;
            assert!(matches!(init[4], 8 | 16 | 32), "bits per pixel: {}", init[4]);
            // Raw only: a server must then send no other encoding and no pseudo-encoding.
            tcp.write_all(&[2, 0, 0, 1, 0, 0, 0, 0]).await.unwrap();
            Ok(VncViewer {
                tcp,
                bytes_per_pixel: u64::from(init[4] / 8),
                width: u16::from_be_bytes([init[0], init[1]]),
                height: u16::from_be_bytes([init[2], init[3]]),
                requests: 0,
            })
        };
        tokio::time::timeout(Duration::from_secs(30), handshake).await.expect("the VNC handshake finishes")
    }

    /// The stream under the session, to read what the server sends last.
    #[allow(dead_code, reason = "tests/it only; attacks.rs and adversarial.rs compile this file too")]
    pub fn stream(&mut self) -> &mut Box<dyn RfbStream> {
        &mut self.tcp
    }

    /// Asks for an 8x8 area of the screen and waits until updates have covered it, skipping
    /// other messages. Successive calls ask for two disjoint areas in turn, so an update for
    /// the previous call still in flight cannot pass for the answer to this one.
    pub async fn refresh(&mut self) {
        assert!(self.width >= 16 && self.height >= 8, "a screen of at least 16x8");
        let left = if self.requests.is_multiple_of(2) { 0 } else { 8 };
        self.requests += 1;
        let mut request = vec![3u8, 0]; // FramebufferUpdateRequest, not incremental
        for field in [left, 0, 8, 8] {
            request.extend(u16::to_be_bytes(field));
        }
        self.tcp.write_all(&request).await.unwrap();
        let mut covered = 0u64; // one bit per pixel of the area
        tokio::time::timeout(Duration::from_secs(30), async {
            while covered != u64::MAX {
                for [x, y, w, h] in self.read_message().await {
                    for (dx, py) in (0..8u32).flat_map(|py| (0..8).map(move |dx| (dx, py))) {
                        let px = u32::from(left) + dx;
                        if (x..x + w).contains(&px) && (y..y + h).contains(&py) {
                            covered |= 1 << (py * 8 + dx);
                        }
                    }
                }
            }
        })
        .await
        .expect("the VNC session answers");
    }

    /// Reads one server message and returns the rectangles (x, y, w, h) of a FramebufferUpdate;
    /// nothing for the other messages, which the viewer does not use.
    async fn read_message(&mut self) -> Vec<[u32; 4]> {
        match self.tcp.read_u8().await.unwrap() {
            0 => {
                // FramebufferUpdate: padding, U16 count, then per rectangle x, y, w, h (U16
                // each), S32 encoding and its data.
                let mut head = [0u8; 3];
                self.tcp.read_exact(&mut head).await.unwrap();
                let mut rects = Vec::new();
                for _ in 0..u16::from_be_bytes([head[1], head[2]]) {
                    let mut rect = [0u8; 12];
                    self.tcp.read_exact(&mut rect).await.unwrap();
                    let field = |i: usize| u32::from(u16::from_be_bytes([rect[i], rect[i + 1]]));
                    let [x, y, w, h] = [field(0), field(2), field(4), field(6)];
                    let encoding = i32::from_be_bytes([rect[8], rect[9], rect[10], rect[11]]);
                    assert_eq!(encoding, 0, "only Raw was asked for");
                    // Inside the screen, which caps the pixel data.
                    assert!(x + w <= u32::from(self.width) && y + h <= u32::from(self.height), "{rect:?}");
                    self.skip(u64::from(w) * u64::from(h) * self.bytes_per_pixel).await;
                    rects.push([x, y, w, h]);
                }
                rects
            }
            1 => {
                // SetColourMapEntries: padding, U16 first colour, U16 count, 6 bytes a colour.
                let mut head = [0u8; 5];
                self.tcp.read_exact(&mut head).await.unwrap();
                self.skip(6 * u64::from(u16::from_be_bytes([head[3], head[4]]))).await;
                Vec::new()
            }
            2 => Vec::new(), // Bell
            3 => {
                // ServerCutText: 3 bytes padding, U32 length, text.
                let mut head = [0u8; 3];
                self.tcp.read_exact(&mut head).await.unwrap();
                let len = self.tcp.read_u32().await.unwrap();
                assert!(len <= MAX_CUT_TEXT, "cut text of {len} bytes");
                self.skip(u64::from(len)).await;
                Vec::new()
            }
            // Others come only after the client asked for an extension, which this one never does.
            other => panic!("server message type {other}, which RFB 3.8 does not send unasked"),
        }
    }

    /// Reads and drops `len` bytes without holding them.
    async fn skip(&mut self, len: u64) {
        let skipped = tokio::io::copy(&mut (&mut self.tcp).take(len), &mut tokio::io::sink()).await.unwrap();
        assert_eq!(skipped, len, "the VNC server closed mid-message");
    }
}

/// Reads an RFB string (U32 length, then the bytes), capped at [`MAX_TEXT`].
async fn read_text<S: AsyncRead + Unpin + ?Sized>(tcp: &mut S) -> String {
    let len = tcp.read_u32().await.unwrap();
    assert!(len <= MAX_TEXT, "a text of {len} bytes");
    let mut text = vec![0u8; len as usize];
    tcp.read_exact(&mut text).await.unwrap();
    String::from_utf8_lossy(&text).into_owned()
}
