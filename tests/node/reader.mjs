// A plain Yjs reader of a pipelined room: prints the `stories` map as one JSON line
// after every change (and once when synced). Usage: node reader.mjs ws://HOST:PORT ROOM
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [server, room] = process.argv.slice(2)
const doc = new Y.Doc()
const provider = new WebsocketProvider(server, room, doc, { WebSocketPolyfill: WebSocket })
const stories = doc.getMap('stories')
const print = () => process.stdout.write(JSON.stringify({ synced: provider.synced, stories: stories.toJSON() }) + '\n')
provider.on('sync', (synced) => { if (synced) print() })
doc.on('update', () => { if (provider.synced) print() })
process.on('SIGTERM', () => { provider.destroy(); process.exit(0) })
