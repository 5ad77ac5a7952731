// @ts-check
// Installed as a user would in another project, from the package's tarball (`npm pack`: only
// the files package.json ships), the package loads with `require` and with `import`.
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const PACKAGE = path.resolve(__dirname, '..')

test('npm pack, npm install <tarball>, then require and import', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-install-'))
  try {
    const tarball = execFileSync('npm', ['pack', '--loglevel=error', '--pack-destination', dir, PACKAGE], { cwd: dir, encoding: 'utf8' })
      .trim().split('\n').pop() ?? ''
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'user-project', private: true }))
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', path.join(dir, tarball)], { cwd: dir, stdio: 'pipe' })
    // A copy, not a link to the checkout.
    assert.ok(!fs.lstatSync(path.join(dir, 'node_modules', 'remote-access')).isSymbolicLink())
    const required = execFileSync(
      process.execPath,
      ['-e', "const ra = require('remote-access'); console.log(typeof ra.Authority, ra.HostKey.generate().fingerprint.slice(0, 7))"],
      { cwd: dir, encoding: 'utf8' },
    )
    assert.equal(required.trim(), 'function SHA256:')
    const imported = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', "import { Authority, HostKey } from 'remote-access'; console.log(typeof Authority, HostKey.generate().fingerprint.slice(0, 7))"],
      { cwd: dir, encoding: 'utf8' },
    )
    assert.equal(imported.trim(), 'function SHA256:')
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
