// @ts-check
// The library's logs reach Node: `onLog` gets a refused login's reason from a real gateway
// refusing the real `ssh` client's wrong key (the reason users are never told); the level
// option filters; `DEBUG=remote-access*` prints the records to stderr by namespace.
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { ra, dir, internals } = require('./package')
/** @import * as T from '..' */

/**
 * Waits until `records` holds one that `want` accepts.
 * @param {T.LogRecord[]} records
 * @param {(record: T.LogRecord) => boolean} want
 */
async function logged(records, want, timeoutMs = 20_000) {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline;) {
    const found = records.find(want)
    if (found) return found
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  assert.fail(`not logged; got: ${JSON.stringify(records, null, 1)}`)
}

test("a refused SSH login's reason arrives in onLog; a higher level filters it out", async () => {
  /** @type {T.LogRecord[]} */
  const info = []
  /** @type {T.LogRecord[]} */
  const warnings = []
  const listener = ra.onLog((record) => info.push(record))
  const warnListener = ra.onLog((record) => warnings.push(record), { level: 'warn' })
  assert.equal(listener.level, 'info')
  const authority = new ra.Authority()
  const running = await new ra.Gateway(authority, { hostKey: ra.HostKey.generate(), authRejectionDelayMs: 50 }).start('127.0.0.1:0')
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-logs-'))
  try {
    const credentials = await authority.issue('b-logs', { trigger: 'manual', remoteAccessEnabled: true, builder: { address: '127.0.0.1' } })
    // Another key than the build's, as a user with the wrong file would offer it.
    const wrongKey = path.join(scratch, 'id_ed25519')
    fs.writeFileSync(wrongKey, ra.HostKey.generate().toOpenssh(), { mode: 0o600 })
    const ssh = await new Promise((resolve) => {
      const child = spawn('ssh', ['-F', '/dev/null', '-i', wrongKey, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
        '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-p', String(running.port),
        `${credentials.username}@127.0.0.1`, 'true'], { stdio: 'ignore' })
      child.on('close', resolve)
    })
    assert.equal(ssh, 255)
    const refused = await logged(info, (record) => record.message === 'authentication refused')
    assert.equal(refused.level, 'info')
    assert.equal(refused.target, 'remote_access_core::gateway::ssh::handler')
    assert.equal(refused.fields.user, credentials.username)
    assert.match(refused.fields.err, /access denied: key does not belong to this user/)
    assert.match(refused.fields.peer, /^127\.0\.0\.1:\d+$/)
    assert.ok(!Number.isNaN(Date.parse(refused.at)))
    assert.equal(internals.namespaceOf(refused.target), 'remote-access:gateway:ssh:handler')
    // Field names in the package's one casing (`build_id` in Rust).
    const admitted = info.flatMap((record) => Object.keys(record.fields))
    assert.deepEqual(admitted.filter((key) => key.includes('_')), [])
    assert.ok(!warnings.some((record) => record.level === 'info'), JSON.stringify(warnings))
  } finally {
    listener.close()
    warnListener.close()
    await running.stop()
    fs.rmSync(scratch, { recursive: true, force: true })
  }
  // Closed: nothing more arrives.
  const count = info.length
  await new ra.Gateway(new ra.Authority()).start('127.0.0.1:0').then((r) => r.stop()) // logs a warning
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(info.length, count)
  assert.throws(() => ra.onLog(() => {}, /** @type {any} */ ({ level: 'verbose' })), { code: 'invalid_input', what: 'level' })
})

/**
 * Makes a gateway without a host key (the library warns that it generated one) in a child Node
 * with `DEBUG` set; returns its stderr.
 * @param {string | undefined} debug
 */
function stderrWith(debug) {
  const env = { ...process.env }
  delete env.DEBUG
  if (debug !== undefined) env.DEBUG = debug
  const result = spawnSync(process.execPath, ['-e', `
    const ra = require(${JSON.stringify(dir)})
    new ra.Gateway(new ra.Authority())
    setTimeout(() => {}, 200)
  `], { env, encoding: 'utf8' })
  assert.equal(result.status, 0, result.stderr)
  return result.stderr
}

test('DEBUG=remote-access* prints the records to stderr, selected by namespace', () => {
  const warning = /^\S+ remote-access:gateway WARN no host key given: generated one; users' pinned keys break at restart$/m
  assert.match(stderrWith('remote-access*'), warning)
  assert.match(stderrWith('remote-access:gateway'), warning)
  assert.match(stderrWith('other,remote-access:*'), warning)
  assert.equal(stderrWith(undefined), '')
  assert.equal(stderrWith('express:*'), '')
  assert.equal(stderrWith('remote-access:authority*'), '')
  assert.equal(stderrWith('remote-access*,-remote-access:gateway'), '')
})
