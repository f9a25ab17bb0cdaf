// Presence on a room's awareness: publish my viewport, cursor (and any other field), list participants.
// Used by the slide room (SlideView) and the session room (SessionPage) alike.
import { Emitter, throttle } from './dom.js'

const RATE_MS = 50 // ~20 Hz while moving; the final state is always sent

const r1 = (v) => Math.round(v * 10) / 10

/** A viewport as a comparable string ('' for none). */
export const vpKey = (v) => (v ? `${v.x},${v.y},${v.width},${v.height},${v.rotation || 0}` : '')

export class Presence extends Emitter {
  /**
   * @param {object} opts
   * @param {import('y-protocols/awareness').Awareness} opts.awareness
   * @param {object} opts.me identity (id, name, site, role, color)
   * @param {() => object|null} opts.getViewport my viewport in slide px
   * @param {object} [opts.fields] more fields of my state (the session room's `slide`)
   * @param {(vp: object) => object} [opts.viewportFields] the fields a viewport is published with
   */
  constructor ({ awareness, me, getViewport, fields = {}, viewportFields = (vp) => ({ viewport: vp }) }) {
    super()
    this.awareness = awareness
    this.me = me
    this.getViewport = getViewport
    this._sig = ''
    awareness.setLocalState({
      // The server replaces `user` with what the token says; this copy is for my own display.
      user: { id: me.id, name: me.name, site: me.site, role: me.role, color: me.color },
      viewport: null,
      cursor: null,
      following: null,
      ...fields,
    })
    this.publishViewport = throttle(() => {
      const vp = this.getViewport()
      if (!vp) return
      const cur = this.local
      const fields = viewportFields(vp)
      // Unchanged (same view, same slide): nothing to send.
      if (vpKey(cur.viewport) === vpKey(vp) && Object.entries(fields).every(([k, v]) => k === 'viewport' || cur[k] === v)) return
      this.set(fields)
      this.emit('viewport-sent', vp)
    }, RATE_MS)
    this.publishCursor = throttle((c) => {
      this.set({ cursor: c ? { x: r1(c[0]), y: r1(c[1]) } : null })
    }, RATE_MS)
    this._onChange = ({ added, updated, removed }, origin) => {
      const changed = added.concat(updated, removed)
      const sig = this._signature()
      if (sig !== this._sig) {
        this._sig = sig
        this.emit('participants')
      }
      if (origin !== 'local') this.emit('remote-change', changed)
    }
    awareness.on('change', this._onChange)
  }

  destroy () {
    this.publishViewport.cancel()
    this.publishCursor.cancel()
    this.awareness.off('change', this._onChange)
  }

  /** Sets fields of my state in one awareness update (only when something changes). */
  set (fields) {
    const cur = this.awareness.getLocalState() || {}
    if (Object.entries(fields).every(([k, v]) => cur[k] === v)) return
    this.awareness.setLocalState({ ...cur, ...fields })
  }

  get local () { return this.awareness.getLocalState() || {} }

  /** Flush the latest viewport now (end of a movement). */
  viewportSettled () {
    this.publishViewport()
    this.publishViewport.flush()
  }

  _signature () {
    const parts = []
    for (const [id, s] of this.awareness.getStates()) {
      const u = (s && s.user) || {}
      parts.push(`${id}:${u.id}:${u.name}:${u.site}:${u.role}:${u.color}:${s && s.following}`)
    }
    return parts.sort().join('|')
  }

  /** Everyone in the room, me first. */
  participants () {
    const out = []
    const self = this.awareness.clientID
    for (const [clientId, s] of this.awareness.getStates()) {
      if (!s || !s.user) continue
      out.push({
        clientId,
        isMe: clientId === self,
        user: clientId === self ? { ...s.user } : s.user,
        viewport: s.viewport || null,
        cursor: s.cursor || null,
        following: s.following ?? null,
      })
    }
    out.sort((a, b) => (b.isMe - a.isMe) || String(a.user.name).localeCompare(String(b.user.name)))
    return out
  }

  remotes () {
    return this.participants().filter((p) => !p.isMe)
  }

  nameOf (clientId) {
    const s = this.awareness.getStates().get(clientId)
    return (s && s.user && s.user.name) || null
  }
}

export function roundViewport (v) {
  return { x: r1(v.x), y: r1(v.y), width: r1(v.width), height: r1(v.height), rotation: r1(v.rotation || 0) }
}
