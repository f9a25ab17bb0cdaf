// Following someone's view on a slide page: mirror their viewport from presence until I navigate.
import { Emitter, h, clear } from './dom.js'

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
    this.following = null // the followed client id
    this._onChange = ({ added, updated, removed }) => {
      if (this.following == null) return
      const changed = added.concat(updated, removed)
      if (removed.includes(this.following)) {
        const who = this._lastFollowedName || 'The participant'
        this.stop()
        this.emit('notice', `${who} left; you are no longer following.`)
      } else if (changed.includes(this.following)) {
        this._apply()
      }
    }
    this.awareness.on('change', this._onChange)
  }

  destroy () {
    this.awareness.off('change', this._onChange)
  }

  start (clientId) {
    if (clientId === this.awareness.clientID) return
    const s = this.awareness.getStates().get(clientId)
    if (!s) return
    this.following = clientId
    this._lastFollowedName = (s.user && s.user.name) || null
    this.presence.set({ following: clientId })
    this._apply(true)
    this.emit('follow', clientId)
  }

  stop () {
    if (this.following == null) return
    this.following = null
    this.presence.set({ following: null })
    this.emit('follow', null)
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
    const id = this.following
    clear(b)
    if (id == null) { b.hidden = true; return }
    b.hidden = false
    b.append(h('span', null, `Following ${this.presence.nameOf(id) || 'participant'}`),
      h('button.link-btn', { 'data-testid': 'stop-following', on: { click: () => this.stop() } }, 'Stop (Esc)'))
  }
}
