// Following someone's view on a slide page: mirror their viewport from presence until I navigate.
//
// A person is followed, not a connection: the target is a user id, and whichever of their
// connections is present is mirrored. When it drops (a network blip, a reload), following goes
// on, shown as "reconnecting", for GRACE_MS; the same user coming back (same or new Yjs client
// id) is followed again without a click. Only after that does the page say they left.
import { Emitter, h, clear } from './dom.js'

export const GRACE_MS = 20_000

export class Follow extends Emitter {
  /**
   * @param {object} opts
   * @param {import('./presence.js').Presence} opts.presence
   * @param {(vp: object, first: boolean) => void} opts.applyViewport
   * @param {HTMLElement} opts.banner "Following …" banner over the viewer
   */
  constructor ({ presence, applyViewport, banner }) {
    super()
    this.presence = presence
    this.awareness = presence.awareness
    this.applyViewport = applyViewport
    this.banner = banner
    this.following = null // the followed client id (the last one seen while they are away)
    this.target = null // {id, name, site}: the followed user
    this.reconnecting = false
    this._timer = null
    this._onChange = ({ added, updated, removed }) => {
      if (!this.target) return
      const live = this._clientOf(this.target.id)
      if (live == null) {
        if (removed.includes(this.following) && !this.reconnecting) this._away()
        return
      }
      if (live !== this.following || this.reconnecting) {
        this._resume(live)
      } else if (added.concat(updated).includes(live)) {
        this._apply()
      }
    }
    this.awareness.on('change', this._onChange)
  }

  destroy () {
    clearTimeout(this._timer)
    this.awareness.off('change', this._onChange)
  }

  /** Follows the user behind this client id. */
  start (clientId) {
    if (clientId === this.awareness.clientID) return
    const s = this.awareness.getStates().get(clientId)
    if (!s || !s.user) return
    clearTimeout(this._timer)
    this.target = { id: s.user.id, name: s.user.name, site: s.user.site || '' }
    this.following = clientId
    this.reconnecting = false
    this.presence.set({ following: clientId })
    this._apply(true)
    this.emit('follow', clientId)
  }

  stop () {
    if (this.target == null) return
    clearTimeout(this._timer)
    this.target = null
    this.following = null
    this.reconnecting = false
    this.presence.set({ following: null })
    this.emit('follow', null)
  }

  /** Is this user the one followed? */
  isFollowing (userId) { return !!this.target && this.target.id === userId }

  /** The freshest connection of a user (several tabs: the one that moved last). */
  _clientOf (userId) {
    let best = null; let bestAt = -1
    for (const [clientId, s] of this.awareness.getStates()) {
      if (clientId === this.awareness.clientID || !s || !s.user || s.user.id !== userId) continue
      const at = (this.awareness.meta.get(clientId) || {}).lastUpdated || 0
      if (at > bestAt) { best = clientId; bestAt = at }
    }
    return best
  }

  _away () {
    this.reconnecting = true
    this.emit('follow', this.following)
    clearTimeout(this._timer)
    this._timer = setTimeout(() => {
      if (!this.reconnecting || !this.target) return
      const who = describe(this.target)
      this.stop()
      this.emit('notice', `${who} left; you are no longer following.`)
    }, GRACE_MS)
  }

  _resume (clientId) {
    clearTimeout(this._timer)
    const first = this.reconnecting
    this.reconnecting = false
    this.following = clientId
    this.presence.set({ following: clientId })
    // Back after a blip: mirror their current view only if it differs from what I show.
    this._apply(false)
    this.emit('follow', clientId)
    if (first) this.emit('resumed', clientId)
  }

  _apply (first = false) {
    const s = this.awareness.getStates().get(this.following)
    if (!s || !s.viewport) return
    // Their cursor moves far more often than their view: act on view changes only.
    const key = JSON.stringify(s.viewport)
    if (!first && key === this._lastApplied) return
    this._lastApplied = key
    this.applyViewport(s.viewport, first)
  }

  renderBanner () {
    const b = this.banner
    clear(b)
    if (!this.target) { b.hidden = true; return }
    b.hidden = false
    const text = `Following ${describe(this.target)}${this.reconnecting ? ' · reconnecting…' : ''}`
    b.dataset.reconnecting = String(this.reconnecting)
    b.append(h('span', { title: text }, text),
      h('button.link-btn', { 'data-testid': 'stop-following', on: { click: () => this.stop() } }, 'Stop (Esc)'))
  }
}

const describe = (u) => `${u.name}${u.site ? ` (${u.site})` : ''}`
