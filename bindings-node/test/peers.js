// @ts-check
// Real peers for the Node tests: an OpenSSH sshd playing the builder, TigerVNC playing the
// builder's screen. Each test starts its own and stops it by PID.
'use strict'

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const { ra } = require('./package')
/** @import * as T from '..' */

let nextPort = 0

/**
 * A free loopback port for a server this test starts, and no other test's: outside the kernel's
 * ephemeral range (no outgoing connection can hold it by the time the server binds), and claimed
 * with a file naming this process under $TMPDIR/remote-access-test-ports, as the Rust and Python
 * tests do, so that no other test process (node --test runs files in parallel) is given it while
 * this one lives.
 * @returns {Promise<number>}
 */
async function freePort() {
  const [low, high] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
  const candidates = []
  for (let port = 10000; port < 65536; port++) if (port < low || port > high) candidates.push(port)
  const claims = path.join(os.tmpdir(), 'remote-access-test-ports')
  fs.mkdirSync(claims, { recursive: true })
  const start = process.pid * 7919
  for (let i = 0; i < candidates.length; i++) {
    nextPort += 1
    const port = candidates[(start + nextPort) % candidates.length]
    if (claim(path.join(claims, String(port))) && (await bindable(port))) return port
  }
  throw new Error('no free loopback port outside the ephemeral range')
}

/**
 * Claims a port by creating `file` with this PID in it; clears (without claiming) a claim whose
 * process has gone.
 * @param {string} file
 */
function claim(file) {
  try {
    fs.writeFileSync(file, String(process.pid), { flag: 'wx' })
    return true
  } catch {
    let owner = ''
    try {
      owner = fs.readFileSync(file, 'utf8').trim()
    } catch {}
    // An empty file is a claim being written: it is some live process's.
    if (owner && owner !== String(process.pid) && !fs.existsSync(path.join('/proc', owner))) fs.rmSync(file, { force: true })
    return false
  }
}

/**
 * @param {number} port
 * @returns {Promise<boolean>}
 */
function bindable(port) {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
  })
}

/**
 * Whether a process of group `pgid` holds a listening IPv4 TCP socket on `port`. A successful
 * connect proves less: when another program took the port between `freePort()` and the server's
 * bind, it answers in our server's place. The group counts, not only its leader, because a
 * server's helpers (Xtigervnc's xkbcomp) inherit its sockets.
 * @param {number} pgid
 * @param {number} port
 */
function listensOn(pgid, port) {
  // Rows of /proc/net/tcp: "sl local_address rem_address st ... inode", where local_address is
  // HEXADDR:HEXPORT and st 0A is LISTEN.
  const suffix = ':' + port.toString(16).toUpperCase().padStart(4, '0')
  const sockets = new Set(
    fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)
      .map((row) => row.trim().split(/\s+/))
      .filter((f) => f.length > 9 && f[1].endsWith(suffix) && f[3] === '0A')
      .map((f) => `socket:[${f[9]}]`),
  )
  if (sockets.size === 0) return false
  for (const pid of groupPids(pgid)) {
    let fds
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`)
    } catch {
      continue // exited meanwhile
    }
    for (const fd of fds) {
      try {
        if (sockets.has(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))) return true
      } catch {
        // closed meanwhile
      }
    }
  }
  return false
}

/**
 * The processes of group `pgid` (field 5 of /proc/<pid>/stat, after the parenthesised name,
 * which may itself hold spaces and parentheses).
 * @param {number} pgid
 * @returns {number[]}
 */
function groupPids(pgid) {
  /** @type {number[]} */
  const pids = []
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let stat
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
    } catch {
      continue
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/)
    if (Number(fields[2]) === pgid) pids.push(Number(entry))
  }
  return pids
}

/**
 * Waits until `child` (or its process group) itself listens on the IPv4 `port`; false when it
 * exits first (these servers all exit when they cannot bind) or takes longer than 20 s (a busy
 * machine is slow, but they bind within 0.1 s).
 * @param {number} port
 * @param {import('node:child_process').ChildProcess} child
 * @returns {Promise<boolean>}
 */
async function waitListening(port, child) {
  const deadline = Date.now() + 20_000
  while (Date.now() < deadline) {
    if (child.pid !== undefined && listensOn(child.pid, port)) return true
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return false
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return false
}

/**
 * SIGTERM to the child's process group, then SIGKILL after 5 s: Xtigervnc's xkbcomp child
 * inherits the listening socket and would keep the port otherwise.
 * @param {import('node:child_process').ChildProcess} child
 */
async function stop(child) {
  const { pid } = child
  if (pid === undefined) return // never started (spawn failed)
  /** @param {NodeJS.Signals} signal */
  const signalGroup = (signal) => {
    try {
      process.kill(-pid, signal)
    } catch {
      // the group is gone already
    }
  }
  const exited = child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', resolve))
  signalGroup('SIGTERM')
  const timer = setTimeout(() => signalGroup('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

/**
 * Starts `command` (`argsFor(port)`) on a free loopback port until it listens there itself; on
 * another port when it does not (a few tries), because another program may take the port between
 * choosing and binding it. The child leads its own process group (`detached`), so `stop` ends
 * the whole group, helpers included.
 * @param {string} command
 * @param {(port: number) => string[]} argsFor
 * @returns {Promise<{port: number, child: import('node:child_process').ChildProcess}>}
 */
async function listening(command, argsFor) {
  /** @type {string} */
  let last = 'no try'
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    const child = spawn(command, argsFor(port), { stdio: 'ignore', detached: true })
    child.on('error', (err) => (last = err.message)) // e.g. ENOENT; `exit` does not follow then
    if (await waitListening(port, child)) return { port, child }
    await stop(child)
    if (child.pid === undefined) last = 'could not spawn it'
    else if (child.exitCode !== null) last = `exit status ${child.exitCode}`
  }
  throw new Error(`${command} did not start (last try: ${last})`)
}

/**
 * A real sshd on a loopback port: the build's machine. `extra` lines go at the end of its
 * sshd_config; `certify` (given its host public key) returns its host certificate.
 * @param {{extra?: string, certify?: (hostKey: string) => string}} [options]
 * @returns {Promise<{dir: string, port: number, hostKey: string, buildDir: string, authorize: (line: string) => void, builder: (extra?: Partial<T.Builder>) => T.Builder, stop: () => Promise<void>}>}
 */
async function startSshd({ extra = '', certify } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-sshd-'))
  fs.mkdirSync('/run/sshd', { recursive: true })
  const buildDir = path.join(dir, 'build dir')
  fs.mkdirSync(buildDir)
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'host_ed25519')])
  fs.writeFileSync(path.join(dir, 'authorized_keys'), '')
  fs.writeFileSync(
    path.join(dir, 'sshd_config'),
    `ListenAddress 127.0.0.1\nHostKey ${dir}/host_ed25519\nPidFile ${dir}/sshd.pid\n` +
      `AuthorizedKeysFile ${dir}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n` +
      'KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n' +
      `AllowTcpForwarding yes\nSetEnv "FCI_BUILD_DIR=${buildDir}"\n` + extra,
  )
  const hostKey = fs.readFileSync(path.join(dir, 'host_ed25519.pub'), 'utf8').split(/\s+/).slice(0, 2).join(' ')
  if (certify) {
    fs.writeFileSync(path.join(dir, 'host_ed25519-cert.pub'), certify(hostKey) + '\n')
    fs.appendFileSync(path.join(dir, 'sshd_config'), `HostCertificate ${dir}/host_ed25519-cert.pub\n`)
  }
  const { port, child } = await listening('/usr/sbin/sshd', (port) =>
    ['-D', '-e', '-f', path.join(dir, 'sshd_config'), '-p', String(port)])
  return {
    dir,
    port,
    hostKey,
    buildDir,
    authorize: (line) => fs.appendFileSync(path.join(dir, 'authorized_keys'), line + '\n'),
    builder: (extra = {}) => ({ address: '127.0.0.1', sshPort: port, user: 'root', hostKey, ...extra }),
    stop: async () => {
      await stop(child)
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * TigerVNC's Xtigervnc with its own password (the builder's, which users never see).
 * @returns {Promise<{port: number, password: string, width: number, height: number, stop: () => Promise<void>}>}
 */
async function startTigervnc() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-vnc-'))
  const password = 'builder9'
  fs.writeFileSync(path.join(dir, 'passwd'), ra.vncPasswordFile(password))
  // `-displayfd` makes it pick a free display itself, taking the display's lock file atomically,
  // so no other X server can race it to a number chosen here; only its RFB port matters, so the
  // number it writes to fd 1 goes nowhere.
  const { port, child } = await listening('Xtigervnc', (port) =>
    ['-displayfd', '1', '-geometry', '800x600', '-depth', '24', '-rfbport', String(port), '-localhost=1',
      '-SecurityTypes', 'VncAuth', '-PasswordFile', path.join(dir, 'passwd'), '-nolisten', 'tcp'])
  return {
    port, password, width: 800, height: 600,
    stop: async () => {
      await stop(child)
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * The next event of `kind` from an async iterator of events, skipping others.
 * @template {T.EventKind} K
 * @param {AsyncIterator<T.Event>} events
 * @param {K} kind
 * @returns {Promise<T.Event & { kind: K }>}
 */
async function nextEvent(events, kind, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const left = deadline - Date.now()
    /** @type {NodeJS.Timeout | undefined} */
    let timer
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${kind} event within ${timeoutMs} ms`)), Math.max(left, 0))
    })
    const result = await Promise.race([events.next(), timeout]).finally(() => clearTimeout(timer))
    const { value, done } = /** @type {IteratorResult<T.Event>} */ (result)
    if (done) throw new Error(`the subscription ended before a ${kind} event`)
    if (value.kind === kind) return /** @type {T.Event & { kind: K }} */ (value)
  }
}

/**
 * Runs `sh script args...`; resolves to [exit code, stdout, stderr].
 * @param {string} script
 * @param {string[]} args
 * @returns {Promise<[number, string, string]>}
 */
function runScript(script, ...args) {
  return new Promise((resolve) => {
    const child = spawn('sh', [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('close', (code) => resolve([code ?? -1, out, err]))
  })
}

/**
 * A real redis-server on a free loopback port, in memory only.
 * @returns {Promise<{url: string, stop: () => Promise<void>}>}
 */
async function startRedis() {
  const { port, child } = await listening('redis-server', (port) =>
    ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no'])
  return { url: `redis://127.0.0.1:${port}/0`, stop: () => stop(child) }
}

/**
 * A real redis-server serving only TLS on a free loopback port, with `server`'s certificate,
 * refusing clients without a certificate signed by `clientCa` (PEM).
 * @param {{certificatePem: string, privateKeyPem: () => string}} server
 * @param {string} clientCa
 * @returns {Promise<{url: string, stop: () => Promise<void>}>}
 */
async function startRedisTls(server, clientCa) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-redis-tls-'))
  const file = (/** @type {string} */ name, /** @type {string} */ text) => {
    fs.writeFileSync(path.join(dir, name), text, { mode: 0o600 })
    return path.join(dir, name)
  }
  const [cert, key, ca] = [file('server.pem', server.certificatePem), file('server.key', server.privateKeyPem()), file('clients-ca.pem', clientCa)]
  const { port, child } = await listening('redis-server', (port) => [
    '--bind', '127.0.0.1', '--port', '0', '--tls-port', String(port), '--tls-auth-clients', 'yes',
    '--tls-cert-file', cert, '--tls-key-file', key, '--tls-ca-cert-file', ca, '--save', '', '--appendonly', 'no',
  ])
  return {
    url: `rediss://127.0.0.1:${port}/0`,
    stop: async () => {
      await stop(child)
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

module.exports = { freePort, startSshd, startTigervnc, startRedis, startRedisTls, nextEvent, runScript, stop }
