// @ts-check
// `npx remote-access`: the command line from the package's `bin`, run as a user's shell would
// (against an installed copy: node_modules/.bin/remote-access, which npm links to cli.js).
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const { dir } = require('./package')

/** The command as npm installed it, or cli.js in the checkout. */
function command() {
  const linked = path.join(dir, '..', '.bin', 'remote-access')
  return fs.existsSync(linked) ? [linked] : [process.execPath, path.join(dir, 'cli.js')]
}

/** @param {string[]} args */
function run(args) {
  const [program, ...first] = command()
  const env = { ...process.env }
  delete env.REMOTE_ACCESS_REDIS_URL
  return spawnSync(program, [...first, ...args], { encoding: 'utf8', env, timeout: 60_000 })
}

test('remote-access --help lists the commands; each takes --help', () => {
  const help = run(['--help'])
  assert.equal(help.status, 0, help.stderr)
  assert.match(help.stdout, /^remote-access: temporary SSH and VNC access/)
  for (const name of ['gateway', 'issue', 'script', 'status', 'revoke']) {
    assert.match(help.stdout, new RegExp(`\\n  ${name} `))
    const one = run([name, '--help'])
    assert.equal(one.status, 0, one.stderr)
    assert.match(one.stdout, new RegExp(`^usage: remote-access ${name}`))
  }
})

test('a usage error exits 2 and says what is wrong', () => {
  const missing = run(['status', 'b-1'])
  assert.equal(missing.status, 2)
  assert.match(missing.stderr, /REMOTE_ACCESS_REDIS_URL/)
  const unknown = run(['frobnicate'])
  assert.equal(unknown.status, 2)
  assert.match(unknown.stderr, /unknown command "frobnicate"/)
})
