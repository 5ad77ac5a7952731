// @ts-check
// Real peers for the Node tests: an OpenSSH sshd playing the builder, TigerVNC playing the
// builder's screen. Each test starts its own and stops it by PID.
'use strict'

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const ra = require('..')

/** @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

/**
 * @param {number} port
 * @param {import('node:child_process').ChildProcess} child
 */
async function waitForPort(port, child) {
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}`)
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy()
        resolve(true)
      })
      socket.on('error', () => resolve(false))
    })
    if (up) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`nothing listens on port ${port}`)
}

/** @param {import('node:child_process').ChildProcess} child */
async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

/**
 * Starts `command` (`argsFor(port)`) on a free loopback port, retrying on another port when a
 * race takes it; resolves once it accepts connections.
 * @param {string} command
 * @param {(port: number) => string[]} argsFor
 * @returns {Promise<{port: number, child: import('node:child_process').ChildProcess}>}
 */
async function listening(command, argsFor) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    const child = spawn(command, argsFor(port), { stdio: 'ignore' })
    try {
      await waitForPort(port, child)
      return { port, child }
    } catch {
      await stop(child)
    }
  }
  throw new Error(`${command} did not start`)
}

/**
 * A real sshd on a loopback port: the build's machine.
 * @returns {Promise<{dir: string, port: number, hostKey: string, buildDir: string, authorize: (line: string) => void, builder: (extra?: Partial<ra.Builder>) => ra.Builder, stop: () => Promise<void>}>}
 */
async function startSshd() {
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
      `AllowTcpForwarding yes\nSetEnv "FCI_BUILD_DIR=${buildDir}"\n`,
  )
  const hostKey = fs.readFileSync(path.join(dir, 'host_ed25519.pub'), 'utf8').split(/\s+/).slice(0, 2).join(' ')
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
  // The display number follows the port, so a retry on another port gets another display.
  const { port, child } = await listening('Xtigervnc', (port) =>
    [`:${2400 + (port % 2000)}`, '-geometry', '800x600', '-depth', '24', '-rfbport', String(port), '-localhost=1',
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
 * @param {AsyncIterator<ra.Event>} events
 * @param {string} kind
 * @returns {Promise<ra.Event>}
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
    const { value, done } = /** @type {IteratorResult<ra.Event>} */ (result)
    if (done) throw new Error(`the subscription ended before a ${kind} event`)
    if (value.kind === kind) return value
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

module.exports = { freePort, startSshd, startTigervnc, startRedis, nextEvent, runScript, stop }
