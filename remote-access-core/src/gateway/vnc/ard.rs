//! Apple Remote Desktop login (RFB security type 30): Diffie-Hellman, then a macOS username and
//! password under AES-128. With it the gateway lands in the macOS user's session, where plain
//! VNC Authentication would land on the login window.
//!
//! Wire format (rfbproto, libvncclient, noVNC agree): the server sends `U16 generator`,
//! `U16 key-length`, `prime`, `server-public`; the client answers 128 bytes of encrypted
//! credentials, then its public key. The AES key is MD5 of the shared secret written as exactly
//! key-length bytes, big-endian, left zero-padded.

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use md5::{Digest, Md5};
use num_bigint::BigUint;
use rand_core::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::handshake::HandshakeError;

/// Key lengths seen are 128 (DH-1024) and 512 bytes; anything outside this is refused. The
/// builder's VNC server chooses it and the builder is not trusted: the fuzzer showed that 1024
/// bytes made each login cost seconds of CPU on a runtime thread.
const KEY_LENGTH: std::ops::RangeInclusive<usize> = 64..=512;
/// Our secret exponent: 256 bits, as usual for Diffie-Hellman, whatever the modulus; a
/// full-width exponent would cost up to 16 times more per login for no gain.
const EXPONENT_BYTES: usize = 32;

/// `value` as exactly `len` big-endian bytes, left zero-padded (stripping leading zeros would
/// break about one login in 256).
fn fixed_width(value: &BigUint, len: usize) -> Vec<u8> {
    let bytes = value.to_bytes_be();
    let mut out = vec![0u8; len.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes[bytes.len().saturating_sub(len)..]);
    out
}

/// A 64-byte credential field: UTF-8, NUL, random fill.
fn field(text: &str, rng: &mut impl Rng) -> Result<[u8; 64], HandshakeError> {
    if text.len() > 63 || text.contains('\0') {
        return Err(HandshakeError::Protocol("ARD username or password longer than 63 bytes"));
    }
    let mut out = [0u8; 64];
    rng.fill_bytes(&mut out);
    out[..text.len()].copy_from_slice(text.as_bytes());
    out[text.len()] = 0;
    Ok(out)
}

/// Runs the type-30 exchange after the client chose type 30; the caller reads SecurityResult.
pub(crate) async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    server: &mut S,
    username: &str,
    password: &str,
) -> Result<(), HandshakeError> {
    let mut head = [0u8; 4];
    server.read_exact(&mut head).await?;
    let generator = BigUint::from(u16::from_be_bytes([head[0], head[1]]));
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if !KEY_LENGTH.contains(&len) {
        return Err(HandshakeError::Protocol("ARD key length out of range"));
    }
    let mut prime = vec![0u8; len];
    server.read_exact(&mut prime).await?;
    let mut their_public = vec![0u8; len];
    server.read_exact(&mut their_public).await?;
    let prime = BigUint::from_bytes_be(&prime);
    let their_public = BigUint::from_bytes_be(&their_public);
    let one = BigUint::from(1u8);
    if prime <= BigUint::from(3u8) || their_public <= one || their_public >= &prime - &one || generator <= one
    {
        return Err(HandshakeError::Protocol("ARD Diffie-Hellman parameters out of range"));
    }

    let answer = answer(&generator, &prime, &their_public, len, username, password)?;
    server.write_all(&answer).await?;
    Ok(())
}

/// The client's message: encrypted credentials, then its public key. Synchronous, because the
/// thread-local RNG must not live across an await.
fn answer(
    generator: &BigUint,
    prime: &BigUint,
    their_public: &BigUint,
    len: usize,
    username: &str,
    password: &str,
) -> Result<Vec<u8>, HandshakeError> {
    let one = BigUint::from(1u8);
    let mut rng = russh::keys::key::safe_rng();
    let mut secret = [0u8; EXPONENT_BYTES];
    rng.fill_bytes(&mut secret);
    let secret = BigUint::from_bytes_be(&secret) % (prime - &one);
    let our_public = generator.modpow(&secret, prime);
    let shared = their_public.modpow(&secret, prime);
    let key: [u8; 16] = Md5::digest(fixed_width(&shared, len)).into();

    let mut credentials = [0u8; 128];
    credentials[..64].copy_from_slice(&field(username, &mut rng)?);
    credentials[64..].copy_from_slice(&field(password, &mut rng)?);
    let aes = Aes128::new(&key.into());
    for block in credentials.as_chunks_mut::<16>().0 {
        aes.encrypt_block(block.into());
    }
    let mut answer = credentials.to_vec();
    answer.extend(fixed_width(&our_public, len));
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockCipherDecrypt;

    /// RFC 2409's 1024-bit MODP group (Oakley group 2), generator 2.
    const PRIME_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF";

    /// Plays a macOS server: checks the client's message layout and decrypts its credentials.
    #[tokio::test]
    async fn a_scripted_server_decrypts_the_credentials() {
        let prime = BigUint::parse_bytes(PRIME_HEX.as_bytes(), 16).unwrap();
        let generator = BigUint::from(2u8);
        let server_secret = BigUint::parse_bytes(b"123456789abcdef0123456789abcdef", 16).unwrap();
        let server_public = generator.modpow(&server_secret, &prime);
        let (mut client, mut server) = tokio::io::duplex(8192);
        let mut hello = vec![0, 2, 0, 128];
        hello.extend(fixed_width(&prime, 128));
        hello.extend(fixed_width(&server_public, 128));
        server.write_all(&hello).await.unwrap();

        login(&mut client, "builder", "hunter2").await.unwrap();
        let mut answer = vec![0u8; 128 + 128];
        server.read_exact(&mut answer).await.unwrap();
        let client_public = BigUint::from_bytes_be(&answer[128..]);
        let shared = client_public.modpow(&server_secret, &prime);
        let key: [u8; 16] = Md5::digest(fixed_width(&shared, 128)).into();
        let aes = Aes128::new(&key.into());
        let mut plain = answer[..128].to_vec();
        for block in plain.chunks_exact_mut(16) {
            let block: &mut [u8; 16] = block.try_into().unwrap();
            aes.decrypt_block(block.into());
        }
        assert_eq!(&plain[..8], b"builder\0");
        assert_eq!(&plain[64..72], b"hunter2\0");
    }

    #[tokio::test]
    async fn hostile_parameters_are_refused() {
        for hello in [
            vec![0, 2, 0xff, 0xff],                       // key length 65535
            vec![0, 2, 0, 8],                             // key length 8
            [vec![0, 2, 0, 64], vec![0u8; 128]].concat(), // prime 0
        ] {
            let (mut client, mut server) = tokio::io::duplex(8192);
            server.write_all(&hello).await.unwrap();
            drop(server);
            assert!(login(&mut client, "u", "p").await.is_err());
        }
    }

    #[test]
    fn secrets_keep_their_width() {
        assert_eq!(fixed_width(&BigUint::from(1u8), 4), [0, 0, 0, 1]);
        assert_eq!(fixed_width(&BigUint::from(0x0102_0304u32), 4), [1, 2, 3, 4]);
    }
}
