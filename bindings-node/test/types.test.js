// @ts-check
// The declarations as a TypeScript user meets them: `tsc --strict` accepts a correct program
// (test/types/ok.ts), which then runs (`await using` stops a gateway at the end of a block), and
// refuses one with typos in the fixed sets of strings (test/types/typos.ts), each for its typo.
'use strict'

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { dir } = require('./package')

const CHECKOUT = path.resolve(__dirname, '..')
const TSC = path.join(CHECKOUT, 'node_modules', '.bin', 'tsc')

/**
 * Compiles `fixture` (test/types/, or `text` under that name) with `tsc --strict` in a scratch
 * project where `remote-access` is the package under test; `body` gets the project and tsc's
 * result.
 * @param {string} fixture
 * @param {(project: string, result: { status: number | null, output: string }) => void} body
 * @param {string} [text]
 */
function compile(fixture, body, text) {
  const project = fs.mkdtempSync(path.join(os.tmpdir(), 'ra-node-types-'))
  try {
    fs.mkdirSync(path.join(project, 'node_modules'))
    fs.symlinkSync(dir, path.join(project, 'node_modules', 'remote-access'))
    fs.writeFileSync(path.join(project, fixture), text ?? fs.readFileSync(path.join(__dirname, 'types', fixture), 'utf8'))
    const result = spawnSync(
      TSC,
      ['--strict', '--target', 'es2022', '--module', 'commonjs', '--moduleResolution', 'node10',
        '--lib', 'es2022,esnext.disposable', '--types', 'node', '--typeRoots', path.join(CHECKOUT, 'node_modules', '@types'),
        '--allowJs', '--checkJs', '--outDir', 'out', fixture],
      { cwd: project, encoding: 'utf8' },
    )
    body(project, { status: result.status, output: result.stdout + result.stderr })
  } finally {
    fs.rmSync(project, { recursive: true, force: true })
  }
}

test('a correct TypeScript program compiles with --strict and runs; await using stops the gateway', () => {
  compile('ok.ts', (project, { status, output }) => {
    assert.equal(status, 0, output)
    const printed = execFileSync(process.execPath, [path.join('out', 'ok.js')], { cwd: project, encoding: 'utf8' })
    assert.deepEqual(printed.trim().split('\n'), [
      'serving true',
      'after the block false',
      'RemoteAccessError build_exists 409',
      'steps_running issued, connected ssh true, disconnected ssh true, connected vnc true, dropped vnc true false',
    ])
  })
})

test('typos in trigger, event kind, phase, protocol and error code do not compile', () => {
  compile('typos.ts', (_, { status, output }) => {
    assert.notEqual(status, 0, 'tsc accepted the typos')
    const lines = fs.readFileSync(path.join(__dirname, 'types', 'typos.ts'), 'utf8').split('\n')
    const typos = lines.flatMap((line, index) => (/\/\/ typo: /.test(line) ? [index + 1] : []))
    assert.equal(typos.length, 5)
    // One error on each marked line and none elsewhere (not a missing module, say).
    const errors = [...output.matchAll(/^typos\.ts\((\d+),\d+\): error (TS\d+)/gm)].map((match) => Number(match[1]))
    assert.deepEqual([...new Set(errors)], typos, output)
    assert.match(output, /"manul"' is not assignable to type 'Trigger'/)
    assert.match(output, /'"finishbuild"' have no overlap/)
    assert.match(output, /"rdp"' is not assignable to parameter of type 'Protocol'/)
  })
})

test("the README's JavaScript and TypeScript examples compile with --strict", () => {
  const readme = fs.readFileSync(path.join(dir, 'README.md'), 'utf8')
  for (const [language, file] of [['js', 'readme.js'], ['ts', 'readme.ts']]) {
    const blocks = [...readme.matchAll(new RegExp('```' + language + '\\n([\\s\\S]*?)```', 'g'))]
    assert.equal(blocks.length, 1, language)
    compile(file, (_, { status, output }) => assert.equal(status, 0, output), blocks[0][1])
  }
})
