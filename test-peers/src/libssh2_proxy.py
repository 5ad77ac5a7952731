"""A ProxyCommand made of libssh2 (the system's libssh2.so.1, through ctypes): log in to the
gateway with a key, open a direct-tcpip channel to the builder, and relay stdin and stdout
through it, so that an SSH client (OpenSSH's `ssh -o ProxyCommand=...`) reaches the builder
the way a libssh2-based client's jump would.

Usage: python3 libssh2_proxy.py KEY PUBKEY GW_HOST GW_PORT GW_USER GW_HOST_KEY BUILDER_HOST
       BUILDER_PORT

GW_HOST_KEY is the gateway's public key (`ssh-ed25519 AAAA...`): the key the gateway shows must
be exactly this one. Any failure is printed to stderr, naming the step, with exit status 255.
"""

import base64
import ctypes
import ctypes.util
import os
import select
import socket
import sys

EAGAIN = -37  # LIBSSH2_ERROR_EAGAIN
BLOCK_OUTBOUND = 2  # LIBSSH2_SESSION_BLOCK_OUTBOUND


def fail(step, detail):
    sys.stderr.write(f"libssh2: {step}: {detail}\n")
    sys.stderr.flush()
    os._exit(255)


try:
    lib = ctypes.CDLL("libssh2.so.1")
except OSError as err:
    fail("loading libssh2.so.1 (Debian package libssh2-1)", err)

P = ctypes.c_void_p
for name, restype, argtypes in [
    ("libssh2_init", ctypes.c_int, [ctypes.c_int]),
    ("libssh2_version", ctypes.c_char_p, [ctypes.c_int]),
    ("libssh2_session_init_ex", P, [P, P, P, P]),
    ("libssh2_session_handshake", ctypes.c_int, [P, ctypes.c_int]),
    ("libssh2_session_hostkey", P, [P, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_int)]),
    ("libssh2_session_methods", ctypes.c_char_p, [P, ctypes.c_int]),
    ("libssh2_session_last_error", ctypes.c_int,
     [P, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int), ctypes.c_int]),
    ("libssh2_session_set_blocking", None, [P, ctypes.c_int]),
    ("libssh2_session_block_directions", ctypes.c_int, [P]),
    ("libssh2_userauth_publickey_fromfile_ex", ctypes.c_int,
     [P, ctypes.c_char_p, ctypes.c_uint, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]),
    ("libssh2_channel_direct_tcpip_ex", P, [P, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]),
    ("libssh2_channel_read_ex", ctypes.c_ssize_t, [P, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
    ("libssh2_channel_write_ex", ctypes.c_ssize_t, [P, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]),
    ("libssh2_channel_send_eof", ctypes.c_int, [P]),
    ("libssh2_channel_eof", ctypes.c_int, [P]),
]:
    function = getattr(lib, name)
    function.restype = restype
    function.argtypes = argtypes


def last_error(session):
    message = ctypes.c_char_p()
    code = lib.libssh2_session_last_error(session, ctypes.byref(message), None, 0)
    return f"{(message.value or b'').decode(errors='replace')} (libssh2 error {code})"


def main():
    key, pubkey, gw_host, gw_port, gw_user, gw_host_key, builder_host, builder_port = sys.argv[1:]
    version = lib.libssh2_version(0).decode()
    if lib.libssh2_init(0) != 0:
        fail("libssh2_init", "failed")
    sock = socket.create_connection((gw_host, int(gw_port)), timeout=60)
    sock.settimeout(None)
    session = lib.libssh2_session_init_ex(None, None, None, None)
    if lib.libssh2_session_handshake(session, sock.fileno()) != 0:
        fail("key exchange with the gateway", last_error(session))
    length, kind = ctypes.c_size_t(), ctypes.c_int()
    shown = lib.libssh2_session_hostkey(session, ctypes.byref(length), ctypes.byref(kind))
    shown = ctypes.string_at(shown, length.value) if shown else b""
    if shown != base64.b64decode(gw_host_key.split()[1]):
        fail("the gateway's host key", f"not the pinned key {gw_host_key}")
    methods = [lib.libssh2_session_methods(session, i) or b"" for i in range(0, 4)]
    sys.stderr.write(f"libssh2 {version}: kex {methods[0].decode()}, host key {methods[1].decode()}, "
                     f"cipher {methods[2].decode()}; host key pinned\n")
    user = gw_user.encode()
    if lib.libssh2_userauth_publickey_fromfile_ex(session, user, len(user), pubkey.encode(), key.encode(), None):
        fail(f"public-key authentication to the gateway as {gw_user}", last_error(session))
    sys.stderr.write("libssh2: authenticated to the gateway\n")
    channel = lib.libssh2_channel_direct_tcpip_ex(session, builder_host.encode(), int(builder_port),
                                                  b"127.0.0.1", 0)
    if not channel:
        fail(f"direct-tcpip to {builder_host}:{builder_port}", last_error(session))
    sys.stderr.write(f"libssh2: direct-tcpip channel to {builder_host}:{builder_port} open\n")
    sys.stderr.flush()
    relay(session, channel, sock)


def relay(session, channel, sock):
    """Copies stdin to the channel and the channel to stdout until the builder's side ends."""
    lib.libssh2_session_set_blocking(session, 0)
    buffer = ctypes.create_string_buffer(32768)
    pending = b""
    stdin_open, eof_sent = True, False
    while True:
        while True:
            n = lib.libssh2_channel_read_ex(channel, 0, buffer, len(buffer))
            if n == EAGAIN or n == 0:
                break
            if n < 0:
                fail("reading from the builder's channel", last_error(session))
            data = buffer.raw[:n]
            while data:
                data = data[os.write(1, data):]
        if lib.libssh2_channel_eof(channel):
            return
        while pending:
            n = lib.libssh2_channel_write_ex(channel, 0, pending, len(pending))
            if n == EAGAIN:
                break
            if n < 0:
                fail("writing to the builder's channel", last_error(session))
            pending = pending[n:]
        if not stdin_open and not pending and not eof_sent:
            rc = lib.libssh2_channel_send_eof(channel)
            if rc == 0:
                eof_sent = True
            elif rc != EAGAIN:
                fail("sending EOF to the builder", last_error(session))
        readable = [sock]
        writable = [sock] if lib.libssh2_session_block_directions(session) & BLOCK_OUTBOUND else []
        if stdin_open and not pending:
            readable.append(0)
        # The timeout only guards against a wake-up libssh2 did not ask for.
        ready, _, _ = select.select(readable, writable, [], 1.0)
        if 0 in ready:
            data = os.read(0, 32768)
            if data:
                pending += data
            else:
                stdin_open = False


if __name__ == "__main__":
    main()
