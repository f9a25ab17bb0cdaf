// Presence on a room's awareness: publish my viewport/cursor, list participants, follow someone.
import { Emitter, throttle } from './dom.js'

const RATE_MS = 50 // ~20 Hz while moving; the final state is always sent

const r1 = (v) => Math.round(v * 10) / 10

export class Presence extends Emitter {
  /**
   * @param {object} opts
   * @param {import('y-protocols/awareness').Awareness} opts.awareness
   * @param {object} opts.me identity (id, name, site, role, color)
   * @param {() => object|null} opts.getViewport my viewport in slide px
   * @param {(vp: object) => void} opts.applyViewport show someone else's viewport
   */
  constructor ({ awareness, me, getViewport, applyViewport }) {
    super()
    this.awareness = awareness
    this.me = me
    this.getViewport = getViewport
    this.applyViewport = applyViewport
    this.following = null
    this._sig = ''
    awareness.setLocalState({
      // The server replaces `user` with what the token says; this copy is for my own display.
      user: { id: me.id, name: me.name, site: me.site, role: me.role, color: me.color },
      viewport: null,
      cursor: null,
      following: null,
    })
    this.publishViewport = throttle(() => {
      const vp = this.getViewport()
      if (vp) this.awareness.setLocalStateField('viewport', vp)
    }, RATE_MS)
    this.publishCursor = throttle((c) => {
      this.awareness.setLocalStateField('cursor', c ? { x: r1(c[0]), y: r1(c[1]) } : null)
    }, RATE_MS)
    this._onChange = ({ added, updated, removed }, origin) => {
      const changed = added.concat(updated, removed)
      if (this.following != null) {
        if (removed.includes(this.following)) {
          const who = this._lastFollowedName || 'The participant'
          this.unfollow()
          this.emit('notice', `${who} left; you are no longer following.`)
        } else if (changed.includes(this.following)) {
          this._applyFollowed()
        }
      }
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

  follow (clientId) {
    if (clientId === this.awareness.clientID) return
    const s = this.awareness.getStates().get(clientId)
    if (!s) return
    this.following = clientId
    this._lastFollowedName = (s.user && s.user.name) || null
    this.awareness.setLocalStateField('following', clientId)
    this._applyFollowed(true)
    this.emit('follow', clientId)
  }

  unfollow () {
    if (this.following == null) return
    this.following = null
    this.awareness.setLocalStateField('following', null)
    this.emit('follow', null)
  }

  _applyFollowed (first = false) {
    const s = this.awareness.getStates().get(this.following)
    if (!s || !s.viewport) return
    // Their cursor moves far more often than their view: act on view changes only.
    const key = JSON.stringify(s.viewport)
    if (!first && key === this._lastApplied) return
    this._lastApplied = key
    this.applyViewport(s.viewport, first)
  }
}

export function roundViewport (v) {
  return { x: r1(v.x), y: r1(v.y), width: r1(v.width), height: r1(v.height), rotation: r1(v.rotation || 0) }
}
