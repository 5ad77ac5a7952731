//! The RFB security handshake, both ways: as a server toward the user (terminating it with the
//! per-build password) and as a client toward the builder's VNC server (logging in with the
//! builder's own password). Exact-length reads only, every length capped; the caller puts one
//! deadline around the whole exchange.

use std::fmt;

use rand_core::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::credential::vnc_response;

/// Longest failure reason read from a builder; longer ones end the connection.
const MAX_REASON: u32 = 4096;
/// RFB security types.
const SECURITY_NONE: u8 = 1;
const SECURITY_VNC_AUTH: u8 = 2;
const SECURITY_VENCRYPT: u8 = 19;
const SECURITY_ARD: u8 = 30;

/// How the gateway logs in to a builder's VNC server.
#[derive(Clone, Copy, Default)]
pub(crate) struct BuilderLogin<'a> {
    /// The VNC password (type 2) or, with `ard_username`, the macOS account's password.
    pub(crate) password: Option<&'a str>,
    /// A macOS username: use Apple's type 30 when the server offers it.
    pub(crate) ard_username: Option<&'a str>,
}

/// The protocol versions the gateway speaks; 3.889 (macOS) is 3.8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    V3_3,
    V3_7,
    V3_8,
}

impl Version {
    fn bytes(self) -> &'static [u8; 12] {
        match self {
            Self::V3_3 => b"RFB 003.003\n",
            Self::V3_7 => b"RFB 003.007\n",
            Self::V3_8 => b"RFB 003.008\n",
        }
    }

    /// Reads `RFB xxx.yyy\n`; anything else is not RFB.
    fn parse(bytes: &[u8; 12]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let rest = text.strip_prefix("RFB ")?.strip_suffix('\n')?;
        let (major, minor) = rest.split_once('.')?;
        if major.len() != 3
            || minor.len() != 3
            || !(major.bytes().chain(minor.bytes())).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
        Some(match (major, minor) {
            (3, 7) => Self::V3_7,
            // 3.8, Apple's 3.889, and anything newer speak the 3.8 handshake.
            (3, m) if m >= 8 => Self::V3_8,
            (m, _) if m > 3 => Self::V3_8,
            // 3.3, 3.5 (= 3.3 by the spec) and the UltraVNC variants fall back to 3.3.
            _ => Self::V3_3,
        })
    }
}

/// Why a handshake failed. `Display` is for our logs, never for the user.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Io(std::io::Error),
    /// The peer broke the protocol.
    Protocol(&'static str),
    /// The builder refused the login (its reason, cut short and made printable).
    Refused(String),
    /// The user's TLS handshake (VeNCrypt or `wss://`) failed.
    Tls(std::io::Error),
    /// The user's WebSocket upgrade failed or was refused.
    WebSocket(String),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => write!(f, "i/o: {err}"),
            Self::Protocol(what) => write!(f, "protocol: {what}"),
            Self::Refused(reason) => write!(f, "refused: {reason}"),
            Self::Tls(err) => write!(f, "TLS handshake: {err}"),
            Self::WebSocket(err) => write!(f, "WebSocket: {err}"),
        }
    }
}

impl From<std::io::Error> for HandshakeError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err)
    }
}

type Result<T> = std::result::Result<T, HandshakeError>;

/// What the user sent up to the VNC Authentication response.
pub(crate) struct UserHello {
    pub(crate) version: Version,
    pub(crate) challenge: [u8; 16],
    pub(crate) response: [u8; 16],
}

/// The security types the gateway offers a user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offer {
    /// VNC Authentication in the clear (type 2).
    pub(crate) plain: bool,
    /// VeNCrypt (type 19) with only the `X509Vnc` sub-type: TLS with the gateway's certificate,
    /// then VNC Authentication inside it.
    pub(crate) tls: bool,
}

/// Where the user's handshake stands once the security type is agreed.
pub(crate) enum Greeting {
    /// VNC Authentication in the clear: the hello is complete.
    Plain(UserHello),
    /// VeNCrypt `X509Vnc` agreed and acknowledged: the caller runs the TLS handshake next, then
    /// [`challenge_user`] inside it. Nothing the user sent after the acknowledgement has been
    /// read, so the TLS layer sees the ClientHello whole.
    StartTls(Version),
}

/// The VeNCrypt version the gateway speaks (0.2, the only one clients use).
const VENCRYPT_VERSION: [u8; 2] = [0, 2];
/// VeNCrypt's `X509Vnc`: certificate TLS, then VNC Authentication. The anonymous `TLS*`
/// sub-types are never offered: they need anonymous Diffie-Hellman, which rustls does not
/// have, and TigerVNC picks in the server's order, so listing one would break it.
const X509_VNC: u32 = 261;

/// Runs the user's side up to the security type and, for plain VNC Authentication, the
/// response: our version, theirs, the types on offer (VeNCrypt first, so clients that pick in
/// the server's order encrypt), a fresh challenge.
pub(crate) async fn greet_user<S: AsyncRead + AsyncWrite + Unpin>(
    user: &mut S,
    offer: Offer,
) -> Result<Greeting> {
    send(user, Version::V3_8.bytes()).await?;
    let mut theirs = [0u8; 12];
    user.read_exact(&mut theirs).await?;
    let version = Version::parse(&theirs).ok_or(HandshakeError::Protocol("client version is not RFB"))?;
    if version == Version::V3_3 {
        // RFB 3.3 lets the server impose a type, but only 1 or 2: no VeNCrypt.
        if !offer.plain {
            let mut out = 0u32.to_be_bytes().to_vec();
            out.extend_from_slice(&reason_bytes(ENCRYPTION_REQUIRED));
            user.write_all(&out).await?;
            user.flush().await?;
            return Err(HandshakeError::Protocol("an RFB 3.3 client, and encryption is required"));
        }
        user.write_all(&u32::from(SECURITY_VNC_AUTH).to_be_bytes()).await?;
        return challenge_user(user, version).await.map(Greeting::Plain);
    }
    let types: &[u8] = match (offer.tls, offer.plain) {
        (true, true) => &[2, SECURITY_VENCRYPT, SECURITY_VNC_AUTH],
        (true, false) => &[1, SECURITY_VENCRYPT],
        (false, true) => &[1, SECURITY_VNC_AUTH],
        (false, false) => {
            // Nothing to offer: no certificate, and no plain VNC. The callers never ask for
            // this (the options and the WebSocket upgrade refuse it first); refuse anyway
            // rather than fall back to plain.
            let mut out = vec![0u8];
            out.extend_from_slice(&reason_bytes(ENCRYPTION_REQUIRED));
            send(user, &out).await?;
            return Err(HandshakeError::Protocol("no security type may be offered"));
        }
    };
    send(user, types).await?;
    let mut chosen = [0u8; 1];
    user.read_exact(&mut chosen).await?;
    if !types[1..].contains(&chosen[0]) {
        let why =
            if chosen[0] == SECURITY_VNC_AUTH { ENCRYPTION_REQUIRED } else { "security type not offered" };
        refuse_user(user, version, why).await;
        return Err(HandshakeError::Protocol("client chose a security type that was not offered"));
    }
    if chosen[0] == SECURITY_VNC_AUTH {
        return challenge_user(user, version).await.map(Greeting::Plain);
    }
    // VeNCrypt: versions, then the sub-types, then the acknowledgement after which TLS starts.
    send(user, &VENCRYPT_VERSION).await?;
    let mut theirs = [0u8; 2];
    user.read_exact(&mut theirs).await?;
    if theirs != VENCRYPT_VERSION {
        user.write_all(&[1]).await?;
        user.flush().await?;
        return Err(HandshakeError::Protocol("client does not speak VeNCrypt 0.2"));
    }
    // The status byte (0: version accepted), then the sub-type list: one, X509Vnc.
    let mut subtypes = vec![0u8, 1];
    subtypes.extend_from_slice(&X509_VNC.to_be_bytes());
    send(user, &subtypes).await?;
    let mut subtype = [0u8; 4];
    user.read_exact(&mut subtype).await?;
    if u32::from_be_bytes(subtype) != X509_VNC {
        user.write_all(&[0]).await?;
        user.flush().await?;
        return Err(HandshakeError::Protocol("client chose a VeNCrypt sub-type that was not offered"));
    }
    user.write_all(&[1]).await?;
    user.flush().await?;
    Ok(Greeting::StartTls(version))
}

/// VNC Authentication's challenge and the user's response: on the plain stream, or inside
/// VeNCrypt's TLS.
pub(crate) async fn challenge_user<S: AsyncRead + AsyncWrite + Unpin>(
    user: &mut S,
    version: Version,
) -> Result<UserHello> {
    let mut challenge = [0u8; 16];
    russh::keys::key::safe_rng().fill_bytes(&mut challenge);
    send(user, &challenge).await?;
    let mut response = [0u8; 16];
    user.read_exact(&mut response).await?;
    Ok(UserHello { version, challenge, response })
}

/// Writes and flushes: a TLS or WebSocket carriage holds written bytes until flushed, and the
/// handshake waits for the peer's answer next.
async fn send<S: AsyncWrite + Unpin>(user: &mut S, bytes: &[u8]) -> Result<()> {
    user.write_all(bytes).await?;
    user.flush().await?;
    Ok(())
}

/// What a client that cannot encrypt is told when encryption is required.
const ENCRYPTION_REQUIRED: &str = "this gateway requires an encrypted VNC connection: use a client with \
    VeNCrypt (TigerVNC, Remmina, gtk-vnc), the SSH tunnel, or the browser";

/// An RFB reason string: U32 length, then the text.
fn reason_bytes(reason: &str) -> Vec<u8> {
    let mut out = u32::try_from(reason.len()).unwrap_or(0).to_be_bytes().to_vec();
    out.extend_from_slice(reason.as_bytes());
    out
}

/// Tells the user authentication failed, with a reason where the version allows one. Errors
/// are ignored: the connection closes next anyway.
pub(crate) async fn refuse_user<S: AsyncWrite + Unpin>(user: &mut S, version: Version, reason: &str) {
    let mut out = 1u32.to_be_bytes().to_vec();
    if version == Version::V3_8 {
        out.extend_from_slice(&reason_bytes(reason));
    }
    let _ = user.write_all(&out).await;
    let _ = user.flush().await;
}

/// Tells the user authentication succeeded and forwards their ClientInit to the builder with
/// the shared flag set, so the user never disconnects other viewers of the builder's screen.
pub(crate) async fn welcome_user<U, B>(user: &mut U, builder: &mut B) -> Result<()>
where
    U: AsyncRead + AsyncWrite + Unpin,
    B: AsyncWrite + Unpin,
{
    send(user, &0u32.to_be_bytes()).await?;
    let mut client_init = [0u8; 1];
    user.read_exact(&mut client_init).await?;
    builder.write_all(&[1]).await?;
    builder.flush().await?;
    Ok(())
}

/// Logs in to the builder's VNC server: version `min(server, 3.8)`; Apple's type 30 when a
/// macOS username is configured and offered, else VNC Authentication with the builder's
/// password, else None if that is all the server offers. Never Tight or TLS types, and never a
/// second try: some servers blacklist the address.
pub(crate) async fn login_builder<S: AsyncRead + AsyncWrite + Unpin>(
    builder: &mut S,
    login: BuilderLogin<'_>,
) -> Result<()> {
    let password = login.password.map(str::as_bytes);
    let mut theirs = [0u8; 12];
    builder.read_exact(&mut theirs).await?;
    let version = Version::parse(&theirs).ok_or(HandshakeError::Protocol("server version is not RFB"))?;
    builder.write_all(version.bytes()).await?;

    let chosen = if version == Version::V3_3 {
        let mut kind = [0u8; 4];
        builder.read_exact(&mut kind).await?;
        match u32::from_be_bytes(kind) {
            0 => return Err(HandshakeError::Refused(read_reason(builder).await?)),
            1 => SECURITY_NONE,
            2 => SECURITY_VNC_AUTH,
            _ => {
                return Err(HandshakeError::Protocol("3.3 server named an unknown security type"));
            }
        }
    } else {
        let mut count = [0u8; 1];
        builder.read_exact(&mut count).await?;
        if count[0] == 0 {
            return Err(HandshakeError::Refused(read_reason(builder).await?));
        }
        let mut offered = vec![0u8; usize::from(count[0])];
        builder.read_exact(&mut offered).await?;
        let chosen = if offered.contains(&SECURITY_ARD) && login.ard_username.is_some() && password.is_some()
        {
            SECURITY_ARD
        } else if offered.contains(&SECURITY_VNC_AUTH) && password.is_some() {
            SECURITY_VNC_AUTH
        } else if offered.contains(&SECURITY_NONE) {
            SECURITY_NONE
        } else {
            return Err(HandshakeError::Protocol("builder offers no security type the gateway may use"));
        };
        builder.write_all(&[chosen]).await?;
        chosen
    };

    if let (SECURITY_ARD, Some(username), Some(password)) = (chosen, login.ard_username, login.password) {
        super::ard::login(builder, username, password).await?;
    }
    if chosen == SECURITY_VNC_AUTH {
        let password =
            password.ok_or(HandshakeError::Protocol("builder wants a password; none is configured"))?;
        let mut challenge = [0u8; 16];
        builder.read_exact(&mut challenge).await?;
        builder.write_all(&vnc_response(password, &challenge)).await?;
    }
    // None under 3.3 and 3.7 has no SecurityResult; everything else does.
    if chosen != SECURITY_NONE || version == Version::V3_8 {
        let mut result = [0u8; 4];
        builder.read_exact(&mut result).await?;
        if u32::from_be_bytes(result) != 0 {
            let reason = if version == Version::V3_8 { read_reason(builder).await? } else { String::new() };
            return Err(HandshakeError::Refused(reason));
        }
    }
    Ok(())
}

/// Reads a length-prefixed reason, capped, as printable text for logs.
async fn read_reason<S: AsyncRead + Unpin>(peer: &mut S) -> Result<String> {
    let mut len = [0u8; 4];
    peer.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > MAX_REASON {
        return Err(HandshakeError::Protocol("failure reason longer than 4 KiB"));
    }
    let mut reason = vec![0u8; len as usize];
    peer.read_exact(&mut reason).await?;
    Ok(String::from_utf8_lossy(&reason).chars().take(200).flat_map(char::escape_default).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = |s: &[u8; 12]| Version::parse(s);
        assert_eq!(v(b"RFB 003.003\n"), Some(Version::V3_3));
        assert_eq!(v(b"RFB 003.005\n"), Some(Version::V3_3));
        assert_eq!(v(b"RFB 003.007\n"), Some(Version::V3_7));
        assert_eq!(v(b"RFB 003.008\n"), Some(Version::V3_8));
        assert_eq!(v(b"RFB 003.889\n"), Some(Version::V3_8));
        assert_eq!(v(b"RFB 004.001\n"), Some(Version::V3_8));
        for bad in [b"RFB 003.008 ", b"RFB 03.0008\n", b"XYZ 003.008\n", b"RFB 00a.008\n", b"RFB 003.-08\n"] {
            assert_eq!(v(bad), None, "{bad:?}");
        }
    }

    /// A scripted peer on an in-memory duplex stream.
    async fn login_against(server: Vec<u8>, password: Option<&str>) -> (Result<()>, Vec<u8>) {
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        theirs.write_all(&server).await.unwrap();
        let result = login_builder(&mut ours, BuilderLogin { password, ard_username: None }).await;
        drop(ours);
        let mut sent = Vec::new();
        theirs.read_to_end(&mut sent).await.unwrap();
        (result, sent)
    }

    #[tokio::test]
    async fn builder_login_38_with_vnc_auth() {
        let challenge: [u8; 16] = core::array::from_fn(|i| i as u8);
        let mut server = b"RFB 003.008\n".to_vec();
        server.extend([3, 16, 2, 19]); // Tight, VNC Auth, VeNCrypt
        server.extend(challenge);
        server.extend([0, 0, 0, 0]);
        let (result, sent) = login_against(server, Some("secret")).await;
        assert!(result.is_ok(), "{:?}", result.err().map(|e| e.to_string()));
        let mut expected = b"RFB 003.008\n".to_vec();
        expected.push(2); // VNC Auth, never Tight or VeNCrypt
        expected.extend(vnc_response(b"secret", &challenge));
        assert_eq!(sent, expected);
    }

    #[tokio::test]
    async fn builder_refusals_are_reported_once_and_bounded() {
        // Blacklisted: TigerVNC answers 3.3 with a failure and a reason.
        let mut server = b"RFB 003.003\n".to_vec();
        server.extend([0, 0, 0, 0, 0, 0, 0, 26]);
        server.extend(b"Too many security failures");
        let (result, _) = login_against(server, Some("x")).await;
        assert!(matches!(result, Err(HandshakeError::Refused(r)) if r == "Too many security failures"));

        // Wrong password under 3.8: one attempt, and the reason is read.
        let mut server = b"RFB 003.008\n".to_vec();
        server.extend([1, 2]);
        server.extend([7u8; 16]);
        server.extend([0, 0, 0, 1, 0, 0, 0, 6]);
        server.extend(b"denied");
        let (result, sent) = login_against(server, Some("x")).await;
        assert!(matches!(result, Err(HandshakeError::Refused(r)) if r == "denied"));
        assert_eq!(sent.len(), 12 + 1 + 16, "exactly one attempt");

        // A huge reason length is not believed.
        let mut server = b"RFB 003.008\n".to_vec();
        server.extend([0, 0xff, 0xff, 0xff, 0xff]);
        let (result, _) = login_against(server, Some("x")).await;
        assert!(matches!(result, Err(HandshakeError::Protocol(_))));

        // Only Tight or TLS on offer: refuse rather than pick them.
        let mut server = b"RFB 003.008\n".to_vec();
        server.extend([2, 16, 18]);
        let (result, _) = login_against(server, Some("x")).await;
        assert!(matches!(result, Err(HandshakeError::Protocol(_))));
    }

    #[tokio::test]
    async fn macos_servers_get_type_30_only_with_a_username() {
        // Without a macOS username, a server offering only Apple's types is refused.
        let mut server = b"RFB 003.889\n".to_vec();
        server.extend([3, 30, 33, 36]);
        let (result, _) = login_against(server, Some("pw")).await;
        assert!(matches!(result, Err(HandshakeError::Protocol(_))));

        // With one, type 30 is chosen over type 2 (and the DH exchange starts).
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut server = b"RFB 003.889\n".to_vec();
        server.extend([2, 2, 30]);
        server.extend([0, 2, 0xff, 0xff]); // generator 2, key length 65535: refused
        theirs.write_all(&server).await.unwrap();
        let login = BuilderLogin { password: Some("pw"), ard_username: Some("ci") };
        let result = login_builder(&mut ours, login).await;
        assert!(matches!(result, Err(HandshakeError::Protocol("ARD key length out of range"))));
        drop(ours);
        let mut sent = Vec::new();
        theirs.read_to_end(&mut sent).await.unwrap();
        assert_eq!(
            sent,
            [b"RFB 003.008\n".as_slice(), &[30]].concat(),
            "3.889 answered as 3.8, type 30 chosen"
        );
    }

    #[tokio::test]
    async fn user_handshake_per_version() {
        for (client, offer) in [
            (&b"RFB 003.008\n"[..], &[1u8, 2][..]),
            (b"RFB 003.889\n", &[1, 2]),
            (b"RFB 003.007\n", &[1, 2]),
            (b"RFB 003.003\n", &[0, 0, 0, 2]),
        ] {
            let (mut ours, mut theirs) = tokio::io::duplex(4096);
            let mut input = client.to_vec();
            if offer.len() == 2 {
                input.push(2);
            }
            input.extend([9u8; 16]);
            theirs.write_all(&input).await.unwrap();
            let Greeting::Plain(hello) = greet_user(&mut ours, PLAIN).await.unwrap() else {
                panic!("only plain VNC Authentication was offered");
            };
            assert_eq!(hello.response, [9u8; 16]);
            drop(ours);
            let mut sent = Vec::new();
            theirs.read_to_end(&mut sent).await.unwrap();
            assert_eq!(&sent[..12], b"RFB 003.008\n");
            assert_eq!(&sent[12..12 + offer.len()], offer);
            assert_eq!(&sent[12 + offer.len()..], &hello.challenge);
        }
    }

    const PLAIN: Offer = Offer { plain: true, tls: false };

    /// What the gateway sends to a user who sends `input`, and the outcome.
    async fn greet(input: &[u8], offer: Offer) -> (Result<Greeting>, Vec<u8>) {
        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        theirs.write_all(input).await.unwrap();
        let greeting = greet_user(&mut ours, offer).await;
        drop(ours);
        let mut sent = Vec::new();
        theirs.read_to_end(&mut sent).await.unwrap();
        (greeting, sent)
    }

    #[tokio::test]
    async fn vencrypt_offers_x509vnc_first_and_acknowledges_before_tls() {
        let mut input = b"RFB 003.008\n".to_vec();
        input.extend([19, 0, 2, 0, 0, 1, 5]);
        for (offer, types) in [
            (Offer { plain: true, tls: true }, &[2u8, 19, 2][..]),
            (Offer { plain: false, tls: true }, &[1, 19]),
        ] {
            let (greeting, sent) = greet(&input, offer).await;
            assert!(matches!(greeting, Ok(Greeting::StartTls(Version::V3_8))));
            let expected =
                [b"RFB 003.008\n".as_slice(), types, &[0, 2], &[0], &[1, 0, 0, 1, 5], &[1]].concat();
            assert_eq!(sent, expected, "version, types, VeNCrypt 0.2, OK, [261], acknowledged");
        }
    }

    #[tokio::test]
    async fn vencrypt_refuses_other_versions_and_subtypes() {
        let mut input = b"RFB 003.008\n".to_vec();
        input.extend([19, 0, 1]);
        let (greeting, sent) = greet(&input, Offer { plain: false, tls: true }).await;
        assert!(matches!(greeting, Err(HandshakeError::Protocol(_))));
        assert_eq!(sent.last(), Some(&1), "VeNCrypt 0.1 is refused");

        let mut input = b"RFB 003.008\n".to_vec();
        input.extend([19, 0, 2, 0, 0, 1, 2]); // TLSVnc (258): never offered
        let (greeting, sent) = greet(&input, Offer { plain: false, tls: true }).await;
        assert!(matches!(greeting, Err(HandshakeError::Protocol(_))));
        assert_eq!(sent.last(), Some(&0), "a sub-type not offered is refused");
    }

    #[tokio::test]
    async fn nothing_to_offer_is_a_refusal_not_plain() {
        let (greeting, sent) = greet(b"RFB 003.008\n", Offer { plain: false, tls: false }).await;
        assert!(matches!(greeting, Err(HandshakeError::Protocol(_))));
        assert_eq!(sent[12], 0, "no security types, then why");
        assert!(String::from_utf8_lossy(&sent[17..]).contains("requires an encrypted VNC connection"));
    }

    #[tokio::test]
    async fn required_encryption_refuses_plain_vnc_auth_and_rfb_33() {
        let mut input = b"RFB 003.008\n".to_vec();
        input.extend([2]);
        let (greeting, sent) = greet(&input, Offer { plain: false, tls: true }).await;
        assert!(matches!(greeting, Err(HandshakeError::Protocol(_))));
        assert!(sent.starts_with(b"RFB 003.008\n\x01\x13\x00\x00\x00\x01"), "{sent:?}");
        assert!(String::from_utf8_lossy(&sent).contains("requires an encrypted VNC connection"), "says why");

        let (greeting, sent) = greet(b"RFB 003.003\n", Offer { plain: false, tls: true }).await;
        assert!(matches!(greeting, Err(HandshakeError::Protocol(_))));
        assert_eq!(&sent[12..16], &[0, 0, 0, 0], "3.3: security type 0, then why");
        assert!(String::from_utf8_lossy(&sent[20..]).contains("requires an encrypted VNC connection"));
    }
}
