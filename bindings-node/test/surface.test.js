// @ts-check
// The package's surface against its declarations (index.d.ts, read with the TypeScript
// compiler): every value it declares is exported and nothing else (no test hooks); every call
// with arguments of the wrong type fails with a RemoteAccessError `invalid_input`, thrown by
// the synchronous ones and rejected (never thrown) by those that return a Promise; every class
// prints its public parts in util.inspect and serializes with camelCase keys.
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const util = require('node:util')
const ts = require('typescript')

const { ra, dir, internals } = require('./package')
const { freePort } = require('./peers')

/**
 * What index.d.ts declares: its classes (each with its constructor's and methods' parameter
 * counts, whether each method returns a Promise) and functions.
 */
function declarations() {
  const file = path.join(dir, 'index.d.ts')
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true)
  /** @type {Map<string, { constructorParams: number | null, methods: { name: string, isStatic: boolean, params: number, promise: boolean }[] }>} */
  const classes = new Map()
  /** @type {Map<string, number>} */
  const functions = new Map()
  /** @param {ts.Node} node */
  const exported = (node) => ts.canHaveModifiers(node) && (ts.getModifiers(node) ?? []).some((m) => m.kind === ts.SyntaxKind.ExportKeyword)
  for (const statement of source.statements) {
    if (ts.isClassDeclaration(statement) && statement.name && exported(statement)) {
      let constructorParams = null
      const methods = []
      for (const member of statement.members) {
        if (ts.isConstructorDeclaration(member)) constructorParams = member.parameters.length
        if (ts.isMethodDeclaration(member) && ts.isIdentifier(member.name)) {
          methods.push({
            name: member.name.text,
            isStatic: (ts.getModifiers(member) ?? []).some((m) => m.kind === ts.SyntaxKind.StaticKeyword),
            params: member.parameters.length,
            promise: (member.type?.getText(source) ?? '').startsWith('Promise<'),
          })
        }
      }
      classes.set(statement.name.text, { constructorParams, methods })
    }
    if (ts.isFunctionDeclaration(statement) && statement.name && exported(statement)) {
      functions.set(statement.name.text, statement.parameters.length)
    }
  }
  return { classes, functions }
}

test('the exports are what index.d.ts declares, without test hooks', () => {
  const { classes, functions } = declarations()
  assert.deepEqual(Object.keys(ra).sort(), [...classes.keys(), ...functions.keys()].sort())
  for (const name of classes.keys()) assert.equal(typeof /** @type {any} */ (ra)[name], 'function', name)
  const declared = fs.readFileSync(path.join(dir, 'index.d.ts'), 'utf8')
  for (const hook of ['_errorForTest', '_setErrorClass', '__napiBindingTarget']) {
    assert.ok(!(hook in ra), hook)
    assert.ok(!declared.includes(hook), hook)
  }
  // The Promise-returning methods the package guards are the ones index.d.ts declares.
  /** @type {Record<string, string[]>} */
  const promises = {}
  for (const [name, { methods }] of classes) {
    const names = methods.filter((method) => method.promise).map((method) => method.name)
    if (names.length > 0) promises[name] = names.sort()
  }
  const guarded = Object.fromEntries(Object.entries(internals.PROMISE_METHODS).map(([name, names]) => [name, [...names].sort()]))
  assert.deepEqual(guarded, promises)
})

/** One object of each class, to call its methods on. */
async function instances() {
  const authority = new ra.Authority({ vncPorts: [await freePort()] })
  const credentials = await authority.issue('b-surface', {
    trigger: 'manual', remoteAccessEnabled: true, builder: { address: '127.0.0.1', vncPort: 5900, reverseTunnel: true },
  })
  const session = await authority.session('b-surface')
  const hostKey = ra.HostKey.generate()
  const gateway = new ra.Gateway(authority, { hostKey })
  const running = await gateway.start('127.0.0.1:0')
  const agent = ra.runAgent({
    gateway: `127.0.0.1:${await freePort()}`, gatewayHostKey: hostKey.publicKey,
    username: credentials.agentUsername ?? '', privateKey: credentials.agentPrivateKeyOpenssh() ?? '',
    minBackoffMs: 1000,
  })
  /** @type {Record<string, any>} */
  const objects = {
    Authority: authority,
    ConnectionInfo: new ra.ConnectionInfo(credentials, session, hostKey, { gatewayHost: 'gw.example', gatewayPort: 2222 }),
    Credentials: credentials,
    EventListener: authority.onEvent(() => {}),
    Gateway: gateway,
    HostKey: hostKey,
    LiveConnection: await authority.connected('b-surface', 'ssh'),
    LogListener: ra.onLog(() => {}),
    ManualClock: new ra.ManualClock('2026-11-28T12:00:00Z'),
    RunningAgent: agent,
    RunningGateway: running,
    RunningHousekeeping: authority.runHousekeeping(),
    Session: session,
    Subscription: authority.subscribe(),
    TlsIdentity: ra.TlsIdentity.generate(['gw.example']),
  }
  const close = async () => {
    objects.EventListener.close()
    objects.LogListener.close()
    objects.Subscription.close()
    objects.RunningHousekeeping.stop()
    agent.stop()
    await agent.done()
    await running.stop()
  }
  return { objects, close, secrets: [credentials.privateKeyOpenssh(), credentials.agentPrivateKeyOpenssh() ?? '', credentials.vncPassword(), hostKey.toOpenssh()] }
}

/**
 * Asserts that `error` is this package's refusal of an argument.
 * @param {unknown} error
 * @param {string} call
 */
function assertRefused(error, call) {
  assert.ok(error instanceof ra.RemoteAccessError, `${call}: ${util.inspect(error)}`)
  assert.equal(error.code, 'invalid_input', call)
  assert.equal(error.name, 'RemoteAccessError')
  assert.ok(error.what && error.problem, call)
}

test('wrongly typed arguments: invalid_input, thrown or (for Promises) rejected', async () => {
  const { classes, functions } = declarations()
  const { objects, close } = await instances()
  const wrong = Symbol('wrong') // no parameter of this package takes a symbol
  /** @type {string[]} */
  const checked = []
  /**
   * @param {string} call
   * @param {() => unknown} invoke
   * @param {boolean} promise
   */
  const check = async (call, invoke, promise) => {
    let result
    try {
      result = invoke()
    } catch (error) {
      assert.ok(!promise, `${call} threw instead of rejecting: ${util.inspect(error)}`)
      assertRefused(error, call)
      checked.push(call)
      return
    }
    assert.ok(promise, `${call} accepted a symbol`)
    assert.ok(result instanceof Promise, call)
    await assert.rejects(result, (error) => (assertRefused(error, call), true))
    checked.push(call)
  }
  try {
    for (const [name, { constructorParams, methods }] of classes) {
      const Class = /** @type {any} */ (ra)[name]
      if (name === 'RemoteAccessError') continue
      if (constructorParams === null) {
        // napi-rs classes without a constructor: made by the package, not with `new`.
        await check(`new ${name}()`, () => new Class(), false)
      } else if (constructorParams > 0) {
        await check(`new ${name}(...)`, () => new Class(...Array(constructorParams).fill(wrong)), false)
      }
      for (const method of methods) {
        if (method.params === 0) continue
        const target = method.isStatic ? Class : objects[name]
        assert.ok(target, `an object of ${name}`)
        const args = Array(method.params).fill(wrong)
        await check(`${name}${method.isStatic ? '.' : '#'}${method.name}`, () => target[method.name](...args), method.promise)
      }
    }
    for (const [name, params] of functions) {
      if (params > 0) await check(name, () => /** @type {any} */ (ra)[name](...Array(params).fill(wrong)), false)
    }
  } finally {
    await close()
  }
  // Not vacuous: the Promise methods of the authority, a static factory, a constructor.
  for (const call of ['Authority#issue', 'Authority#revoke', 'HostKey.fromOpenssh', 'new Gateway(...)', 'new Credentials()', 'runAgent']) {
    assert.ok(checked.includes(call), `${call} not among ${checked.join(', ')}`)
  }
})

test('RemoteAccessError: instanceof, name, code, details and cause; users can make one', async () => {
  const authority = new ra.Authority()
  const missing = await authority.session('b-nope').catch((error) => error)
  assert.ok(missing instanceof ra.RemoteAccessError)
  assert.ok(missing instanceof Error)
  assert.equal(missing.name, 'RemoteAccessError')
  assert.equal(missing.code, 'unknown_build')
  assert.equal(missing.buildId, 'b-nope')
  assert.match(String(missing), /^RemoteAccessError: no remote access session for build b-nope$/)
  assert.match(util.inspect(missing), /code: 'unknown_build'/)
  // A refusal by napi-rs itself (a missing field) speaks the same vocabulary.
  const field = await authority.issue('b-1', /** @type {any} */ ({ remoteAccessEnabled: true })).catch((error) => error)
  assert.ok(field instanceof ra.RemoteAccessError)
  assert.equal(field.code, 'invalid_input')
  assert.match(field.message, /trigger/)
  const nested = (() => {
    try {
      return new ra.Authority(/** @type {any} */ ({ policy: { graceMs: 'soon' } }))
    } catch (error) {
      return error
    }
  })()
  assert.ok(nested instanceof ra.RemoteAccessError)
  assert.equal(nested.what, 'policy.graceMs')
  const made = new ra.RemoteAccessError('contention', 'try again', { causes: ['outer', 'inner'] })
  assert.equal(made.code, 'contention')
  assert.equal(made.cause instanceof Error && made.cause.message, 'outer')
  assert.equal(made.cause instanceof Error && made.cause.cause instanceof Error && made.cause.cause.message, 'inner')
})

test('util.inspect shows each class by name with its public parts, never a secret', async () => {
  const { objects, close, secrets } = await instances()
  try {
    for (const [name, object] of Object.entries(objects)) {
      const text = util.inspect(object, { depth: 4 })
      assert.match(text, new RegExp(`^${name} \\{`), text)
      assert.ok(!/^\w+ \{\}$/.test(text), `${name} shows nothing: ${text}`)
      for (const secret of secrets) {
        const body = secret.includes('\n') ? secret.trim().split('\n')[1] : secret
        assert.ok(!text.includes(body), `a secret in ${text}`)
      }
    }
    assert.match(util.inspect(objects.RunningGateway), /RunningGateway \{ host: '127\.0\.0\.1', port: \d+ \}/)
    assert.match(util.inspect(objects.LiveConnection), /protocol: 'ssh'/)
    assert.match(util.inspect(objects.ManualClock), /ManualClock \{ now: '2026-11-28T12:00:00Z' \}/)
    assert.match(util.inspect({ nested: { deeper: objects.HostKey } }, { depth: 1 }), /\[HostKey\]/)
  } finally {
    await close()
  }
})

test('one JSON casing: every key of every toJSON(), event and error is camelCase', async () => {
  const authority = new ra.Authority({ vncPorts: [await freePort()] })
  /** @type {unknown[]} */
  const events = []
  const listener = authority.onEvent((event) => events.push(event))
  const credentials = await authority.issue('b-json', {
    trigger: 'manual', remoteAccessEnabled: true, builder: { address: '10.0.3.7', vncPort: 5900, extraPorts: [8080] },
  })
  const connection = await authority.connected('b-json', 'vnc')
  await authority.stepsCompleted('b-json')
  const session = await authority.session('b-json')
  const hostKey = ra.HostKey.generate()
  const info = new ra.ConnectionInfo(credentials, session, hostKey, { gatewayHost: 'gw.example' })
  const error = await authority.issue('b-json', { trigger: 'manual', remoteAccessEnabled: true }).catch((e) => e)
  await connection.disconnect()
  await new Promise((resolve) => setTimeout(resolve, 50))
  listener.close()
  const json = JSON.parse(JSON.stringify({ credentials, session, hostKey, info, identity: ra.TlsIdentity.generate(['gw.example']), events, error }))
  assert.equal(json.session.builder.address, '10.0.3.7')
  assert.equal(json.session.policy.graceMs, 20 * 60_000)
  assert.equal(json.error.code, 'build_exists')
  assert.ok(json.events.length >= 4)
  /** @type {string[]} */
  const keys = []
  /** @param {unknown} value */
  const walk = (value) => {
    if (Array.isArray(value)) value.forEach(walk)
    else if (value && typeof value === 'object') {
      for (const [key, inner] of Object.entries(value)) {
        keys.push(key)
        walk(inner)
      }
    }
  }
  walk(json)
  assert.deepEqual(keys.filter((key) => !/^[a-z][A-Za-z0-9]*$/.test(key)), [])
})
