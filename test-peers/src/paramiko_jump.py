"""ProxyJump with paramiko: log in to the gateway, open a direct-tcpip channel to the builder,
run a second SSH session over that channel, run one command on the builder and pass on its
output and exit status.

Usage: python paramiko_jump.py KEY KNOWN_HOSTS GW_HOST GW_PORT GW_USER BUILDER_HOST BUILDER_PORT
       BUILDER_USER COMMAND

Both host keys are pinned through KNOWN_HOSTS (`[host]:port key` lines); an unknown or changed
key is refused (paramiko's default RejectPolicy). Any failure is printed to stderr, naming the
hop it happened on, with exit status 255 (as OpenSSH's client does).
"""

import sys

import paramiko


def connect(hop, host, port, user, key, known_hosts, sock=None):
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host,
            port=port,
            username=user,
            pkey=key,
            sock=sock,
            allow_agent=False,
            look_for_keys=False,
            timeout=60,
            banner_timeout=60,
            auth_timeout=60,
        )
    except Exception as err:  # the hop and the error, for the test's failure message
        sys.stderr.write(f"paramiko: {hop} {host}:{port} as {user}: {type(err).__name__}: {err}\n")
        sys.exit(255)
    transport = client.get_transport()
    sys.stderr.write(f"paramiko: {hop}: {transport.remote_version}, cipher {transport.remote_cipher}, "
                     f"MAC {transport.remote_mac}\n")
    return client


def main():
    (key_file, known_hosts, gw_host, gw_port, gw_user,
     builder_host, builder_port, builder_user, command) = sys.argv[1:]
    sys.stderr.write(f"paramiko {paramiko.__version__}\n")
    key = paramiko.Ed25519Key.from_private_key_file(key_file)
    gateway = connect("gateway", gw_host, int(gw_port), gw_user, key, known_hosts)
    try:
        channel = gateway.get_transport().open_channel(
            "direct-tcpip", (builder_host, int(builder_port)), ("127.0.0.1", 0), timeout=60
        )
    except Exception as err:
        sys.stderr.write(f"paramiko: direct-tcpip to {builder_host}:{builder_port}: "
                         f"{type(err).__name__}: {err}\n")
        sys.exit(255)
    builder = connect("builder", builder_host, int(builder_port), builder_user, key, known_hosts,
                      sock=channel)
    _, stdout, stderr = builder.exec_command(command, timeout=600)
    out = stdout.read()
    err = stderr.read()
    status = stdout.channel.recv_exit_status()
    sys.stdout.buffer.write(out)
    sys.stderr.buffer.write(err)
    builder.close()
    gateway.close()
    sys.exit(status)


if __name__ == "__main__":
    main()
