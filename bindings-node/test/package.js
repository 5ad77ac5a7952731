// @ts-check
// The package under test: this checkout (after `npm run build`), or the copy npm installed that
// REMOTE_ACCESS_PACKAGE names (scripts/test packs the package and its platform package, installs
// both in a fresh project without Rust on the PATH and points this there), so that the same
// tests run against either. Types come from the checkout's index.d.ts, which is what is packed.
'use strict'

const path = require('node:path')

/** The package's directory. */
const dir = path.resolve(process.env.REMOTE_ACCESS_PACKAGE || path.join(__dirname, '..'))

/** @type {typeof import('..')} */
const ra = require(dir)

/**
 * What the package keeps for its tests only, out of its types: the addon itself with its test
 * hooks, and the table of methods that return a Promise.
 * @type {{ native: Record<string, any>, PROMISE_METHODS: Record<string, string[]>, platformKey: () => string, namespaceOf: (target: string) => string }}
 */
const internals = /** @type {any} */ (ra)[Symbol.for('remote-access.internals')]

module.exports = { ra, dir, internals }
