// @ts-check
// The npm packages: the main package (JavaScript and types) lists one package per platform
// (the native addon) as optional dependencies, all of the same version, each with the license;
// the loader names the platform and what to do when the addon is missing. Against an
// installed copy (REMOTE_ACCESS_PACKAGE, as scripts/test runs the suite), the addon comes from
// the platform package, stripped, and `import` works as well as `require`.
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { dir, internals } = require('./package')

const CHECKOUT = path.resolve(__dirname, '..')
/** @param {string} file */
const readJson = (file) => JSON.parse(fs.readFileSync(file, 'utf8'))

test('one package per platform, listed as optional dependencies of the same version, each licensed', () => {
  const main = readJson(path.join(CHECKOUT, 'package.json'))
  const license = fs.readFileSync(path.join(CHECKOUT, 'LICENSE'), 'utf8')
  assert.match(license, /^\s*Apache License\s+Version 2\.0, January 2004/)
  assert.match(license, /END OF TERMS AND CONDITIONS/)
  assert.equal(main.license, 'Apache-2.0')
  assert.ok(!('repository' in main), 'no repository: the project has no public one yet')
  const platforms = fs.readdirSync(path.join(CHECKOUT, 'npm')).sort()
  assert.deepEqual(Object.keys(main.optionalDependencies).sort(), platforms.map((platform) => `${main.name}-${platform}`))
  assert.equal(main.napi.targets.length, platforms.length)
  for (const platform of platforms) {
    const packageDir = path.join(CHECKOUT, 'npm', platform)
    const manifest = readJson(path.join(packageDir, 'package.json'))
    assert.equal(manifest.name, `${main.name}-${platform}`)
    assert.equal(manifest.version, main.version)
    assert.equal(main.optionalDependencies[manifest.name], main.version)
    assert.equal(manifest.main, `${main.napi.binaryName}.${platform}.node`)
    assert.deepEqual(manifest.files, [manifest.main])
    assert.ok(manifest.os.length === 1 && manifest.cpu.length === 1, platform)
    assert.equal(manifest.license, 'Apache-2.0')
    assert.equal(fs.readFileSync(path.join(packageDir, 'LICENSE'), 'utf8'), license, platform)
    assert.match(fs.readFileSync(path.join(packageDir, 'README.md'), 'utf8'), new RegExp(`npm install ${main.name}\\b`))
  }
  // The README npm shows: no links that only work in the repository, no placeholders.
  const readme = fs.readFileSync(path.join(CHECKOUT, 'README.md'), 'utf8')
  const links = [...readme.matchAll(/\]\(([^)]+)\)/g)].map((match) => match[1])
  assert.deepEqual(links.filter((link) => !/^https:\/\/[a-z0-9.-]+\.[a-z]+\//.test(link)), [])
  assert.doesNotMatch(readme, /example\.com\/|TODO|XXX|your-org|<repo>/i)
  assert.match(readme, /npm install remote-access/)
})

/**
 * Runs `require('remote-access')` in a scratch project that has the main package (the files
 * it ships) but not its platform package; `preload` runs first. Returns the error's message.
 * @param {string} [preload]
 */
function loadWithoutAddon(preload = '') {
  const project = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-noaddon-'))
  try {
    const copy = path.join(project, 'node_modules', 'remote-access')
    fs.mkdirSync(copy, { recursive: true })
    for (const file of ['package.json', 'index.js', 'index.d.ts']) fs.copyFileSync(path.join(dir, file), path.join(copy, file))
    const result = spawnSync(process.execPath, ['-e', `${preload}\ntry { require('remote-access') } catch (err) { console.log(err.message) }`], {
      cwd: project, encoding: 'utf8',
    })
    assert.equal(result.status, 0, result.stderr)
    return result.stdout.trim()
  } finally {
    fs.rmSync(project, { recursive: true, force: true })
  }
}

test('without its platform package, the error names the platform and what to do', () => {
  const key = internals.platformKey()
  const missing = loadWithoutAddon()
  assert.ok(missing.includes(`the native addon for this platform (${key}) is not installed`), missing)
  assert.ok(missing.includes(`npm install remote-access-${key}@`), missing)
  assert.match(missing, /--omit=optional/)
  assert.doesNotMatch(missing, /npm has a bug related to optional dependencies/)

  const elsewhere = loadWithoutAddon("Object.defineProperty(process, 'platform', { value: 'sunos' })")
  assert.ok(elsewhere.includes(`no prebuilt native addon for this platform (sunos-${process.arch})`), elsewhere)
  assert.match(elsewhere, /linux-x64-gnu, .*darwin-arm64/)
  assert.match(elsewhere, /npm run build/)
})

/**
 * Whether an ELF file has a symbol table (`.symtab`): a section header of type SHT_SYMTAB.
 * @param {string} file
 */
function hasSymbolTable(file) {
  const elf = fs.readFileSync(file)
  assert.equal(elf.toString('latin1', 1, 4), 'ELF')
  assert.equal(elf[4], 2, 'a 64-bit ELF')
  const sections = Number(elf.readBigUInt64LE(0x28))
  const size = elf.readUInt16LE(0x3a)
  const count = elf.readUInt16LE(0x3c)
  for (let i = 0; i < count; i++) {
    if (elf.readUInt32LE(sections + i * size + 4) === 2) return true
  }
  return false
}

test('installed: the addon comes from the platform package, stripped; require and import work', { skip: !process.env.REMOTE_ACCESS_PACKAGE && 'runs against an installed copy (REMOTE_ACCESS_PACKAGE)' }, () => {
  const modules = path.dirname(dir)
  assert.equal(path.basename(modules), 'node_modules')
  const project = path.dirname(modules)
  // Copies, not links to the checkout; no addon in the main package.
  assert.ok(!fs.lstatSync(dir).isSymbolicLink())
  assert.deepEqual(fs.readdirSync(dir).filter((file) => file.endsWith('.node')), [])
  const key = internals.platformKey()
  const platformDir = path.join(modules, `remote-access-${key}`)
  const addon = path.join(platformDir, `remote-access.${key}.node`)
  assert.ok(fs.existsSync(addon))
  assert.ok(fs.existsSync(path.join(platformDir, 'LICENSE')) && fs.existsSync(path.join(dir, 'LICENSE')))
  if (process.platform === 'linux') assert.equal(hasSymbolTable(addon), false, 'the addon is not stripped')
  assert.ok(require.cache[fs.realpathSync(addon)], 'the tests did not load the platform package')
  const required = execFileSync(process.execPath, ['-e', "const ra = require('remote-access'); console.log(typeof ra.Authority, ra.HostKey.generate().fingerprint.slice(0, 7))"], { cwd: project, encoding: 'utf8' })
  assert.equal(required.trim(), 'function SHA256:')
  const imported = execFileSync(process.execPath, ['--input-type=module', '-e', "import { Authority, HostKey, RemoteAccessError } from 'remote-access'; console.log(typeof Authority, typeof RemoteAccessError, HostKey.generate().fingerprint.slice(0, 7))"], { cwd: project, encoding: 'utf8' })
  assert.equal(imported.trim(), 'function function SHA256:')
})
