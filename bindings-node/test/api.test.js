// @ts-check
// The Node API without a network peer: a `code` for every core error kind, secrets kept out of
// util.inspect / JSON.stringify / errors, durations and the manual clock, iteration and close.
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const util = require('node:util')

const { ra, internals } = require('./package')
/** @import * as T from '..' */
const { freePort, nextEvent } = require('./peers')

/**
 * A build someone started by hand, with remote access: what every issue() must state.
 * @type {{ trigger: 'manual', remoteAccessEnabled: true }}
 */
const MANUAL = { trigger: 'manual', remoteAccessEnabled: true }

/**
 * Asserts that `action` rejects or throws an Error with `code`; returns it.
 * @param {() => unknown} action
 * @param {string} code
 * @returns {Promise<Error & {code?: string, reason?: string, buildId?: string, what?: string, problem?: string, endReasonCode?: string, host?: string}>}
 */
async function rejectsWith(action, code) {
  try {
    await action()
  } catch (err) {
    assert.ok(err instanceof ra.RemoteAccessError, `not a RemoteAccessError: ${err}`)
    assert.equal(/** @type {{code?: string}} */ (err).code, code, String(err))
    return err
  }
  assert.fail(`no error; expected ${code}`)
}

test('every core error kind rejects with its code', async () => {
  const authority = new ra.Authority({ vncPorts: [await freePort()] })
  const webhook = await rejectsWith(() => authority.issue('b-webhook', { trigger: 'webhook', remoteAccessEnabled: true }), 'not_manually_triggered')
  assert.match(webhook.message, /b-webhook/)
  assert.equal(webhook.buildId, 'b-webhook')
  const off = await rejectsWith(() => authority.issue('b-off', { trigger: 'manual', remoteAccessEnabled: false }), 'remote_access_disabled')
  assert.equal(off.buildId, 'b-off')
  const invalid = await rejectsWith(() => authority.issue('no spaces allowed', MANUAL), 'invalid_input')
  assert.equal(invalid.what, 'build id')
  assert.ok(invalid.problem)
  // @ts-expect-error not a trigger: refused by the types, and at run time
  await rejectsWith(() => authority.issue('b-trigger', { trigger: 'sometimes', remoteAccessEnabled: true }), 'invalid_input')
  await rejectsWith(() => authority.issue('b-bad', { ...MANUAL, builder: { address: 'builder.example.com' } }), 'invalid_input')
  await rejectsWith(() => new ra.Authority({ policy: { graceMs: -5 } }), 'invalid_input')

  await authority.issue('b-1', MANUAL)
  assert.equal((await rejectsWith(() => authority.issue('b-1', MANUAL), 'build_exists')).buildId, 'b-1')
  assert.equal((await rejectsWith(() => authority.session('b-nope'), 'unknown_build')).buildId, 'b-nope')
  await authority.revoke('b-1', 'test')
  const ended = await rejectsWith(() => authority.connected('b-1', 'ssh'), 'session_ended')
  assert.match(ended.message, /revoked: test/)
  assert.equal(ended.buildId, 'b-1')
  assert.match(ended.reason ?? '', /test/)
  assert.equal(ended.endReasonCode, 'revoked')
  const denied = await rejectsWith(
    () => authority.verifySsh('ra-nobody', ra.HostKey.generate().publicKey),
    'access_denied',
  )
  assert.equal(denied.reason, 'unknown_user')

  const vnc = { address: '127.0.0.1', vncPort: 5900 }
  await authority.issue('b-vnc-1', { ...MANUAL, builder: vnc, builderVncPassword: 'pw' })
  await rejectsWith(() => authority.issue('b-vnc-2', { ...MANUAL, builder: vnc, builderVncPassword: 'pw' }), 'no_capacity')
  await rejectsWith(() => ra.HostKey.fromOpenssh('not a key'), 'invalid_input')
  // Numbers out of range are refused, not wrapped or truncated.
  await rejectsWith(() => new ra.Gateway(authority, { maxAuthAttempts: -1 }), 'invalid_input')
  await rejectsWith(() => authority.issue('b-port', { ...MANUAL, builder: { address: '127.0.0.1', sshPort: 22.7 } }), 'invalid_input')
  await rejectsWith(() => new ra.Authority({ vncPorts: [2 ** 32 + 5900] }), 'invalid_input')

  // An agent pinned to another key than the gateway's: refused, never retried.
  const agentBuild = await authority.issue('b-agent', { ...MANUAL, builder: { address: '127.0.0.1', reverseTunnel: true } })
  const gateway = new ra.Gateway(authority)
  const running = await gateway.start('127.0.0.1:0')
  try {
    const agent = ra.runAgent({
      gateway: `127.0.0.1:${running.port}`,
      gatewayHostKey: ra.HostKey.generate().publicKey,
      username: agentBuild.agentUsername ?? '',
      privateKey: agentBuild.agentPrivateKeyOpenssh() ?? '',
    })
    const mismatch = await rejectsWith(() => agent.done(), 'host_key_mismatch')
    assert.match(mismatch.host ?? '', /127\.0\.0\.1/)
    // Network errors carry code `io` and the cause chain in the message (here: the port is taken).
    const io = await rejectsWith(() => gateway.start(`127.0.0.1:${running.port}`), 'io')
    assert.match(io.message, /network error: .*address/i)
  } finally {
    await running.stop()
  }
})

test('errors that cannot be caused from Node map to their codes', () => {
  // The in-memory store cannot fail, compare-and-swap gives up only under heavy contention, no
  // task panics and key generation does not fail on a working machine: the mapping is checked
  // on core errors built for the test.
  for (const code of ['store_unavailable', 'contention', 'internal', 'key_material']) {
    const err = internals.native._errorForTest(code)
    assert.ok(err instanceof ra.RemoteAccessError)
    assert.equal(err.code, code)
  }
  const unavailable = internals.native._errorForTest('store_unavailable')
  assert.match(unavailable.message, /unreachable \(test\): connection refused/)
  // The causes the message lists are the error's cause chain too.
  assert.equal(unavailable.cause?.message, 'connection refused')
})

test('secrets stay out of util.inspect, JSON.stringify and errors', async () => {
  const authority = new ra.Authority({ vncPorts: [await freePort(), await freePort()] })
  /** @type {T.Event[]} */
  const events = []
  const listener = authority.onEvent((event) => events.push(event))
  const credentials = await authority.issue('b-secret', { ...MANUAL,
    builder: { address: '127.0.0.1', vncPort: 5900, reverseTunnel: true },
    builderVncPassword: 'builderpw',
  })
  // Without a supplied one, the builder's VNC password is generated for the build.
  const generated = await authority.issue('b-secret-gen', { ...MANUAL, builder: { address: '127.0.0.1', vncPort: 5900 } })
  const builderPassword = generated.builderVncPassword() ?? ''
  assert.match(builderPassword, /^[A-Za-z0-9]{8}$/)
  assert.equal(credentials.builderVncPassword(), 'builderpw')
  const key = credentials.privateKeyOpenssh()
  const agentKey = credentials.agentPrivateKeyOpenssh() ?? ''
  const password = credentials.vncPassword()
  assert.match(key, /^-----BEGIN OPENSSH PRIVATE KEY-----/)
  assert.match(agentKey, /^-----BEGIN OPENSSH PRIVATE KEY-----/)
  assert.equal(password.length, 8)
  const hostKey = ra.HostKey.generate()
  const session = await authority.session('b-secret')
  const info = new ra.ConnectionInfo(credentials, session, hostKey, { gatewayHost: 'gw.example', gatewayPort: 2222 })
  const denied = await rejectsWith(() => authority.verifyVnc('b-secret', password.split('').reverse().join('') + 'x'), 'access_denied')
  await new Promise((resolve) => setTimeout(resolve, 50))
  listener.close()
  const texts = [
    util.inspect(credentials, { showHidden: true, depth: 5 }),
    util.inspect(generated, { showHidden: true, depth: 5 }),
    JSON.stringify(generated),
    util.inspect(hostKey, { showHidden: true }),
    util.inspect(session),
    JSON.stringify({ credentials, hostKey, session, info }),
    String(denied),
    String(denied.stack),
    JSON.stringify(events),
  ]
  assert.ok(events.length > 0)
  for (const secret of [key, agentKey, password, 'builderpw', builderPassword, hostKey.toOpenssh()]) {
    const body = secret.includes('\n') ? secret.trim().split('\n')[1] : secret
    for (const text of texts) assert.ok(!text.includes(body), `a secret in: ${text.slice(0, 200)}`)
  }
  // JSON of the public objects is what a web UI needs.
  assert.deepEqual(JSON.parse(JSON.stringify(credentials)), {
    buildId: 'b-secret', username: credentials.username, fingerprint: credentials.fingerprint,
    agentUsername: credentials.agentUsername,
  })
  // camelCase keys, like every toJSON() of the package.
  const json = JSON.parse(JSON.stringify(info))
  assert.deepEqual(json, info.toJSON())
  assert.equal(json.buildId, 'b-secret')
  assert.equal(json.gatewayPort, 2222)
  assert.equal(json.gatewayUser, credentials.username)
  assert.equal(json.gatewayHostKeyFingerprint, hostKey.fingerprint)
  assert.ok(Object.keys(json).every((key) => !key.includes('_')), Object.keys(json).join(', '))
  // The explicit calls are the way to the secrets.
  assert.match(info.posixScript(credentials), /BEGIN OPENSSH PRIVATE KEY/)
  assert.ok((info.vncInstructions(credentials) ?? '').includes(password))
})

test('a secret argument of the wrong type is refused without being quoted', async () => {
  // napi's own conversion error quotes the value it could not convert; secrets must not be.
  const marker = 'SECRET-7f3a'
  const wrong = [Buffer.from(marker), { key: marker }, [marker], 1234567]
  const authority = new ra.Authority()
  const agent = { gateway: '127.0.0.1:1', gatewayHostKey: 'ssh-ed25519 AAAA', username: 'u' }
  for (const value of wrong) {
    /** @type {any} */
    const v = value
    const calls = [
      () => ra.HostKey.fromOpenssh(v),
      () => ra.TlsIdentity.fromPem(ra.TlsIdentity.generate(['gw.example']).certificatePem, v),
      () => ra.vncPasswordFile(v),
      () => ra.vncAuthResponse(v, Buffer.alloc(16)),
      () => ra.runAgent({ ...agent, privateKey: v }),
      () => authority.issue(`b-wrong-${wrong.indexOf(value)}`, { ...MANUAL, builderVncPassword: v }),
      () => authority.verifyVnc('b-any', v),
    ]
    for (const call of calls) {
      const err = await rejectsWith(call, 'invalid_input')
      assert.match(err.message, /must be a string, not a value of type (object|number)/)
      for (const text of [err.message, String(err.stack), util.inspect(err)]) {
        assert.ok(!text.includes(marker) && !text.includes('1234567'), text)
      }
    }
  }
})

test('no callback runs after close(), even for events already queued for the JS thread', async () => {
  const authority = new ra.Authority()
  let closed = false
  let after = 0
  const listener = authority.onEvent(() => {
    if (closed) after++
    closed = true
    listener.close()
  })
  const issued = Array.from({ length: 200 }, (_, i) => authority.issue(`b-queued-${i}`, MANUAL))
  // Keep the JS thread busy while the runtime issues: the events queue up for it.
  for (const until = Date.now() + 300; Date.now() < until;);
  await Promise.all(issued)
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.ok(closed)
  assert.equal(after, 0)
})

test('tryNext and closed; the authority and gateway getters; gateway stats count connections', async () => {
  const authority = new ra.Authority({ tombstoneRetentionMs: 60_000 })
  assert.equal(authority.tombstoneRetentionMs, 60_000)
  const subscription = authority.subscribe()
  assert.equal(subscription.tryNext(), null)
  await authority.issue('b-try', MANUAL)
  assert.equal(subscription.tryNext()?.kind, 'issued')
  assert.equal(subscription.tryNext(), null)
  assert.equal(subscription.closed, false)
  subscription.close()
  assert.equal(subscription.closed, true)

  await rejectsWith(() => new ra.Gateway(authority, { failuresBeforeBackoff: 0 }), 'invalid_input')
  await rejectsWith(() => new ra.Gateway(authority, { maxConnectionsPerBuild: 0 }), 'invalid_input')
  await rejectsWith(() => new ra.Gateway(authority, { workerThreads: 100_000 }), 'invalid_input')
  // On worker threads of its own: the connection below is served and counted there.
  const gateway = new ra.Gateway(authority, {
    workerThreads: 2,
    failuresBeforeBackoff: 3,
    silentTimeoutMs: 2500,
    builderStallTimeoutMs: 30_000,
    maxUnauthenticatedPerPrefix: 64,
    maxConnectionsPerBuild: 4,
    maxChannelsPerBuild: 8,
  })
  assert.ok(gateway.authority instanceof ra.Authority)
  // The host key is an option like the others (Rust's GatewayOptions::host_key, Python's
  // host_key=); without it the gateway makes one.
  const pinned = ra.HostKey.generate()
  assert.equal(new ra.Gateway(authority, { hostKey: pinned }).hostKey.fingerprint, pinned.fingerprint)
  assert.notEqual(gateway.hostKey.fingerprint, pinned.fingerprint)
  const running = await gateway.start('127.0.0.1:0')
  const idle = {
    sshConnections: 0,
    vncConnections: 0,
    unauthenticated: 0,
    builderChannels: 0,
    addressesWithFailures: 0,
    evicted: 0,
    rateLimited: 0,
  }
  /** @param {(stats: T.GatewayStats) => boolean} want */
  const settle = async (want) => {
    for (let i = 0; i < 300 && !want(gateway.stats()); i++) await new Promise((resolve) => setTimeout(resolve, 20))
    return gateway.stats()
  }
  try {
    assert.deepEqual(gateway.stats(), idle)
    const socket = require('node:net').connect(running.port, '127.0.0.1')
    await new Promise((resolve) => socket.once('connect', resolve))
    const busy = await settle((s) => s.sshConnections === 1)
    assert.deepEqual(busy, { ...idle, sshConnections: 1, unauthenticated: 1 })
    socket.destroy()
    assert.deepEqual(await settle((s) => s.sshConnections === 0), idle)
  } finally {
    await running.stop()
  }
})

test('the SSH algorithms and the connection rate are gateway options', async () => {
  const authority = new ra.Authority()
  const refused = await rejectsWith(() => new ra.Gateway(authority, { ciphers: ['aes128-gcm'] }), 'invalid_input')
  assert.equal(refused.what, 'ciphers')
  assert.match(refused.message, /"aes128-gcm" is not supported/)
  assert.match(refused.message, /aes128-gcm@openssh\.com/)
  await rejectsWith(() => new ra.Gateway(authority, { newConnectionsPerSecond: 0 }), 'invalid_input')
  await rejectsWith(() => new ra.Gateway(authority, { newConnectionsBurst: 1.5 }), 'invalid_input')
  const gateway = new ra.Gateway(authority, {
    ciphers: ['aes128-gcm@openssh.com'],
    macs: ['hmac-sha2-256'],
    kexAlgorithms: ['curve25519-sha256'],
    newConnectionsPerSecond: 5,
    newConnectionsBurst: 10,
  })
  const running = await gateway.start('127.0.0.1:0')
  try {
    assert.equal(gateway.stats().rateLimited, 0)
  } finally {
    await running.stop()
  }
})

test('the manual clock drives the time rules; durations are milliseconds', async () => {
  const start = '2026-11-28T12:00:00Z'
  const clock = new ra.ManualClock(start)
  const authority = new ra.Authority({ policy: { graceMs: 20 * 60_000 } }, clock)
  assert.equal(authority.policy.graceMs, 20 * 60_000)
  const events = authority.subscribe()[Symbol.asyncIterator]()
  await authority.issue('b-clock', { ...MANUAL, startedAt: start })
  await authority.stepsCompleted('b-clock')
  const session = await authority.session('b-clock')
  assert.equal(session.phase, 'steps_completed')
  assert.equal(session.deadline, '2026-11-28T12:20:00Z')
  assert.equal(await authority.nextDeadline(), '2026-11-28T12:20:00Z')
  clock.advance(19 * 60_000)
  assert.equal(await authority.expireDue(), 0)
  clock.advance(61_000)
  assert.equal(await authority.expireDue(), 1)
  const expired = await nextEvent(events, 'expired')
  assert.equal(expired.at, '2026-11-28T12:20:01Z')
  assert.equal((await authority.session('b-clock')).isEnded, true)
  await rejectsWith(() => clock.advance(-1), 'invalid_input')
})

test('the deadline moves when the steps complete, and a user whose connection was lost may come back', async () => {
  const start = '2026-11-28T12:00:00Z'
  const policy = { graceMs: 20 * 60_000, maxBuildDurationMs: 2 * 3600_000, reconnectWindowMs: 120_000 }
  assert.equal(new ra.Authority().policy.reconnectWindowMs, 120_000)
  assert.equal(new ra.Authority({ policy: { reconnectWindowMs: 30_000 } }).policy.reconnectWindowMs, 30_000)
  await rejectsWith(() => new ra.Authority({ policy: { reconnectWindowMs: -1 } }), 'invalid_input')
  const clock = new ra.ManualClock(start)
  const authority = new ra.Authority({ policy }, clock)
  assert.equal(authority.policy.reconnectWindowMs, 120_000)
  const events = authority.subscribe()[Symbol.asyncIterator]()
  const hostKey = ra.HostKey.generate()
  const options = { gatewayHost: 'gw.example', gatewayPort: 2222 }
  const credentials = await authority.issue('b-truth', { ...MANUAL, startedAt: start, builder: { address: '10.0.3.7' } })

  // While the steps run: the deadline is the build's maximum, and the rule says so.
  let session = await authority.session('b-truth')
  assert.equal(session.deadline, '2026-11-28T14:00:00Z')
  assert.equal(session.maxEnd, '2026-11-28T14:00:00Z')
  assert.equal(session.reconnectBy, null)
  assert.match(session.accessRule, /20 minutes/)
  assert.match(session.accessRule, /14:00 UTC/)
  assert.equal(session.toJSON().policy.reconnectWindowMs, 120_000)
  assert.equal(session.toJSON().accessRule, session.accessRule)
  const info = await authority.connectionInfo('b-truth', hostKey, options)
  assert.ok(info instanceof ra.ConnectionInfo)
  assert.deepEqual(info.toJSON(), new ra.ConnectionInfo(credentials, session, hostKey, options).toJSON())
  let json = info.toJSON()
  assert.equal(json.phase, 'steps_running')
  assert.equal(json.deadline, '2026-11-28T14:00:00Z')
  assert.equal(json.maxEnd, '2026-11-28T14:00:00Z')
  assert.equal(json.grace, 1200) // seconds, as in the core's JSON
  assert.equal(json.reconnectWindow, 120)
  assert.equal(json.stepsCompletedAt, null)
  assert.equal(json.reconnectBy, null)
  assert.equal(json.endReason, null)
  assert.equal(json.accessRule, session.accessRule)
  assert.ok(!('accessEndsBy' in json))
  assert.match(info.posixScript(credentials), /BEGIN OPENSSH PRIVATE KEY/)

  // The steps complete 10 minutes in: the deadline moves to 12:30, and an event says so.
  const first = await authority.connected('b-truth', 'ssh')
  clock.advance(10 * 60_000)
  await authority.stepsCompleted('b-truth')
  const changed = await nextEvent(events, 'deadline_changed')
  assert.equal(changed.deadline, '2026-11-28T12:30:00Z')
  assert.equal(changed.at, '2026-11-28T12:10:00Z')
  assert.ok(!('connectionId' in changed))
  session = await authority.session('b-truth')
  info.refresh(session)
  json = info.toJSON()
  assert.equal(json.phase, 'steps_completed')
  assert.equal(json.deadline, '2026-11-28T12:30:00Z')
  assert.equal(json.stepsCompletedAt, '2026-11-28T12:10:00Z')
  assert.equal(json.maxEnd, '2026-11-28T14:00:00Z')
  assert.equal(json.accessRule, session.accessRule)
  assert.match(json.accessRule, /12:30 UTC/)

  // The network loses the user's only connection: not a logout, the reconnect window opens.
  clock.advance(60_000)
  await first.lost()
  const dropped = await nextEvent(events, 'dropped')
  assert.equal(dropped.connectionId, first.id)
  assert.equal(dropped.protocol, 'ssh')
  session = await authority.session('b-truth')
  assert.equal(session.reconnectBy, '2026-11-28T12:13:00Z')
  assert.equal(session.isEnded, false)
  assert.match(session.accessRule, /12:13 UTC/)
  assert.equal((await authority.connectionInfo('b-truth', hostKey, options)).toJSON().reconnectBy, '2026-11-28T12:13:00Z')
  await first.disconnect() // only the first report counts
  assert.equal((await authority.session('b-truth')).reconnectBy, '2026-11-28T12:13:00Z')

  // Back in time: the wait is over. Lost again, and nobody comes back within 2 minutes.
  clock.advance(30_000)
  const second = await authority.connected('b-truth', 'ssh')
  assert.equal((await authority.session('b-truth')).reconnectBy, null)
  await second.lost()
  await nextEvent(events, 'dropped')
  assert.equal(await authority.nextDeadline(), '2026-11-28T12:13:30Z')
  clock.advance(119_000)
  assert.equal(await authority.expireDue(), 0)
  clock.advance(1000)
  assert.equal(await authority.expireDue(), 1)
  const ended = await nextEvent(events, 'connection_lost')
  assert.equal(ended.at, '2026-11-28T12:13:30Z')
  await nextEvent(events, 'finish_build')
  session = await authority.session('b-truth')
  assert.equal(session.endReasonCode, 'connection_lost')
  assert.equal(session.reconnectBy, null)
  info.refresh(session)
  json = info.toJSON()
  assert.equal(json.phase, 'ended')
  assert.equal(json.endReason, 'connection_lost')
  assert.equal(json.reconnectBy, null)
  const over = await rejectsWith(() => authority.connected('b-truth', 'ssh'), 'session_ended')
  assert.equal(over.endReasonCode, 'connection_lost')
})

test('connectionInfo refuses an unknown build; refresh refuses another build\'s session', async () => {
  const authority = new ra.Authority()
  const hostKey = ra.HostKey.generate()
  await authority.issue('b-one', { ...MANUAL, builder: { address: '10.0.3.7' } })
  await authority.issue('b-two', { ...MANUAL, builder: { address: '10.0.3.8' } })
  const info = await authority.connectionInfo('b-one', hostKey, { gatewayHost: 'gw.example' })
  const before = info.toJSON()
  assert.equal(before.gatewayPort, 22)
  const other = await authority.session('b-two')
  const refused = await rejectsWith(() => info.refresh(other), 'invalid_input')
  assert.equal(refused.what, 'session')
  assert.deepEqual(info.toJSON(), before)
  assert.equal((await rejectsWith(() => authority.connectionInfo('b-nope', hostKey, { gatewayHost: 'gw.example' }), 'unknown_build')).buildId, 'b-nope')
  // A refused argument rejects, never throws.
  const pending = authority.connectionInfo('no spaces allowed', hostKey, { gatewayHost: 'gw.example' })
  assert.ok(pending instanceof Promise)
  await rejectsWith(() => pending, 'invalid_input')
  await rejectsWith(() => authority.connectionInfo('b-one', hostKey, { gatewayHost: 'gw.example', gatewayPort: 70000 }), 'invalid_input')
})

test('close ends a waiting iteration; for-await sees the events in order', async () => {
  const authority = new ra.Authority()
  const subscription = authority.subscribe()
  await authority.issue('b-a', MANUAL)
  await authority.issue('b-b', MANUAL)
  /** @type {string[]} */
  const ids = []
  for await (const event of subscription) {
    ids.push(event.buildId)
    if (ids.length === 2) break // leaving the loop unsubscribes
  }
  assert.deepEqual(ids, ['b-a', 'b-b'])

  const other = authority.subscribe()
  const iterator = other[Symbol.asyncIterator]()
  const waiting = iterator.next()
  setTimeout(() => other.close(), 50)
  assert.equal((await waiting).done, true)

  // throw() rejects with what was thrown and ends the iteration, as a generator's does.
  const thrown = authority.subscribe()[Symbol.asyncIterator]()
  await assert.rejects(/** @type {any} */ (thrown).throw(new Error('stop here')), /stop here/)
  await authority.issue('b-c', MANUAL)
  assert.equal((await thrown.next()).done, true)
})

test('platform-carried connections and stopping an agent', async () => {
  const authority = new ra.Authority()
  const events = authority.subscribe()[Symbol.asyncIterator]()
  await authority.issue('b-conn', MANUAL)
  const connection = await authority.connected('b-conn', 'ssh')
  assert.equal(connection.protocol, 'ssh')
  assert.equal((await authority.session('b-conn')).liveConnections.length, 1)
  const cut = connection.closed()
  await authority.revoke('b-conn', 'done')
  await cut
  assert.equal(connection.isCut, true)
  await connection.disconnect()
  await nextEvent(events, 'disconnected')

  // A pending closed() settles once the connection is recorded closed, so that it does not keep
  // Node running for a connection that is gone.
  await authority.issue('b-closed', MANUAL)
  const closing = await authority.connected('b-closed', 'ssh')
  const pending = closing.closed()
  await closing.disconnect()
  await pending
  assert.equal(closing.isCut, false)
  // Only the first report counts: later ones resolve and change nothing.
  await closing.disconnect()
  await closing.detach()
  await closing.closed()

  // A connection the garbage collector drops is recorded as lost (never a logout), and a
  // closed() still pending on it settles.
  await authority.issue('b-gc', MANUAL)
  const orphaned = await (async () => {
    // Wrapped: an async function's returned promise would be awaited itself.
    const connection = await authority.connected('b-gc', 'vnc') // not kept
    return { id: connection.id, closed: connection.closed() }
  })()
  assert.equal((await authority.session('b-gc')).liveConnections.length, 1)
  const gc = /** @type {(() => void) | undefined} */ (globalThis.gc)
  assert.ok(gc, 'run with --expose-gc')
  for (let i = 0; i < 50 && (await authority.session('b-gc')).liveConnections.length > 0; i++) {
    gc()
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  assert.deepEqual((await authority.session('b-gc')).liveConnections, [])
  await orphaned.closed
  const dropped = await nextEvent(events, 'dropped')
  assert.equal(dropped.buildId, 'b-gc')
  assert.equal(dropped.connectionId, orphaned.id)
  assert.equal(dropped.protocol, 'vnc')

  // An agent whose gateway is down retries; stop() ends it.
  const credentials = await authority.issue('b-agent', { ...MANUAL, builder: { address: '127.0.0.1', reverseTunnel: true } })
  const agent = ra.runAgent({
    gateway: `127.0.0.1:${await freePort()}`,
    gatewayHostKey: ra.HostKey.generate().publicKey,
    username: credentials.agentUsername ?? '',
    privateKey: credentials.agentPrivateKeyOpenssh() ?? '',
    minBackoffMs: 50,
    maxBackoffMs: 100,
  })
  await new Promise((resolve) => setTimeout(resolve, 300))
  agent.stop()
  assert.equal(await agent.done(), 'stopped')
})

test('runHousekeeping enforces deadlines without a gateway', async () => {
  const authority = new ra.Authority({ policy: { graceMs: 200 } })
  const events = authority.subscribe()[Symbol.asyncIterator]()
  await authority.issue('b-expiry', MANUAL)
  const connection = await authority.connected('b-expiry', 'ssh')
  const housekeeping = authority.runHousekeeping()
  try {
    await authority.stepsCompleted('b-expiry')
    await nextEvent(events, 'expired', 30_000)
    await connection.closed()
    assert.equal((await authority.session('b-expiry')).endReasonCode, 'grace_elapsed')
  } finally {
    housekeeping.stop()
  }
})

test('a subscriber that falls eventQueue events behind gets a lagged event with the count', async () => {
  await rejectsWith(() => new ra.Authority({ eventQueue: 0 }), 'invalid_input')
  const authority = new ra.Authority({ eventQueue: 3 })
  assert.equal(authority.eventQueue, 3)
  const slow = authority.subscribe()
  const fast = authority.subscribe()
  /** @param {T.Subscription} subscription */
  const drain = (subscription) => {
    const events = []
    for (let event = subscription.tryNext(); event; event = subscription.tryNext()) events.push(event)
    return events
  }
  /** @type {string[]} */
  const fastSeen = []
  for (let i = 0; i < 8; i++) {
    await authority.issue(`b-lag-${i}`, MANUAL)
    fastSeen.push(...drain(fast).map((event) => `${event.kind} ${event.buildId}`))
  }
  // Three were queued; the five after them were dropped, and one event stands for them.
  const got = drain(slow)
  assert.deepEqual(got.map((event) => [event.kind, event.buildId]), [
    ['issued', 'b-lag-0'], ['issued', 'b-lag-1'], ['issued', 'b-lag-2'], ['lagged', 'b-lag-3'],
  ])
  assert.equal(got[3].kind === 'lagged' && got[3].dropped, 5)
  assert.ok(!('dropped' in got[0]))
  assert.match(got[3].reason, /5 events were not delivered/)
  // Caught up: what follows arrives in order, and the fast reader missed nothing.
  await authority.revoke('b-lag-7', 'done')
  assert.equal(slow.tryNext()?.kind, 'revoked')
  assert.deepEqual(fastSeen, Array.from({ length: 8 }, (_, i) => `issued b-lag-${i}`))
  slow.close()
  fast.close()

  // A callback that keeps the JS thread busy falls behind the same way: events wait in the
  // bounded queue, not in an unbounded one for the JS thread.
  const listened = new ra.Authority({ eventQueue: 3 })
  /** @type {T.Event[]} */
  const heard = []
  const listener = listened.onEvent((event) => {
    heard.push(event)
    if (heard.length === 1) for (const until = Date.now() + 500; Date.now() < until;);
  })
  try {
    await Promise.all(Array.from({ length: 10 }, (_, i) => listened.issue(`b-busy-${i}`, MANUAL)))
    const accounted = () => heard.reduce((n, event) => n + (event.kind === 'lagged' ? event.dropped : 1), 0)
    for (let i = 0; i < 300 && accounted() < 10; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.equal(accounted(), 10, JSON.stringify(heard.map((event) => [event.kind, 'dropped' in event && event.dropped])))
    assert.ok(heard.some((event) => event.kind === 'lagged'), JSON.stringify(heard.map((event) => event.kind)))
  } finally {
    listener.close()
  }
})

test('a TLS identity is generated, persisted and reloaded', async () => {
  const identity = ra.TlsIdentity.generate(['gw.example', '127.0.0.1'])
  assert.match(identity.fingerprint, /^[0-9A-F]{2}(:[0-9A-F]{2}){31}$/)
  assert.match(identity.certificatePem, /^-----BEGIN CERTIFICATE-----\n/)
  const key = identity.privateKeyPem()
  assert.match(key, /^-----BEGIN [A-Z ]*PRIVATE KEY-----\n/)
  const again = ra.TlsIdentity.fromPem(identity.certificatePem, key)
  assert.equal(again.fingerprint, identity.fingerprint)
  assert.equal(again.certificatePem, identity.certificatePem)
  // The key stays out of util.inspect and JSON, as HostKey's does.
  const body = key.trim().split('\n')[1]
  assert.deepEqual(JSON.parse(JSON.stringify(identity)), {
    certificatePem: identity.certificatePem, fingerprint: identity.fingerprint,
  })
  for (const text of [util.inspect(identity, { showHidden: true }), JSON.stringify({ identity })]) {
    assert.ok(!text.includes(body), text)
  }
  // Refused input throws the core's invalid_input, never a key in the message.
  const other = ra.TlsIdentity.generate(['other.example'])
  const mismatch = await rejectsWith(() => ra.TlsIdentity.fromPem(identity.certificatePem, other.privateKeyPem()), 'invalid_input')
  assert.match(mismatch.message, /does not fit/)
  assert.ok(!mismatch.message.includes(other.privateKeyPem().trim().split('\n')[1]))
  for (const [cert, pem] of [['', key], ['hello', key], [identity.certificatePem, 'not a key']]) {
    await rejectsWith(() => ra.TlsIdentity.fromPem(cert, pem), 'invalid_input')
  }
  assert.equal((await rejectsWith(() => ra.TlsIdentity.generate([]), 'invalid_input')).what, 'names')
})

test('the VNC encryption options reach the gateway', async () => {
  const vncPort = await freePort()
  const authority = new ra.Authority({ vncPorts: [vncPort] })
  const identity = ra.TlsIdentity.generate(['127.0.0.1'])
  const required = await rejectsWith(() => new ra.Gateway(authority, { vncRequireEncryption: true }), 'invalid_input')
  assert.equal(required.what, 'vnc_require_encryption')
  const origin = await rejectsWith(
    () => new ra.Gateway(authority, { vncTls: identity, vncWebsocketOrigins: ['ci.example.com'] }),
    'invalid_input',
  )
  assert.equal(origin.what, 'vnc_websocket_origins')
  new ra.Gateway(authority, { vncTls: identity, vncWebsocket: false })
  const gateway = new ra.Gateway(authority, {
    vncTls: identity,
    vncRequireEncryption: true,
    vncWebsocket: true,
    vncWebsocketOrigins: ['https://ci.example.com'],
  })
  const running = await gateway.start('127.0.0.1:0')
  try {
    // A browser's wss:// starts with TLS on the VNC port: the certificate is the identity's,
    // and its PEM is what a client trusts.
    const tls = require('node:tls')
    const socket = tls.connect({ host: '127.0.0.1', port: vncPort, ca: identity.certificatePem })
    await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject))
    assert.equal(socket.getPeerCertificate().fingerprint256, identity.fingerprint)
    socket.destroy()
  } finally {
    await running.stop()
  }
})

test('the connection info carries the VNC encryption', async () => {
  const vncPort = await freePort()
  const authority = new ra.Authority({ vncPorts: [vncPort] })
  const credentials = await authority.issue('b-tls', { ...MANUAL, builder: { address: '10.0.3.7', vncPort: 5900 } })
  const session = await authority.session('b-tls')
  assert.equal(session.vncPort, vncPort)
  const hostKey = ra.HostKey.generate()
  const fingerprint = ra.TlsIdentity.generate(['gw.example']).fingerprint
  const options = { gatewayHost: 'gw.example', gatewayPort: 2222, vncTlsFingerprint: fingerprint, vncRequireEncryption: true }
  const info = new ra.ConnectionInfo(credentials, session, hostKey, options)
  const json = info.toJSON()
  assert.equal(json.vncTlsFingerprint, fingerprint)
  assert.equal(json.vncRequireEncryption, true)
  assert.equal(json.vncWebsocketUrl, `wss://gw.example:${vncPort}/websockify`)
  assert.deepEqual(JSON.parse(JSON.stringify(info)), json)
  const instructions = info.vncInstructions(credentials) ?? ''
  assert.ok(instructions.includes(fingerprint) && instructions.includes('VeNCrypt'), instructions)
  assert.ok(instructions.includes(`wss://gw.example:${vncPort}/websockify`), instructions)

  // The defaults: no certificate, plain ws://, nothing required.
  const plain = new ra.ConnectionInfo(credentials, session, hostKey, { gatewayHost: 'gw.example', gatewayPort: 2222 }).toJSON()
  assert.equal(plain.vncTlsFingerprint, null)
  assert.equal(plain.vncRequireEncryption, false)
  assert.equal(plain.vncWebsocketUrl, `ws://gw.example:${vncPort}/websockify`)
  const noWs = new ra.ConnectionInfo(credentials, session, hostKey, { ...options, vncWebsocket: false }).toJSON()
  assert.equal(noWs.vncWebsocketUrl, null)

  // Inconsistent options throw the core's invalid_input.
  const required = await rejectsWith(
    () => new ra.ConnectionInfo(credentials, session, hostKey, { gatewayHost: 'gw.example', vncRequireEncryption: true }),
    'invalid_input',
  )
  assert.equal(required.what, 'vnc_require_encryption')
  const bad = await rejectsWith(
    () => new ra.ConnectionInfo(credentials, session, hostKey, { gatewayHost: 'gw.example', vncTlsFingerprint: 'AB:CD' }),
    'invalid_input',
  )
  assert.equal(bad.what, 'vnc_tls_fingerprint')

  // VNC only through the SSH tunnel (no gateway VNC port): still instructions, no URL.
  const tunnelOnly = new ra.Authority()
  const tunnelCredentials = await tunnelOnly.issue('b-tunnel', { ...MANUAL, builder: { address: '10.0.3.7', vncPort: 5900 } })
  const tunnelInfo = new ra.ConnectionInfo(tunnelCredentials, await tunnelOnly.session('b-tunnel'), hostKey, options)
  assert.equal(tunnelInfo.toJSON().vncPort, null)
  assert.equal(tunnelInfo.toJSON().vncWebsocketUrl, null)
  assert.equal(tunnelInfo.toJSON().builderVncPort, 5900)
  const tunnelText = tunnelInfo.vncInstructions(tunnelCredentials) ?? ''
  assert.ok(tunnelText.includes('ssh tunnel') && tunnelText.includes('--vnc'), tunnelText)
  assert.ok(tunnelText.includes(tunnelCredentials.vncPassword()))
})
