// A stock Yjs client (yjs + y-websocket WebsocketProvider, unchanged) driven over stdin/stdout.
// Usage: node peer.mjs <serverUrl e.g. ws://127.0.0.1:8000/ws/slides> <slideId> <token>
// Commands (one JSON object per line on stdin) and replies (JSON lines on stdout):
//   {"op":"set","key":k,"value":{...}}       -> annotations.set(k, Y.Map of value)   -> {"ok":"set"}
//   {"op":"set_json","key":k,"value":{...}}  -> annotations.set(k, plain JSON)       -> {"ok":"set_json"}
//   {"op":"wait_key","key":k,"timeout":ms}   -> {"ok":"wait_key","value":...} when present
//   {"op":"presence","state":{...}}          -> awareness.setLocalState(state)       -> {"ok":"presence"}
//   {"op":"wait_presence","name":n}          -> {"ok":"wait_presence","state":...} when a peer named n shows
//   {"op":"bulk","n":N,"prefix":p}           -> N annotations in batches of 500       -> {"ok":"bulk"}
//   {"op":"dump"}                            -> {"ok":"dump","annotations":{...},"presence":[...]}
// Events: {"event":"synced"}, {"event":"denied","reason":r}, {"event":"close","code":c,"reason":r}
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'
import * as decoding from 'lib0/decoding'

const [serverUrl, slideId, token] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const doc = new Y.Doc()
const annotations = doc.getMap('annotations')
const provider = new WebsocketProvider(serverUrl, slideId, doc, {
  params: { token }, WebSocketPolyfill: WebSocket, disableBc: true
})
provider.on('sync', (synced) => { if (synced) out({ event: 'synced' }) })
provider.on('connection-close', (ev) => { if (ev) out({ event: 'close', code: ev.code, reason: String(ev.reason || '') }) })
// y-websocket's default auth handler only logs; report refusals instead.
provider.messageHandlers[2] = (_encoder, decoder) => {
  decoding.readVarUint(decoder) // permission type (0 = denied)
  out({ event: 'denied', reason: decoding.readVarString(decoder) })
}

const toYMap = (value) => {
  const m = new Y.Map()
  for (const [k, v] of Object.entries(value)) m.set(k, v)
  return m
}
const plain = (v) => (v instanceof Y.AbstractType ? v.toJSON() : v)
const presenceStates = () => [...provider.awareness.getStates().entries()]
  .filter(([id]) => id !== doc.clientID).map(([id, s]) => ({ clientId: id, ...s }))

function waitFor (pred, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now()
    const tick = () => {
      const v = pred()
      if (v !== undefined && v !== null && v !== false) return resolve(v)
      if (Date.now() - t0 > timeout) return reject(new Error('timeout'))
      setTimeout(tick, 10)
    }
    tick()
  })
}

const handlers = {
  set: async (c) => { annotations.set(c.key, toYMap(c.value)) },
  set_json: async (c) => { annotations.set(c.key, c.value) },
  wait_key: async (c) => ({ value: plain(await waitFor(() => annotations.get(c.key), c.timeout)) }),
  presence: async (c) => { provider.awareness.setLocalState(c.state) },
  wait_presence: async (c) => ({
    state: await waitFor(() => presenceStates().find((s) => s.user && s.user.name === c.name), c.timeout)
  }),
  bulk: async (c) => {
    for (let i = 0; i < c.n; i += 500) {
      doc.transact(() => {
        for (let j = i; j < Math.min(c.n, i + 500); j++) {
          const x = (j * 37) % 90000; const y = (j * 53) % 70000
          annotations.set(`${c.prefix}-${j}`, toYMap({
            geometry: { type: 'Polygon', coordinates: [[[x, y], [x + 80, y], [x + 80, y + 60], [x, y + 60], [x, y]]] },
            classification: { name: 'Tumor', color: [200, 0, 0] },
            name: `cell ${j}`
          }))
        }
      })
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  },
  dump: async () => ({
    annotations: Object.fromEntries([...annotations.entries()].map(([k, v]) => [k, plain(v)])),
    presence: presenceStates()
  })
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const cmd = JSON.parse(line)
  try {
    const result = await handlers[cmd.op](cmd)
    out({ ok: cmd.op, ...(result || {}) })
  } catch (e) {
    out({ error: cmd.op, message: String(e && e.message) })
  }
})
rl.on('close', () => { provider.destroy(); setTimeout(() => process.exit(0), 50) })
