// The publish benchmark's reader (tests/bench/bench_publish.py): one JSON line per event.
//   {"synced": N}                      once in sync, N stories in the room
//   {"changed": [[id, name], ...]}     the stories a remote update changed
//   {"room_bytes": B, "fresh_bytes": F} on SIGUSR2: the room's state as the server
//                                      sent it, and the same content freshly encoded
// Usage: node probe.mjs ws://HOST:PORT ROOM
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [server, room] = process.argv.slice(2)
const doc = new Y.Doc()
const provider = new WebsocketProvider(server, room, doc, { WebSocketPolyfill: WebSocket })
const stories = doc.getMap('stories')
const say = (value) => process.stdout.write(JSON.stringify(value) + '\n')
provider.on('sync', (synced) => { if (synced) say({ synced: stories.size }) })
stories.observeDeep((events) => {
  if (!provider.synced) return
  const ids = new Set()
  for (const event of events) {
    if (event.target === stories) for (const key of event.keysChanged) ids.add(key)
    else ids.add(event.path[0])
  }
  say({ changed: [...ids].map((id) => [id, stories.get(id)?.name ?? null]) })
})
process.on('SIGUSR2', () => {
  const fresh = new Y.Doc()
  const copy = fresh.getMap('stories')
  fresh.transact(() => {
    for (const [id, entry] of stories) copy.set(id, entry)
  })
  say({ room_bytes: Y.encodeStateAsUpdate(doc).length, fresh_bytes: Y.encodeStateAsUpdate(fresh).length })
})
process.on('SIGTERM', () => { provider.destroy(); process.exit(0) })
