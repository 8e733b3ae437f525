// The official server's setup (@y/websocket-server's src/server.js) with the check its
// comment leaves to the user: an upgrade without `Authorization: Bearer $TOKEN` gets 401.
import http from 'http'
import { WebSocketServer } from 'ws'
import { setupWSConnection } from '@y/websocket-server/utils'

const host = process.env.HOST || '127.0.0.1'
const port = parseInt(process.env.PORT || '1234')
const expected = `Bearer ${process.env.TOKEN}`
const wss = new WebSocketServer({ noServer: true })
const server = http.createServer((_request, response) => { response.end('okay') })
wss.on('connection', setupWSConnection)
server.on('upgrade', (request, socket, head) => {
  if (request.headers.authorization !== expected) {
    socket.write('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n')
    socket.destroy()
    return
  }
  wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request))
})
server.listen(port, host, () => console.log(`running at '${host}' on port ${port}`))
