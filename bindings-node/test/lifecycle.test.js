// @ts-check
// Lifecycles as Node programs expect them, each in a child process running nothing else: a
// started gateway, an agent and the housekeeping loop keep the process alive until stopped
// (`unref()` lets it exit, `ref()` holds it again), like a listening net.Server or a timer; the
// handles the package hands out are disposable (`Symbol.asyncDispose`, `Symbol.dispose`).
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const net = require('node:net')

const { ra, dir } = require('./package')
const { freePort } = require('./peers')

/**
 * Runs `source` in a child Node (`ra` is the package under test there); resolves when it exits,
 * with how long it lived and what it printed. `onLine` sees each line as it comes.
 * @param {string} source
 * @param {(line: string) => void} [onLine]
 * @returns {Promise<{ code: number | null, ms: number, lines: string[], stderr: string }>}
 */
function child(source, onLine = () => {}) {
  const started = Date.now()
  const node = spawn(process.execPath, ['-e', `const ra = require(${JSON.stringify(dir)});\n${source}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  /** @type {string[]} */
  const lines = []
  let partial = ''
  let stderr = ''
  node.stdout.setEncoding('utf8').on('data', (chunk) => {
    partial += chunk
    const complete = partial.split('\n')
    partial = complete.pop() ?? ''
    for (const line of complete) {
      lines.push(line)
      onLine(line)
    }
  })
  node.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk))
  return new Promise((resolve) => node.on('close', (code) => resolve({ code, ms: Date.now() - started, lines, stderr })))
}

/** Whether an SSH server answers on `port` (its identification line). @param {number} port */
function sshAnswers(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('data', (data) => {
      socket.destroy()
      resolve(data.toString().startsWith('SSH-2.0-'))
    })
    socket.once('error', () => resolve(false))
  })
}

// A gateway that only the timer stops: the timer is unref'd, so it fires only if something
// else keeps the process alive, which must be the gateway itself.
const GATEWAY = `
(async () => {
  const running = await new ra.Gateway(new ra.Authority(), { hostKey: ra.HostKey.generate() }).start('127.0.0.1:0')
  console.log(running.port)
  console.log(running.hasRef())
  setTimeout(() => running.stop().then(() => console.log('stopped', running.hasRef())), 1500).unref()
})()
`

test('a process running only a gateway stays alive, serving, until stop()', async () => {
  /** @type {Promise<boolean> | undefined} */
  let served
  const { code, ms, lines, stderr } = await child(GATEWAY, (line) => {
    if (served === undefined) served = sshAnswers(Number(line))
  })
  assert.equal(code, 0, stderr)
  assert.equal(await served, true)
  assert.deepEqual(lines.slice(1), ['true', 'stopped false'])
  assert.ok(ms >= 1400, `exited after ${ms} ms`)
})

test('unref() lets a process running only a gateway exit; ref() holds it again', async () => {
  const unrefd = await child(GATEWAY.replace("console.log(running.hasRef())", "console.log(running.unref().hasRef())"))
  assert.equal(unrefd.code, 0, unrefd.stderr)
  assert.deepEqual(unrefd.lines.slice(1), ['false'], 'exited without stopping the gateway')
  const again = await child(GATEWAY.replace("console.log(running.hasRef())", "console.log(running.unref().ref().hasRef())"))
  assert.equal(again.code, 0, again.stderr)
  assert.deepEqual(again.lines.slice(1), ['true', 'stopped false'])
})

test('an agent and the housekeeping keep the process alive until stopped', async () => {
  const port = await freePort() // nothing listens: the agent keeps retrying
  const agent = await child(`
    const agent = ra.runAgent({ gateway: '127.0.0.1:${port}', gatewayHostKey: ra.HostKey.generate().publicKey,
      username: 'ra-nobody', privateKey: ra.HostKey.generate().toOpenssh(), minBackoffMs: 50, maxBackoffMs: 100 })
    setTimeout(() => { agent.stop(); agent.done().then((why) => console.log(why, agent.hasRef())) }, 1000).unref()
  `)
  assert.equal(agent.code, 0, agent.stderr)
  assert.deepEqual(agent.lines, ['stopped false'])
  assert.ok(agent.ms >= 900, `exited after ${agent.ms} ms`)

  const unrefd = await child(`
    const agent = ra.runAgent({ gateway: '127.0.0.1:${port}', gatewayHostKey: ra.HostKey.generate().publicKey,
      username: 'ra-nobody', privateKey: ra.HostKey.generate().toOpenssh() }).unref()
    setTimeout(() => console.log('still running'), 1000).unref()
  `)
  assert.equal(unrefd.code, 0, unrefd.stderr)
  assert.deepEqual(unrefd.lines, [])

  const housekeeping = await child(`
    const housekeeping = new ra.Authority().runHousekeeping()
    setTimeout(() => { housekeeping.stop(); console.log('stopped', housekeeping.stopped) }, 1000).unref()
  `)
  assert.equal(housekeeping.code, 0, housekeeping.stderr)
  assert.deepEqual(housekeeping.lines, ['stopped true'])
  assert.ok(housekeeping.ms >= 900, `exited after ${housekeeping.ms} ms`)
})

test('listeners and subscriptions do not keep the process alive', async () => {
  const { code, ms, lines, stderr } = await child(`
    const authority = new ra.Authority()
    authority.onEvent(() => {})
    ra.onLog(() => {}, { level: 'trace' })
    authority.subscribe()
    console.log('done')
  `)
  assert.equal(code, 0, stderr)
  assert.deepEqual(lines, ['done'])
  assert.ok(ms < 10_000)
})

test('Symbol.asyncDispose stops a gateway and an agent; Symbol.dispose closes the others', async () => {
  const authority = new ra.Authority()
  const running = await new ra.Gateway(authority, { hostKey: ra.HostKey.generate() }).start('127.0.0.1:0')
  assert.equal(await sshAnswers(running.port), true)
  await running[Symbol.asyncDispose]()
  assert.equal(await sshAnswers(running.port), false)
  assert.equal(running.hasRef(), false)

  const agent = ra.runAgent({
    gateway: `127.0.0.1:${await freePort()}`, gatewayHostKey: ra.HostKey.generate().publicKey,
    username: 'ra-nobody', privateKey: ra.HostKey.generate().toOpenssh(),
  })
  await agent[Symbol.asyncDispose]()
  assert.equal(await agent.done(), 'stopped')

  const subscription = authority.subscribe()
  subscription[Symbol.dispose]()
  assert.equal(subscription.closed, true)
  const listener = authority.onEvent(() => {})
  listener[Symbol.dispose]()
  assert.equal(listener.closed, true)
  const logs = ra.onLog(() => {})
  logs[Symbol.dispose]()
  assert.equal(logs.closed, true)
  const housekeeping = authority.runHousekeeping()
  housekeeping[Symbol.dispose]()
  assert.equal(housekeeping.stopped, true)
})
