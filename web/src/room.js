// One live room (a slide, or later a tumor-board session): Y.Doc + y-websocket provider, with
// the connection state the page shows and the server's refusals turned into clear messages.
import * as Y from 'yjs'
import { WebsocketProvider, messageAuth } from 'y-websocket'
import * as authProtocol from 'y-protocols/auth'
import { Emitter } from './dom.js'

export const CLOSE_REASONS = {
  4401: 'Your link is not valid or has expired. Ask for a new link.',
  4403: 'Your link does not give access to this slide.',
  4404: 'This slide or session does not exist (anymore) on the server.',
}

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
  constructor ({ kind = 'slides', id, token, base = wsBase() }) {
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
    this.provider = new WebsocketProvider(`${base}/ws/${kind}`, id, this.doc, {
      params: { token },
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
      if (status === 'connected') this._set('syncing')
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
    provider.on('connection-close', (event) => {
      if (event && CLOSE_REASONS[event.code]) {
        this.closeCode = event.code
        this.closeReason = CLOSE_REASONS[event.code]
      }
    })
    provider.on('closed', ({ code, reason }) => {
      this.closeCode = code
      this.closeReason = CLOSE_REASONS[code] || reason || `The server closed the connection (${code}).`
      this._set('closed')
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
    this.doc.off('update', this._onUpdate)
    this.provider.destroy()
    this.doc.destroy()
  }
}
