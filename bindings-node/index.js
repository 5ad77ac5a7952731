// The package `remote-access`: the Rust core through its native addon (bindings-node/src,
// napi-rs), and what only JavaScript can add:
//
// - loading the addon for this platform, from the checkout (after `npm run build`) or from the
//   platform package npm installed (`remote-access-linux-x64-gnu`, ...), with an error that
//   says what to do when it is missing;
// - `RemoteAccessError`, the class of every error (the addon makes core errors with it), and
//   napi-rs's own refusals of an argument turned into its `invalid_input`;
// - Promise-returning methods that reject, never throw, on a bad argument;
// - `Symbol.asyncDispose`/`Symbol.dispose`, `util.inspect` output, `DEBUG=remote-access*`.
//
// The types are in index.d.ts, generated from the Rust sources with header.d.ts in front.
'use strict'

const fs = require('node:fs')
const path = require('node:path')
const util = require('node:util')
const pkg = require('./package.json')

// ---------------------------------------------------------------------------------------------
// Loading the native addon.

/** `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`, ...: napi-rs's names of platforms. */
function platformKey() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

/** Whether this Linux runs on musl (Alpine) rather than glibc. */
function isMusl() {
  try {
    return fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl')
  } catch {
    try {
      return fs.readdirSync('/lib').some((name) => name.startsWith('ld-musl-'))
    } catch {
      return false
    }
  }
}

/** The platforms with a prebuilt addon: one optional dependency each. */
function supportedPlatforms() {
  const prefix = `${pkg.name}-`
  return Object.keys(pkg.optionalDependencies ?? {}).map((name) => name.slice(prefix.length))
}

function loadNative() {
  const key = platformKey()
  // A checkout where `npm run build` compiled the addon.
  const local = path.join(__dirname, `${pkg.napi.binaryName}.${key}.node`)
  if (fs.existsSync(local)) {
    try {
      return require(local)
    } catch (cause) {
      throw new Error(`${pkg.name}: the native addon ${local} does not load (${describe(cause)}); rebuild it with \`npm run build\``, { cause })
    }
  }
  const supported = supportedPlatforms()
  if (!supported.includes(key)) {
    throw new Error(
      `${pkg.name} ${pkg.version} has no prebuilt native addon for this platform (${key}); ` +
        `prebuilt ones exist for ${supported.join(', ')}. Elsewhere, build it from the project's ` +
        'sources: `npm install && npm run build` in bindings-node (needs Rust 1.89 or later).',
    )
  }
  const name = `${pkg.name}-${key}`
  const wanted = `${name}@${pkg.version}`
  let installed
  try {
    installed = require(`${name}/package.json`).version
  } catch (cause) {
    throw new Error(
      `${pkg.name}: the native addon for this platform (${key}) is not installed. It is the package ` +
        `${wanted}, an optional dependency of ${pkg.name} that npm installs only on ${key}; it is ` +
        'left out when optional dependencies are omitted (--omit=optional, --no-optional, or ' +
        'omit=optional in .npmrc), or when node_modules or package-lock.json were made on another ' +
        'platform (https://github.com/npm/cli/issues/4828). Install it with ' +
        `\`npm install ${wanted}\`, or delete node_modules and package-lock.json and run \`npm install\` ` +
        'again on this machine.',
      { cause },
    )
  }
  if (installed !== pkg.version) {
    throw new Error(
      `${pkg.name} ${pkg.version} needs its native addon ${wanted}, but ${name}@${installed} is ` +
        `installed: run \`npm install ${wanted}\`.`,
    )
  }
  try {
    return require(name)
  } catch (cause) {
    throw new Error(`${pkg.name}: the native addon ${name} does not load on this machine (${describe(cause)})`, { cause })
  }
}

/** @param {unknown} err */
function describe(err) {
  return err instanceof Error ? err.message : String(err)
}

const native = loadNative()

// ---------------------------------------------------------------------------------------------
// Errors.

/**
 * The class of every error of this package: `code` is one of the core's codes, the details
 * (`buildId`, `what`, `problem`, `reason`, `endReasonCode`, `host`) are set by code, and `cause`
 * holds the causes the message lists.
 */
class RemoteAccessError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {Record<string, unknown> & { causes?: string[] }} [details]
   */
  constructor(code, message, details = {}) {
    const { causes, ...rest } = details ?? {}
    const cause = Array.isArray(causes)
      ? causes.reduceRight((inner, text) => new Error(text, inner === undefined ? undefined : { cause: inner }), /** @type {Error | undefined} */ (undefined))
      : undefined
    super(message, cause === undefined ? undefined : { cause })
    this.code = code
    Object.assign(this, rest)
  }
}
Object.defineProperty(RemoteAccessError.prototype, 'name', { value: 'RemoteAccessError', writable: true, configurable: true })
native._setErrorClass(RemoteAccessError)

/** napi-rs's codes for an argument of the wrong type or shape, refused before the call. */
const ARGUMENT_STATUSES = new Set([
  'InvalidArg', 'ObjectExpected', 'StringExpected', 'NameExpected', 'FunctionExpected', 'NumberExpected',
  'BooleanExpected', 'ArrayExpected', 'BigintExpected', 'DateExpected', 'ArrayBufferExpected',
  'DetachableArraybufferExpected',
])

/**
 * The error a call into the addon threw before it ran, as this package's: napi-rs's refusals
 * of an argument (its own codes, or a TypeError from the engine while reading one) become
 * `invalid_input`; a RemoteAccessError stays as it is.
 * @param {unknown} err
 */
function adopt(err) {
  if (!(err instanceof Error) || err instanceof RemoteAccessError) return err
  const { code } = /** @type {{ code?: unknown }} */ (err)
  const refused =
    (typeof code === 'string' && ARGUMENT_STATUSES.has(code)) ||
    err instanceof TypeError ||
    err.message.startsWith('Class contains no `constructor`')
  if (!refused) return err
  // "... on Policy.graceMs on AuthorityOptions.policy": the field, outermost last.
  const fields = [...err.message.matchAll(/ on [A-Za-z0-9_]+\.([A-Za-z0-9_]+)/g)].map((match) => match[1])
  const problem = err.message.replace(/( on [A-Za-z0-9_]+\.[A-Za-z0-9_]+)+$/, '')
  const what = fields.length > 0 ? fields.reverse().join('.') : 'argument'
  return new RemoteAccessError('invalid_input', `invalid ${what}: ${problem}`, { what, problem })
}

/**
 * `fn`, with napi-rs's argument errors adopted; a Promise-returning one rejects with them
 * instead of throwing, so that `.catch()` and `await` see every error.
 * @param {Function} fn
 * @param {boolean} returnsPromise
 */
function guard(fn, returnsPromise) {
  const guarded = returnsPromise
    ? function (/** @type {unknown[]} */ ...args) {
        try {
          return fn.apply(this, args)
        } catch (err) {
          return Promise.reject(adopt(err))
        }
      }
    : function (/** @type {unknown[]} */ ...args) {
        try {
          return fn.apply(this, args)
        } catch (err) {
          throw adopt(err)
        }
      }
  Object.defineProperty(guarded, 'name', { value: fn.name })
  Object.defineProperty(guarded, 'length', { value: fn.length })
  return guarded
}

/** The methods that return a Promise, by class (checked against index.d.ts by the tests). */
const PROMISE_METHODS = {
  Authority: ['issue', 'stepsCompleted', 'buildFinished', 'cancel', 'revoke', 'session', 'connectionInfo', 'verifySsh', 'verifyVnc', 'connected', 'expireDue', 'nextDeadline', 'purge', 'fleetEvents', 'revokedKeys'],
  Gateway: ['start'],
  LiveConnection: ['closed', 'disconnect', 'lost', 'detach'],
  RunningAgent: ['done'],
  RunningGateway: ['stop', 'drain'],
}

/**
 * The class users see for a native class: the same prototype (so `instanceof` holds for
 * objects the addon makes, such as `gateway.authority`), with the constructor, the static
 * methods and the methods guarded.
 * @param {string} name
 */
function facade(name) {
  const Native = native[name]
  const promises = new Set(PROMISE_METHODS[/** @type {keyof PROMISE_METHODS} */ (name)] ?? [])
  /** @this {unknown} */
  const Class = function (/** @type {unknown[]} */ ...args) {
    if (new.target === undefined) throw new TypeError(`Class constructor ${name} cannot be invoked without 'new'`)
    try {
      return Reflect.construct(Native, args, new.target === Class ? Native : new.target)
    } catch (err) {
      throw adopt(err)
    }
  }
  Object.defineProperty(Class, 'name', { value: name })
  Object.defineProperty(Class, 'length', { value: Native.length })
  for (const key of Reflect.ownKeys(Native)) {
    if (['length', 'name', 'prototype', 'arguments', 'caller'].includes(/** @type {string} */ (key))) continue
    const descriptor = /** @type {PropertyDescriptor} */ (Reflect.getOwnPropertyDescriptor(Native, key))
    if (typeof descriptor.value === 'function') descriptor.value = guard(descriptor.value, false)
    Object.defineProperty(Class, key, { ...descriptor, configurable: true })
  }
  const prototype = Native.prototype
  for (const key of Object.getOwnPropertyNames(prototype)) {
    const descriptor = /** @type {PropertyDescriptor} */ (Object.getOwnPropertyDescriptor(prototype, key))
    if (key === 'constructor' || typeof descriptor.value !== 'function') continue
    Object.defineProperty(prototype, key, { ...descriptor, value: guard(descriptor.value, promises.has(key)) })
  }
  Class.prototype = prototype
  Object.defineProperty(prototype, 'constructor', { value: Class, writable: true, configurable: true })
  Object.defineProperty(prototype, util.inspect.custom, { value: inspector(name), writable: true, configurable: true })
  return Class
}

// ---------------------------------------------------------------------------------------------
// util.inspect: the public parts, as toJSON() has them or as the getters read (secrets are
// only ever returned by methods, never by getters).

/** @type {Record<string, (value: any) => unknown>} */
const VIEWS = {
  ManualClock: (clock) => ({ now: clock.now() }),
  // The certificate's PEM is long; its fingerprint is what identifies it.
  TlsIdentity: (identity) => ({ fingerprint: identity.fingerprint }),
}

/** @param {object} value */
function getters(value) {
  /** @type {Record<string, unknown>} */
  const view = {}
  const prototype = Object.getPrototypeOf(value)
  for (const [key, descriptor] of Object.entries(Object.getOwnPropertyDescriptors(prototype))) {
    if (descriptor.get) view[key] = Reflect.get(value, key)
  }
  return view
}

/** @param {string} name */
function inspector(name) {
  const view = VIEWS[name] ?? ((/** @type {any} */ value) => (typeof value.toJSON === 'function' ? value.toJSON() : getters(value)))
  /**
   * @this {object}
   * @param {number} depth
   * @param {util.InspectOptionsStylized} options
   * @param {typeof util.inspect} inspect
   */
  return function (depth, options, inspect) {
    if (depth < 0) return options.stylize(`[${name}]`, 'special')
    let fields
    try {
      fields = view(this)
    } catch {
      return `${name} {}`
    }
    return `${name} ${inspect(fields, { ...options, depth: options.depth == null ? null : options.depth - 1 })}`
  }
}

// ---------------------------------------------------------------------------------------------
// The classes and functions.

const Authority = facade('Authority')
const ConnectionInfo = facade('ConnectionInfo')
const Credentials = facade('Credentials')
const EventListener = facade('EventListener')
const Gateway = facade('Gateway')
const HostKey = facade('HostKey')
const LiveConnection = facade('LiveConnection')
const LogListener = facade('LogListener')
const ManualClock = facade('ManualClock')
const RunningAgent = facade('RunningAgent')
const RunningGateway = facade('RunningGateway')
const RunningHousekeeping = facade('RunningHousekeeping')
const Session = facade('Session')
const SshCa = facade('SshCa')
const Subscription = facade('Subscription')
const FleetEvents = facade('FleetEvents')
const TlsIdentity = facade('TlsIdentity')
const runAgent = guard(native.runAgent, false)
const vncPasswordFile = guard(native.vncPasswordFile, false)
const vncAuthResponse = guard(native.vncAuthResponse, false)
const onLog = guard(native.onLog, false)
const cliMain = guard(native.cliMain, false)

/**
 * @param {Function} Class
 * @param {symbol | undefined} symbol
 * @param {(this: any) => unknown} dispose
 */
function disposable(Class, symbol, dispose) {
  // Symbol.dispose and Symbol.asyncDispose exist from Node 18.18 and 20.4 on (`engines` asks
  // for 20); without them, `using` has nothing to call anyway.
  if (typeof symbol === 'symbol') {
    Object.defineProperty(Class.prototype, symbol, { value: dispose, writable: true, configurable: true })
  }
}
disposable(RunningGateway, Symbol.asyncDispose, async function () {
  await this.stop()
})
disposable(RunningAgent, Symbol.asyncDispose, async function () {
  this.stop()
  await this.done()
})
disposable(RunningHousekeeping, Symbol.dispose, function () {
  this.stop()
})
for (const Class of [Subscription, EventListener, LogListener]) {
  disposable(Class, Symbol.dispose, function () {
    this.close()
  })
}

// ---------------------------------------------------------------------------------------------
// DEBUG=remote-access* (the `debug` package's convention): records at `debug` and above go to
// stderr, each under the namespace `remote-access:<module>` (e.g. `remote-access:gateway:ssh:handler`),
// which DEBUG's patterns select (`DEBUG=remote-access:gateway:*`, `-remote-access:...` excludes).

/** @param {string} target */
function namespaceOf(target) {
  return `${pkg.name}:${target.replace(/^remote_access_core(::|$)/, '').split('::').filter(Boolean).join(':')}`.replace(/:$/, '')
}

/** @param {string | undefined} setting */
function debugPatterns(setting) {
  /** @type {RegExp[]} */
  const include = []
  /** @type {RegExp[]} */
  const exclude = []
  for (const word of (setting ?? '').split(/[\s,]+/).filter(Boolean)) {
    const negated = word.startsWith('-')
    const body = (negated ? word.slice(1) : word).replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*?')
    ;(negated ? exclude : include).push(new RegExp(`^${body}$`))
  }
  /** @param {string} namespace */
  const enabled = (namespace) => include.some((re) => re.test(namespace)) && !exclude.some((re) => re.test(namespace))
  // Whether any of this package's namespaces can be enabled at all.
  const mentioned = (setting ?? '').split(/[\s,]+/).some((word) => {
    const prefix = word.split('*')[0]
    return !word.startsWith('-') && word !== '' && (pkg.name.startsWith(prefix) || prefix.startsWith(pkg.name))
  })
  return { enabled, mentioned }
}

/** @param {{ level: string, target: string, message: string, fields: Record<string, string>, at: string, dropped?: number }} record */
function debugLine(record) {
  const fields = Object.entries(record.fields).map(([key, value]) => ` ${key}=${/[\s"=]/.test(value) ? JSON.stringify(value) : value}`)
  const dropped = record.dropped ? ` (${record.dropped} records dropped before this one)` : ''
  return `${record.at} ${namespaceOf(record.target)} ${record.level.toUpperCase()} ${record.message}${fields.join('')}${dropped}\n`
}

{
  const { enabled, mentioned } = debugPatterns(process.env.DEBUG)
  if (mentioned) {
    onLog((record) => {
      if (enabled(namespaceOf(record.target))) process.stderr.write(debugLine(record))
    }, { level: 'debug' })
  }
}

module.exports = {
  Authority,
  ConnectionInfo,
  Credentials,
  EventListener,
  FleetEvents,
  Gateway,
  HostKey,
  LiveConnection,
  LogListener,
  ManualClock,
  RemoteAccessError,
  RunningAgent,
  RunningGateway,
  RunningHousekeeping,
  Session,
  SshCa,
  Subscription,
  TlsIdentity,
  cliMain,
  onLog,
  runAgent,
  vncAuthResponse,
  vncPasswordFile,
}

// For this package's tests only (not in the types): the addon itself, with its test hooks
// (`_errorForTest`), and the table of Promise-returning methods.
Object.defineProperty(module.exports, Symbol.for('remote-access.internals'), {
  value: Object.freeze({ native, PROMISE_METHODS, platformKey, namespaceOf }),
})
