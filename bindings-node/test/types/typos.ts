// Must NOT compile with `tsc --strict` (test/types.test.js): each marked line is a typo of a
// fixed set of strings, which the declarations' string-literal unions refuse.
import { Authority, RemoteAccessError } from 'remote-access'

async function main(): Promise<void> {
  const authority = new Authority()
  await authority.issue('b-1', { trigger: 'manul', remoteAccessEnabled: true }) // typo: trigger
  authority.onEvent((event) => {
    if (event.kind === 'finishbuild') console.log(event.buildId) // typo: event kind
  })
  const session = await authority.session('b-1')
  if (session.phase === 'stepscompleted') console.log('done') // typo: phase
  await authority.connected('b-1', 'rdp') // typo: protocol
  try {
    await authority.revoke('b-1', 'done')
  } catch (err) {
    if (err instanceof RemoteAccessError && err.code === 'unknown-build') console.log('gone') // typo: error code
  }
}

void main()
