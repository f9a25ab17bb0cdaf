// One live room (a slide, or later a tumor-board session): Y.Doc + y-websocket provider, with
// the connection state the page shows and the server's refusals turned into clear messages.
import * as Y from 'yjs'
import { WebsocketProvider, messageAuth } from 'y-websocket'
import * as authProtocol from 'y-protocols/auth'
import { Emitter } from './dom.js'
import { ticketSocketClass } from './tickets.js'
import { explain } from './errors.js'

const isRefusal = (code) => code === 4401 || code === 4403 || code === 4404

export function wsBase (loc = location) {
  // The app lives at <prefix>/app/; rooms at <prefix>/ws/...
  const prefix = loc.pathname.replace(/\/app(\/.*)?$/, '')
  return (loc.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + loc.host + prefix
}

/**
 * States: 'connecting' (first connection), 'syncing', 'connected' (synced),
 * 'reconnecting' (lost the server; edits made meanwhile are kept and sent on reconnect),
 * 'closed' (the server refused us for good: see `closeReason`).
 */
export class Room extends Emitter {
  /**
   * @param {object} opts
   * @param {import('./credentials.js').Credentials} opts.credentials read before every connection
   */
  constructor ({ kind = 'slides', id, credentials, base = wsBase() }) {
    super()
    this.kind = kind
    this.id = id
    this.doc = new Y.Doc()
    this.state = 'connecting'
    this.closeCode = null
    this.closeReason = ''
    this.pendingEdits = 0
    this.everSynced = false
    this.deniedCount = 0
    this.credentials = credentials
    this.provider = new WebsocketProvider(`${base}/ws/${kind}`, id, this.doc, {
      // No token in the URL: each (re)connection asks for a ticket just in time (tickets.js).
      WebSocketPolyfill: ticketSocketClass(credentials),
      disableBc: true, // every tab speaks for its own token; the server is the only relay
      maxBackoffTime: 4000,
    })
    this.awareness = this.provider.awareness
    const provider = this.provider

    // The server answers refused updates with a y-protocols auth message (permission denied).
    provider.messageHandlers[messageAuth] = (_encoder, decoder) => {
      authProtocol.readAuthMessage(decoder, this.doc, (_doc, reason) => {
        this.deniedCount++
        this.emit('denied', reason || 'permission denied')
      })
    }
    provider.on('status', ({ status }) => {
      if (this.state === 'closed') return
      if (status === 'connected') {
        this._set('syncing')
        // Re-announce my presence with a fresh clock: the server dropped my entry at its old
        // clock when the connection closed, and (as every y-websocket peer does) ignores a
        // re-send at that clock, so without this a reconnected user stays invisible until
        // their next move or the 15 s renewal.
        const local = this.awareness.getLocalState()
        if (local !== null) this.awareness.setLocalState({ ...local })
      }
      else if (status === 'disconnected' || status === 'connecting') {
        this._set(this.everSynced ? 'reconnecting' : 'connecting')
      }
    })
    provider.on('sync', (synced) => {
      if (synced && this.state !== 'closed') {
        this.everSynced = true
        this.pendingEdits = 0
        this._set('connected')
        this.emit('synced')
      }
    })
    const reasonFor = (code, reason) => {
      const ctx = { what: kind === 'sessions' ? 'session' : 'slide', id, expired: isExpiredClaims(credentials) }
      return isRefusal(code) ? explain(code, ctx).message : (reason || explain(code, ctx).message)
    }
    provider.on('connection-close', (event) => {
      if (event && isRefusal(event.code)) {
        this.closeCode = event.code
        this.closeReason = reasonFor(event.code)
      }
    })
    provider.on('closed', ({ code, reason }) => {
      this.closeCode = code
      this.closeReason = reasonFor(code, reason)
      this._set('closed')
    })
    // A renewed token: reconnect with it now (the server ends a connection whose token expires).
    this._offCredentials = credentials.on('change', () => {
      if (this.state === 'closed') return
      provider.disconnect()
      provider.connect()
    })
    this._onUpdate = (_update, origin) => {
      if (origin !== provider && !(provider.wsconnected && provider.synced)) {
        this.pendingEdits++
        this.emit('state', this.state)
      }
    }
    this.doc.on('update', this._onUpdate)
  }

  _set (state) {
    if (this.state === state) return
    this.state = state
    this.emit('state', state)
  }

  get connected () { return this.state === 'connected' }

  destroy () {
    this._offCredentials()
    this.doc.off('update', this._onUpdate)
    this.provider.destroy()
    this.doc.destroy()
  }
}

function isExpiredClaims (credentials) {
  const exp = credentials.expiresAt
  return !!exp && exp <= Date.now()
}
