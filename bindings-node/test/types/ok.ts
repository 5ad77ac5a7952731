// Compiles with `tsc --strict` (test/types.test.js), then runs: what a TypeScript user writes.
import * as net from 'node:net'
import { Authority, Gateway, HostKey, RemoteAccessError, onLog } from 'remote-access'
import type { ErrorCode, Event, Trigger } from 'remote-access'

/** Whether an SSH server answers on `port`. */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.once('data', () => (socket.destroy(), resolve(true)))
    socket.once('error', () => resolve(false))
  })
}

/** What an HTTP service answers for each error: exhaustive over the codes. */
function status(code: ErrorCode): number {
  switch (code) {
    case 'invalid_input':
      return 400
    case 'not_manually_triggered':
    case 'remote_access_disabled':
    case 'access_denied':
      return 403
    case 'unknown_build':
      return 404
    case 'build_exists':
      return 409
    case 'session_ended':
      return 410
    case 'no_capacity':
    case 'store_unavailable':
    case 'contention':
      return 503
    case 'host_key_mismatch':
    case 'io':
    case 'internal':
    case 'key_material':
      return 500
  }
}

/** One line per event; `connectionId` is a string where `kind` says there is one. */
function describe(event: Event): string {
  switch (event.kind) {
    case 'connected':
    case 'disconnected':
    case 'dropped':
      return `${event.kind} ${event.protocol} ${event.connectionId.length > 0}`
    case 'deadline_changed':
      return `deadline ${event.deadline.length > 0}`
    case 'lagged':
      return `lagged ${event.dropped.toFixed(0)}`
    default:
      return event.kind
  }
}

async function main(): Promise<void> {
  const authority = new Authority()
  const lines: string[] = []
  using _listener = authority.onEvent((event) => lines.push(describe(event)))
  using _logs = onLog(() => {}, { level: 'debug' })
  const trigger: Trigger = 'manual'
  await authority.issue('b-ts', { trigger, remoteAccessEnabled: true })
  const connection = await authority.connected('b-ts', 'ssh')
  await connection.disconnect()
  const session = await authority.session('b-ts')
  const phase: 'steps_running' | 'steps_completed' | 'ended' = session.phase
  const lostConnection = await authority.connected('b-ts', 'vnc')
  await lostConnection.lost()
  const reconnectBy: string | null = session.reconnectBy
  const rule: string = session.accessRule + session.maxEnd + String(reconnectBy)
  const info = await authority.connectionInfo('b-ts', HostKey.generate(), { gatewayHost: 'gw.example' }).catch(() => null)
  if (info) info.refresh(session)
  const ended: boolean = session.endReasonCode === 'connection_lost' && rule.length === 0
  let port = 0
  {
    await using running = await new Gateway(authority, { hostKey: HostKey.generate() }).start('127.0.0.1:0')
    port = running.port
    console.log('serving', await answers(port))
  }
  console.log('after the block', await answers(port))
  try {
    await authority.issue('b-ts', { trigger: 'manual', remoteAccessEnabled: true })
  } catch (err) {
    if (!(err instanceof RemoteAccessError)) throw err
    console.log(err.name, err.code, status(err.code))
  }
  await new Promise((resolve) => setTimeout(resolve, 50))
  console.log(phase, lines.join(', '), ended)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
