// @ts-check
// The Node API drives a real gateway: the generated script runs with the real `ssh` client
// against a real `sshd` builder; revoke, deadline and logout arrive through the async iterator
// and the callback; VNC through the real `vncdo` client against TigerVNC; the reverse tunnel
// through `runAgent`.
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { ra } = require('./package')
/** @import * as T from '..' */
const { freePort, startSshd, startTigervnc, startRedis, startRedisTls, nextEvent, runScript } = require('./peers')

/**
 * An authority and a started gateway; `body` gets them and an event iterator.
 * @param {T.AuthorityOptions} options
 * @param {(kit: {authority: T.Authority, gateway: T.Gateway, running: T.RunningGateway, events: AsyncIterator<T.Event>, scratch: string}) => Promise<void>} body
 */
async function serving(options, body) {
  const authority = new ra.Authority(options)
  const subscription = authority.subscribe()
  const gateway = new ra.Gateway(authority, { authRejectionDelayMs: 50 })
  const running = await gateway.start('127.0.0.1:0')
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-'))
  try {
    await body({ authority, gateway, running, events: subscription[Symbol.asyncIterator](), scratch })
  } finally {
    subscription.close()
    await running.stop()
    fs.rmSync(scratch, { recursive: true, force: true })
  }
}

/**
 * Issues credentials and writes the build's POSIX script.
 * @param {{authority: T.Authority, gateway: T.Gateway, running: T.RunningGateway, scratch: string}} kit
 * @param {string} buildId
 * @param {T.Builder} builder
 * @returns {Promise<[T.Credentials, string]>}
 */
async function issue(kit, buildId, builder) {
  const credentials = await kit.authority.issue(buildId, { trigger: 'manual', remoteAccessEnabled: true, builder })
  return [credentials, await writeScript(kit, credentials)]
}

/**
 * Writes the build's POSIX script for this kit's gateway.
 * @param {{authority: T.Authority, gateway: T.Gateway, running: T.RunningGateway, scratch: string}} kit
 * @param {T.Credentials} credentials
 * @returns {Promise<string>}
 */
async function writeScript(kit, credentials) {
  const session = await kit.authority.session(credentials.buildId)
  const info = new ra.ConnectionInfo(credentials, session, kit.gateway.hostKey, {
    gatewayHost: '127.0.0.1',
    gatewayPort: kit.running.port,
  })
  const script = path.join(kit.scratch, `${credentials.buildId}-${kit.running.port}.sh`)
  fs.writeFileSync(script, info.posixScript(credentials), { mode: 0o700 })
  return script
}

test('the script reaches the builder and revoke cuts a live session', async () => {
  const sshd = await startSshd()
  try {
    await serving({}, async (kit) => {
      /** @type {T.Event[]} */
      const seen = []
      const listener = kit.authority.onEvent((event) => seen.push(event))
      const [credentials, script] = await issue(kit, 'node-revoke', sshd.builder())
      sshd.authorize(credentials.authorizedKeysLine())

      const [code, out, err] = await runScript(script, 'printenv', 'FCI_BUILD_DIR')
      assert.equal(code, 0, err)
      assert.equal(out.trim(), sshd.buildDir)
      const first = await nextEvent(kit.events, 'connected')
      const gone = await nextEvent(kit.events, 'disconnected')
      assert.equal(gone.connectionId, first.connectionId)

      const live = spawn('sh', [script, 'sleep', '600'], { stdio: ['ignore', 'ignore', 'pipe'] })
      let stderr = ''
      live.stderr.on('data', (d) => (stderr += d))
      const exited = new Promise((resolve) => live.on('close', resolve))
      const connected = await nextEvent(kit.events, 'connected')
      assert.notEqual(connected.connectionId, first.connectionId)
      const live_ = (await kit.authority.session('node-revoke')).liveConnections.map(([id]) => id)
      assert.deepEqual(live_, [connected.connectionId])
      await kit.authority.revoke('node-revoke', 'security review')
      const revoked = await nextEvent(kit.events, 'revoked')
      assert.match(revoked.reason, /security review/)
      assert.notEqual(await exited, 0)
      assert.match(stderr, /remote access/)
      const session = await kit.authority.session('node-revoke')
      assert.equal(session.phase, 'ended')
      const [again, , againErr] = await runScript(script, 'true')
      assert.equal(again, 255)
      assert.match(againErr, /Permission denied/)

      // The callback saw the same events, in order.
      await new Promise((resolve) => setTimeout(resolve, 100))
      listener.close()
      const story = seen
        .filter((event) => ['issued', 'connected', 'disconnected', 'revoked'].includes(event.kind))
        .map((event) => `${event.kind}${'connectionId' in event ? ` ${event.connectionId}` : ''}`)
      assert.deepEqual(story, [
        'issued',
        `connected ${first.connectionId}`,
        `disconnected ${first.connectionId}`,
        `connected ${connected.connectionId}`,
        'revoked',
        `disconnected ${connected.connectionId}`,
      ])
    })
  } finally {
    await sshd.stop()
  }
})

test('the deadline cuts the user and asks to finish the build', async () => {
  const sshd = await startSshd()
  try {
    await serving({ policy: { graceMs: 2000 } }, async (kit) => {
      const [credentials, script] = await issue(kit, 'node-deadline', sshd.builder())
      sshd.authorize(credentials.authorizedKeysLine())
      const live = spawn('sh', [script, 'sleep', '600'], { stdio: 'ignore' })
      const exited = new Promise((resolve) => live.on('close', resolve))
      await nextEvent(kit.events, 'connected')
      await kit.authority.stepsCompleted('node-deadline')
      const expired = await nextEvent(kit.events, 'expired')
      assert.equal(expired.buildId, 'node-deadline')
      await nextEvent(kit.events, 'finish_build')
      assert.notEqual(await exited, 0)
      const session = await kit.authority.session('node-deadline')
      assert.match(session.endReason ?? '', /grace/)
    })
  } finally {
    await sshd.stop()
  }
})

test('logging out after the steps ends the build', async () => {
  const sshd = await startSshd()
  try {
    await serving({}, async (kit) => {
      const [credentials, script] = await issue(kit, 'node-logout', sshd.builder())
      sshd.authorize(credentials.authorizedKeysLine())
      await kit.authority.stepsCompleted('node-logout')
      const [code, , err] = await runScript(script, 'true')
      assert.equal(code, 0, err)
      const loggedOut = await nextEvent(kit.events, 'logged_out')
      assert.equal(loggedOut.buildId, 'node-logout')
      await nextEvent(kit.events, 'finish_build')
      const [again] = await runScript(script, 'true')
      assert.equal(again, 255, 'no way back in after the logout')
    })
  } finally {
    await sshd.stop()
  }
})

test('the metrics follow a login, from metricsText() and from the metrics address', async () => {
  const sshd = await startSshd()
  const port = await freePort()
  const authority = new ra.Authority()
  assert.throws(() => new ra.Gateway(authority, { metricsAddress: 'port 9100' }), (err) => {
    assert.ok(err instanceof ra.RemoteAccessError)
    assert.equal(/** @type {T.RemoteAccessError} */ (err).code, 'invalid_input')
    assert.match(String(err), /metricsAddress/)
    return true
  })
  const gateway = new ra.Gateway(authority, { metricsAddress: `127.0.0.1:${port}`, authRejectionDelayMs: 50 })
  const running = await gateway.start('127.0.0.1:0')
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-'))
  try {
    const [credentials, script] = await issue({ authority, gateway, running, scratch }, 'node-metrics', sshd.builder())
    sshd.authorize(credentials.authorizedKeysLine())
    const [code, , err] = await runScript(script, 'true')
    assert.equal(code, 0, err)
    const accepted = /^remote_access_logins_accepted_total\{protocol="ssh"\} (\d+)$/m
    assert.equal(accepted.exec(gateway.metricsText())?.[1], '1')
    assert.equal(gateway.ready(), true)
    const served = await fetch(`http://127.0.0.1:${port}/metrics`)
    assert.equal(served.status, 200)
    assert.match(served.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
    assert.equal(accepted.exec(await served.text())?.[1], '1')
    const health = await fetch(`http://127.0.0.1:${port}/healthz`)
    assert.equal(health.status, 200)
    assert.equal(await health.text(), 'ready\n')
  } finally {
    await running.stop()
    await sshd.stop()
    fs.rmSync(scratch, { recursive: true, force: true })
  }
})

test('a gateway drains while the next one serves on the same port', async () => {
  const sshd = await startSshd()
  const authority = new ra.Authority()
  const subscription = authority.subscribe()
  const events = subscription[Symbol.asyncIterator]()
  const hostKey = ra.HostKey.generate()
  const first = new ra.Gateway(authority, { hostKey, reusePort: true, authRejectionDelayMs: 50 })
  const second = new ra.Gateway(authority, { hostKey, reusePort: true, authRejectionDelayMs: 50 })
  const running = await first.start('127.0.0.1:0')
  /** @type {T.RunningGateway | undefined} */
  let next
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-'))
  try {
    const [credentials, script] = await issue({ authority, gateway: first, running, scratch }, 'node-drain', sshd.builder())
    sshd.authorize(credentials.authorizedKeysLine())
    const live = spawn('sh', [script, 'echo ready; read line; echo "got $line"'], { stdio: ['pipe', 'pipe', 'ignore'] })
    let out = ''
    live.stdout.on('data', (d) => (out += d))
    const exited = new Promise((resolve) => live.on('close', resolve))
    await nextEvent(events, 'connected')
    while (!out.includes('ready')) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.equal(first.stats().sshConnections, 1)

    // The next gateway on the same port; the first drains, and a new login gets in.
    next = await second.start(`127.0.0.1:${running.port}`)
    let drained = false
    const draining = running.drain(600_000).then(() => (drained = true))
    const [code, answer, err] = await runScript(script, 'echo in')
    assert.equal(code, 0, err)
    assert.equal(answer.trim(), 'in')
    assert.equal(drained, false, 'the live session holds the first gateway')
    assert.equal(first.stats().sshConnections, 1)

    live.stdin.end('still here\n')
    assert.equal(await exited, 0)
    assert.match(out, /got still here/)
    await draining
    assert.equal(first.stats().sshConnections, 0)
  } finally {
    subscription.close()
    await running.stop()
    await next?.stop()
    await sshd.stop()
    fs.rmSync(scratch, { recursive: true, force: true })
  }
})

test('VNC through the gateway with the per-build password', async () => {
  const vnc = await startTigervnc()
  try {
    await serving({ vncPorts: [await freePort()] }, async (kit) => {
      const credentials = await kit.authority.issue('node-vnc', {
        trigger: 'manual',
        remoteAccessEnabled: true,
        builder: { address: '127.0.0.1', vncPort: vnc.port },
        builderVncPassword: vnc.password,
      })
      const session = await kit.authority.session('node-vnc')
      assert.ok(session.vncPort)
      /** @param {string} password @param {string} shot @returns {Promise<number>} */
      const vncdo = (password, shot) =>
        new Promise((resolve, reject) => {
          const child = spawn('vncdo', ['-s', `127.0.0.1::${session.vncPort}`, '-p', password, 'capture', shot], {
            stdio: 'ignore',
          })
          // Without vncdo on PATH the spawn fails with 'error' and no 'close': fail, not hang.
          child.on('error', reject)
          child.on('close', (code) => resolve(code ?? -1))
        })
      const shot = path.join(kit.scratch, 'shot.png')
      assert.equal(await vncdo(credentials.vncPassword(), shot), 0)
      const png = fs.readFileSync(shot)
      assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [vnc.width, vnc.height])
      const connected = await nextEvent(kit.events, 'connected')
      assert.equal(connected.protocol, 'vnc')
      // The builder's own password does not open the gateway.
      assert.notEqual(await vncdo(vnc.password, path.join(kit.scratch, 'no.png')), 0)
    })
  } finally {
    await vnc.stop()
  }
})

test('the reverse tunnel through the agent', async () => {
  const sshd = await startSshd()
  try {
    await serving({}, async (kit) => {
      const [credentials, script] = await issue(kit, 'node-reverse', sshd.builder({ reverseTunnel: true }))
      sshd.authorize(credentials.authorizedKeysLine())
      const agent = ra.runAgent({
        gateway: `127.0.0.1:${kit.running.port}`,
        gatewayHostKey: kit.gateway.hostKey.publicKey,
        username: credentials.agentUsername ?? '',
        privateKey: credentials.agentPrivateKeyOpenssh() ?? '',
        ports: [sshd.port],
      })
      await nextEvent(kit.events, 'tunnel_registered')
      const [code, out, err] = await runScript(script, 'printenv', 'FCI_BUILD_DIR')
      assert.equal(code, 0, err)
      assert.equal(out.trim(), sshd.buildDir)
      await kit.authority.revoke('node-reverse', 'done')
      assert.equal(await agent.done(), 'session_ended')
    })
  } finally {
    await sshd.stop()
  }
})

test('the fleet event log has every gateway\'s events and resumes after an id', async () => {
  const sshd = await startSshd()
  const redis = await startRedis()
  try {
    await serving({ redisUrl: redis.url }, async (a) => {
      await serving({ redisUrl: redis.url }, async (b) => {
        const log = await a.authority.fleetEvents()
        const [credentials] = await issue(a, 'node-fleet-log', sshd.builder())
        sshd.authorize(credentials.authorizedKeysLine())
        const [code, , err] = await runScript(await writeScript(b, credentials), 'true')
        assert.equal(code, 0, err)
        /** @type {T.FleetEvent[]} */
        const seen = []
        for await (const entry of log) {
          if (entry.event.buildId === 'node-fleet-log') seen.push(entry)
          if (seen.length === 3) break
        }
        assert.deepEqual(
          seen.map((entry) => entry.event.kind),
          ['issued', 'connected', 'disconnected'],
        )
        const resumed = await b.authority.fleetEvents(seen[0].id)
        const again = []
        for await (const entry of resumed) {
          again.push(entry.id)
          if (again.length === 2) break
        }
        assert.deepEqual(again, [seen[1].id, seen[2].id])
        await assert.rejects(a.authority.fleetEvents('not an id'), { code: 'invalid_input' })
      })
    })
  } finally {
    await redis.stop()
    await sshd.stop()
  }
})

test('a required replica that is missing keeps the gateway from ready', async () => {
  // redisMinReplicas: 1 on a Redis without a replica: logins are refused (fail closed).
  const redis = await startRedis()
  const strict = new ra.Gateway(new ra.Authority({ redisUrl: redis.url, redisMinReplicas: 1 }))
  const usual = new ra.Gateway(new ra.Authority({ redisUrl: redis.url }))
  const running = [await strict.start('127.0.0.1:0'), await usual.start('127.0.0.1:0')]
  try {
    for (let i = 0; i < 100 && (strict.ready() || !usual.ready()); i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    assert.equal(strict.ready(), false)
    assert.equal(usual.ready(), true)
  } finally {
    await Promise.all(running.map((r) => r.stop()))
    await redis.stop()
  }
})

test('two gateways on one Redis share sessions, and a revoke through one cuts the other', async () => {
  // Each gateway has its own authority on the same Redis, as separate processes would.
  const sshd = await startSshd()
  const redis = await startRedis()
  try {
    await serving({ redisUrl: redis.url }, async (a) => {
      await serving({ redisUrl: redis.url }, async (b) => {
        const [credentials] = await issue(a, 'node-fleet', sshd.builder())
        sshd.authorize(credentials.authorizedKeysLine())
        const scriptB = await writeScript(b, credentials)
        const child = spawn('sh', [scriptB, 'echo ready; sleep 600'], { stdio: ['ignore', 'pipe', 'pipe'] })
        const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)))
        await new Promise((resolve) => child.stdout.once('data', resolve))
        await nextEvent(b.events, 'connected')

        await a.authority.revoke('node-fleet', 'revoked through gateway A')
        assert.notEqual(await exited, 0)
        await assert.rejects(b.authority.verifySsh(credentials.username, credentials.publicKey), {
          code: 'access_denied',
        })
        assert.equal(a.authority.maxStoreOutageMs, 30_000)
      })
    })
  } finally {
    await redis.stop()
    await sshd.stop()
  }
})

test('a Redis store refuses bad settings and reports an unreachable Redis without its password', async () => {
  assert.throws(() => new ra.Authority({ redisUrl: 'http://example.invalid' }), { code: 'invalid_input' })
  assert.throws(() => new ra.Authority({ redisUrl: 'redis://127.0.0.1:1/0' }, new ra.ManualClock(new Date().toISOString())), {
    code: 'invalid_input',
    message: /manual clock/,
  })
  // @ts-expect-error a number is not a URL; the message must not quote it
  assert.throws(() => new ra.Authority({ redisUrl: 424242 }), (err) => {
    assert.equal(/** @type {any} */ (err).code, 'invalid_input')
    assert.doesNotMatch(String(/** @type {any} */ (err).message), /424242/)
    return true
  })
  const nowhere = new ra.Authority({ redisUrl: `redis://:hunter2@127.0.0.1:${await freePort()}/0` })
  await assert.rejects(nowhere.issue('node-nowhere', { trigger: 'manual', remoteAccessEnabled: true }), (err) => {
    assert.equal(/** @type {any} */ (err).code, 'store_unavailable')
    assert.doesNotMatch(String(/** @type {any} */ (err).message), /hunter2/)
    return true
  })
})

test('an authority reaches a Redis over TLS with a CA and a client certificate', async () => {
  // A real redis-server serving only TLS and requiring client certificates.
  const server = ra.TlsIdentity.generate(['127.0.0.1'])
  const client = ra.TlsIdentity.generate(['platform.example'])
  const redis = await startRedisTls(server, client.certificatePem)
  try {
    assert.throws(() => new ra.Authority({ redisTlsCa: server.certificatePem }), {
      code: 'invalid_input',
      message: /need redisUrl/,
    })
    assert.throws(() => new ra.Authority({ redisUrl: redis.url.replace('rediss://', 'redis://'), redisTlsCa: server.certificatePem }), {
      code: 'invalid_input',
      message: /use rediss:\/\//,
    })
    const onTls = () =>
      new ra.Authority({
        redisUrl: redis.url,
        redisTlsCa: server.certificatePem,
        redisTlsClient: { certificate: client.certificatePem, key: client.privateKeyPem() },
      })
    await onTls().issue('node-tls', { trigger: 'manual', remoteAccessEnabled: true })
    assert.equal((await onTls().session('node-tls')).buildId, 'node-tls')
    // Without the client certificate Redis refuses the handshake: the store is unavailable.
    const anonymous = new ra.Authority({ redisUrl: redis.url, redisTlsCa: server.certificatePem })
    await assert.rejects(anonymous.issue('node-tls-anonymous', { trigger: 'manual', remoteAccessEnabled: true }), {
      code: 'store_unavailable',
    })
  } finally {
    await redis.stop()
  }
})

test('certificates let the build into a builder that trusts the CA, until the KRL revokes it', async () => {
  const { spawnSync } = require('node:child_process')
  const userCa = ra.SshCa.generate()
  const hostCa = ra.SshCa.generate()
  assert.equal(ra.SshCa.fromOpenssh(userCa.toOpenssh()).publicKey, userCa.publicKey)
  assert.doesNotMatch(JSON.stringify(userCa), /PRIVATE/)
  await serving({ userCa, certificateSourceAddresses: ['127.0.0.1'], hostCa }, async (kit) => {
    const dir = kit.scratch
    fs.writeFileSync(path.join(dir, 'user-ca.pub'), userCa.publicKey + '\n')
    const krl = await kit.authority.revokedKeys()
    assert.ok(Buffer.isBuffer(krl) && krl.subarray(0, 8).toString('latin1') === 'SSHKRL\n\0')
    fs.writeFileSync(path.join(dir, 'revoked.krl'), krl)
    const sshd = await startSshd({
      extra: `TrustedUserCAKeys ${dir}/user-ca.pub\nRevokedKeys ${dir}/revoked.krl\nAuthorizedKeysFile none\n`,
      certify: (hostKey) => kit.authority.certifyHost(hostKey, ['127.0.0.1'], 3_600_000),
    })
    try {
      const credentials = await kit.authority.issue('node-cert', {
        trigger: 'manual',
        remoteAccessEnabled: true,
        builder: { address: '127.0.0.1', sshPort: sshd.port, user: 'root' },
      })
      assert.match(credentials.certificate ?? '', /^ssh-ed25519-cert-v01@openssh\.com /)
      const session = await kit.authority.session('node-cert')
      const info = new ra.ConnectionInfo(credentials, session, kit.gateway.hostKey, {
        gatewayHost: '127.0.0.1',
        gatewayPort: kit.running.port,
        builderHostCa: hostCa.publicKey,
      })
      assert.equal(info.toJSON().builderHostCa, hostCa.publicKey)
      assert.match(info.sshConfigWithCertificate('/k', '/k.cert', '/kh'), /CertificateFile "\/k\.cert"/)
      const text = info.posixScript(credentials)
      assert.doesNotMatch(text, /accept-new/)
      const script = path.join(dir, 'cert.sh')
      fs.writeFileSync(script, text, { mode: 0o700 })
      const [code, out, err] = await runScript(script, 'echo', 'by-certificate')
      assert.equal(code, 0, err)
      assert.equal(out.trim(), 'by-certificate')
      // Revoked: the builder itself refuses the certificate once the KRL lists it, even to a
      // client that bypasses the gateway.
      fs.writeFileSync(path.join(dir, 'k'), credentials.privateKeyOpenssh(), { mode: 0o600 })
      fs.writeFileSync(path.join(dir, 'k.cert'), credentials.certificate + '\n')
      const direct = () =>
        spawnSync('ssh', [
          '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=no',
          '-o', 'UserKnownHostsFile=/dev/null', '-i', path.join(dir, 'k'), '-o', `CertificateFile=${path.join(dir, 'k.cert')}`,
          '-p', String(sshd.port), 'root@127.0.0.1', 'true',
        ]).status
      assert.equal(direct(), 0)
      await kit.authority.revoke('node-cert', 'test')
      fs.writeFileSync(path.join(dir, 'revoked.krl'), await kit.authority.revokedKeys())
      assert.equal(direct(), 255)
    } finally {
      await sshd.stop()
    }
  })
  // Without a host CA there is nothing to sign with; a bad address is named.
  assert.throws(() => new ra.Authority().certifyHost(userCa.publicKey, ['127.0.0.1'], 1000), { code: 'invalid_input' })
  const authority = new ra.Authority({ hostCa })
  assert.throws(() => authority.certifyHost(userCa.publicKey, ['nowhere'], 1000), { code: 'invalid_input', what: 'addresses' })
  assert.throws(() => ra.SshCa.fromOpenssh('not a key'), { code: 'invalid_input' })
  assert.throws(() => new ra.Authority({ userCa }), { code: 'invalid_input', what: 'certificate_source_addresses' })
})
