// @ts-check
// The example in docs/node.md runs as written (and type-checks): against a real sshd, the
// connection info comes back as JSON, the script it hands out gets a shell on the builder, and
// core errors become HTTP statuses.
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')

const { startSshd, runScript } = require('./peers')
const { dir: packageDir } = require('./package')

const PACKAGE = path.resolve(__dirname, '..')
const DOC = path.resolve(PACKAGE, '..', 'docs', 'node.md')

/** A scratch project where `require('remote-access')` finds the package under test, with the example. */
function project() {
  const blocks = [...fs.readFileSync(DOC, 'utf8').matchAll(/```js\n([\s\S]*?)```/g)]
  assert.ok(blocks.length > 0, 'docs/node.md has no js example')
  const project = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-example-'))
  fs.mkdirSync(path.join(project, 'node_modules'))
  fs.symlinkSync(packageDir, path.join(project, 'node_modules', 'remote-access'))
  fs.writeFileSync(path.join(project, 'ci-service.js'), blocks[0][1])
  return project
}

test('the documented CI service type-checks', () => {
  const dir = project()
  try {
    execFileSync(
      path.join(PACKAGE, 'node_modules', '.bin', 'tsc'),
      ['--noEmit', '--allowJs', '--checkJs', '--strict', '--target', 'es2022', '--module', 'commonjs',
        '--moduleResolution', 'node', '--types', 'node', '--typeRoots', path.join(PACKAGE, 'node_modules', '@types'),
        'ci-service.js'],
      { cwd: dir, stdio: 'pipe' },
    )
  } catch (err) {
    assert.fail(String(/** @type {{stdout?: Buffer}} */ (err).stdout ?? err))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('the documented CI service runs', async () => {
  const sshd = await startSshd()
  const dir = project()
  const service = spawn(process.execPath, ['ci-service.js'], {
    cwd: dir,
    env: { ...process.env, BUILDER_AUTHORIZED_KEYS: path.join(sshd.dir, 'authorized_keys') },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  try {
    const lines = readline.createInterface({ input: service.stdout })[Symbol.asyncIterator]()
    const first = await lines.next()
    const port = Number(/^listening on (\d+)$/.exec(first.value ?? '')?.[1])
    assert.ok(port > 0, first.value)
    const base = `http://127.0.0.1:${port}/builds/ci-42`
    const builder = { address: '127.0.0.1', sshPort: sshd.port, user: 'root', hostKey: sshd.hostKey }

    const created = await fetch(base, { method: 'POST', body: JSON.stringify({ builder }) })
    assert.equal(created.status, 201)
    const info = await created.json()
    assert.equal(info.buildId, 'ci-42')
    assert.equal(info.builderPort, sshd.port)
    assert.ok(!JSON.stringify(info).includes('PRIVATE KEY'))

    const script = await fetch(`${base}/script`)
    assert.equal(script.status, 200)
    const file = path.join(dir, 'build.sh')
    fs.writeFileSync(file, await script.text(), { mode: 0o600 })
    assert.equal((await fetch(`${base}/script`)).status, 404, 'the script is handed out once')
    const [code, out, err] = await runScript(file, 'printenv', 'FCI_BUILD_DIR')
    assert.equal(code, 0, err)
    assert.equal(out.trim(), sshd.buildDir)

    const again = await fetch(base, { method: 'POST', body: JSON.stringify({ builder }) })
    assert.equal(again.status, 409)
    assert.equal((await again.json()).code, 'build_exists')
    const bad = await fetch(`http://127.0.0.1:${port}/builds/bad%20id`, { method: 'POST', body: '{}' })
    assert.equal(bad.status, 400)
    assert.equal((await bad.json()).code, 'invalid_input')
    assert.equal((await fetch(`${base}/steps-completed`, { method: 'POST' })).status, 204)

    // The service logged the events.
    /** @type {string[]} */
    const logged = []
    while (!logged.some((line) => line.startsWith('steps_completed ci-42'))) {
      const next = await lines.next()
      assert.ok(!next.done)
      logged.push(next.value)
    }
    assert.ok(logged.some((line) => line.startsWith('connected ci-42')), logged.join('\n'))
  } finally {
    service.kill()
    await sshd.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
