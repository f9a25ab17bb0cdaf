// A tumor-board session (/app/?session=<id>&token=<jwt>): the agenda, the presenter, and everyone
// following them (docs/reference.md, section 5).
//
// The session room (`/ws/sessions/{id}`) holds the agenda (`slides`, Y.Array of slide ids) and
// `state` (Y.Map: `current` slide id, `presenter` user id); only the presenter writes it (a
// presenter-role participant takes over by setting `presenter` to their own id). Each page
// publishes its `slide`, `viewport`, `cursor` and `following` in the session room's awareness;
// followers read the presenter's from there: they switch to the presenter's slide and mirror
// the presenter's viewport (zoom and rotation included). The slide itself is an ordinary
// SlideView (its own slide room for annotations), replaced when the slide changes.
import { Room } from './room.js'
import { SlideView } from './slideview.js'
import { getSession, listSlides, sessionSummaryHTML, apiRoot, ApiError } from './api.js'
import { Emitter, h, clear, throttle } from './dom.js'

const RATE_MS = 50 // session presence while moving (~20 Hz); the final state is always sent
const LOG_MAX = 2000

const SESSION_CLOSE = {
  4401: 'Your link is not valid or has expired. Ask for a new link.',
  4403: 'Your link does not give access to every slide of this session. Ask for a link that does.',
  4404: 'This session does not exist (anymore) on the server.',
}

const now = () => performance.timeOrigin + performance.now()
const vpKey = (v) => (v ? `${v.x},${v.y},${v.width},${v.height},${v.rotation || 0}` : '')

export class SessionPage extends Emitter {
  /**
   * @param {object} opts
   * @param {object} opts.layout createLayout(root) result
   * @param {string} opts.sessionId
   * @param {string} opts.token
   * @param {object} opts.me identity from the token (auth.js)
   */
  constructor ({ layout, sessionId, token, me }) {
    super()
    this.layout = layout
    this.id = sessionId
    this.token = token
    this.me = me
    this.toast = layout.toast
    this.record = null // GET /api/sessions/{id}
    this.slides = new Map() // slide id -> slide record (GET /api/slides)
    this.view = null
    this.viewSlide = null
    this.following = true // everyone but the presenter follows by default
    this._wasPresenter = false
    this._appliedKey = null
    this._lastPresenterKey = null
    this._restore = null
    this.log = { sent: [], received: [], applied: [] } // viewport keys with times (latency)
    this.closed = false
    this._buildDom()
  }

  // ---- DOM ----------------------------------------------------------------------------------------

  _buildDom () {
    const { header, toolbar, main, side } = this.layout.regions
    this.el = {}
    this.el.title = h('span.session-title', { 'data-testid': 'session-title' }, 'Session')
    this.el.sessionConn = h('span.conn.session-conn', { 'data-testid': 'session-connection', role: 'status', title: 'Connection to the session' })
    this.el.headerHost = h('div.session-header-host')
    header.append(h('div.session-header', null,
      h('span.session-crumb', null, h('span.badge.session-badge', null, 'Tumor board'), this.el.title, this.el.sessionConn, h('span.crumb-sep', { 'aria-hidden': 'true' }, '›')),
      this.el.headerHost))

    this.el.mainHost = h('div.session-main-host')
    this.el.back = h('button.back-to-presenter.viewer-ui', {
      'data-testid': 'back-to-presenter', hidden: true, title: 'Follow the presenter again',
      on: { click: () => this.setFollowing(true) },
    }, '↩ Back to presenter')
    this.el.followBadge = h('div.session-follow-badge.viewer-ui', { 'data-testid': 'session-follow-badge', hidden: true })
    main.append(this.el.mainHost, this.el.back, this.el.followBadge)

    this.el.presenter = h('div.presenter', { 'data-testid': 'presenter' })
    this.el.takeOver = h('button.primary.take-over', {
      'data-testid': 'take-over', hidden: true, on: { click: () => this.takeOver() },
    }, 'Take over')
    this.el.followToggle = h('button.follow-toggle', {
      'data-testid': 'follow-presenter', 'aria-pressed': 'true', on: { click: () => this.setFollowing(!this.following) },
    }, 'Follow presenter')
    this.el.summary = h('a.summary-link', {
      'data-testid': 'summary-link',
      href: `${apiRoot()}api/sessions/${encodeURIComponent(this.id)}/summary?format=html`,
      target: '_blank',
      rel: 'noopener',
      title: 'Annotations made or changed during this session, per slide (printable)',
      on: { click: (e) => { e.preventDefault(); this.openSummary() } },
    }, 'Session summary (printable)')
    this.el.agenda = h('ol.agenda', { 'data-testid': 'agenda', 'aria-label': 'Agenda' })
    this.el.agendaCount = h('span.count')
    this.el.sidePanel = h('div.session-side', null,
      h('section.panel.session-panel', { 'aria-label': 'Session', 'data-testid': 'session-panel' },
        h('h2', null, 'Presenter'),
        this.el.presenter,
        h('div.session-actions', null, this.el.followToggle, this.el.takeOver),
        this.el.summary),
      h('section.panel', { 'aria-label': 'Agenda', 'data-testid': 'agenda-panel' },
        h('h2', null, 'Agenda', this.el.agendaCount), this.el.agenda))
    this.el.sideHost = h('div.session-side-host')
    side.append(this.el.sidePanel, this.el.sideHost)

    this.regions = { header: this.el.headerHost, toolbar, main: this.el.mainHost, side: this.el.sideHost }
  }

  // ---- start ----------------------------------------------------------------------------------------

  async start () {
    const [rec, slides] = await Promise.allSettled([getSession(this.id, this.token), listSlides(this.token)])
    if (rec.status === 'fulfilled') {
      this.record = rec.value
    } else {
      const e = rec.reason
      if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 404)) {
        const title = e.status === 404 ? 'Session not found' : e.status === 401 ? 'Your link has expired' : 'No access'
        const msg = e.status === 404 ? `There is no session "${this.id}".` : `${SESSION_CLOSE[e.status === 401 ? 4401 : 4403]} (${e.message})`
        this.closed = true
        this.layout.fatal(title, msg, [{ label: 'Slide list', href: homeOf() }])
        return
      }
      // The live room still has the agenda: go on without the record.
    }
    if (slides.status === 'fulfilled') for (const s of slides.value) this.slides.set(s.id, s)
    if (this.record && this.record.title) {
      this.el.title.textContent = this.record.title
      document.title = `${this.record.title} · tumor board · collab`
    }
    this._openRoom()
    this._renderAll()
  }

  _openRoom () {
    if (this.room) this._closeRoom()
    const room = this.room = new Room({ kind: 'sessions', id: this.id, token: this.token })
    const doc = room.doc
    this.agendaArr = doc.getArray('slides')
    this.stateMap = doc.getMap('state')
    this.awareness = room.awareness
    this.awareness.setLocalState({
      // The server stamps `user` from the token; this copy is for my own display.
      user: { id: this.me.id, name: this.me.name, site: this.me.site, role: this.me.role, color: this.me.color },
      viewport: null,
      cursor: null,
      following: null,
      slide: this.viewSlide,
    })
    this._publishViewport = throttle(() => this._sendViewport(), RATE_MS)
    this._publishCursor = throttle((p) => {
      if (this.room !== room) return
      this.awareness.setLocalStateField('cursor', p ? { x: Math.round(p[0] * 10) / 10, y: Math.round(p[1] * 10) / 10 } : null)
    }, RATE_MS)
    const offs = []
    const onDoc = () => this._reconcile()
    this.stateMap.observe(onDoc)
    this.agendaArr.observe(onDoc)
    offs.push(() => { this.stateMap.unobserve(onDoc); this.agendaArr.unobserve(onDoc) })
    const onAwareness = ({ added, updated, removed }, origin) => {
      if (origin === 'local') return
      this._onPresence(added.concat(updated, removed))
    }
    this.awareness.on('change', onAwareness)
    offs.push(() => this.awareness.off('change', onAwareness))
    offs.push(room.on('state', () => {
      this._renderConnection()
      if (room.state === 'closed') this._roomClosed()
    }))
    offs.push(room.on('synced', () => { this._synced = true; this._reconcile() }))
    offs.push(room.on('denied', (reason) => {
      // Not (or no longer) the presenter: the change is dropped; reload the shared state.
      this.toast(`Only the presenter can change the session (${reason}).`, { level: 'error', testid: 'session-denied', timeout: 8000 })
      clearTimeout(this._resyncTimer)
      this._resyncTimer = setTimeout(() => this._openRoom(), 300)
    }))
    this._roomOffs = offs
    this._renderConnection()
  }

  _closeRoom () {
    for (const off of this._roomOffs || []) { try { off() } catch {} }
    this._publishViewport?.cancel()
    this._publishCursor?.cancel()
    this.room.destroy()
    this.room = null
    this._synced = false
  }

  _roomClosed () {
    const code = this.room.closeCode
    this.closed = true
    const title = code === 4401 ? 'Your link has expired' : code === 4403 ? 'No access' : code === 4404 ? 'Session not found' : 'Disconnected'
    this.layout.fatal(title, SESSION_CLOSE[code] || this.room.closeReason,
      [{ label: 'Slide list', href: homeOf() }, { label: 'Try again', fn: () => location.reload() }])
  }

  // ---- the session's shared state ---------------------------------------------------------------

  get agenda () {
    const live = this.agendaArr ? this.agendaArr.toArray().filter((s) => typeof s === 'string') : []
    if (live.length) return live
    return (this.record && Array.isArray(this.record.slides)) ? this.record.slides.slice() : []
  }

  get current () {
    const c = this.stateMap && this.stateMap.get('current')
    return typeof c === 'string' && c ? c : (this.agenda[0] || null)
  }

  get presenterId () {
    const p = this.stateMap && this.stateMap.get('presenter')
    return typeof p === 'string' && p ? p : null
  }

  get isPresenter () { return !!this.presenterId && this.presenterId === this.me.id }

  /** The presenter's connection in the session room (awareness), if they are here. */
  presenterClient () {
    const pid = this.presenterId
    if (!pid || !this.awareness) return null
    const self = this.awareness.clientID
    let best = null
    for (const [clientId, s] of this.awareness.getStates()) {
      if (clientId === self || !s || !s.user || s.user.id !== pid) continue
      const meta = this.awareness.meta.get(clientId)
      const cand = { clientId, state: s, at: meta ? meta.lastUpdated : 0 }
      // Several tabs of the presenter: prefer the one on the current slide, then the freshest.
      const onCurrent = (x) => x.state.slide === this.current
      if (!best || (onCurrent(cand) && !onCurrent(best)) || (onCurrent(cand) === onCurrent(best) && cand.at > best.at)) best = cand
    }
    return best
  }

  /** Who presents, for display: from their presence if connected, else the session record. */
  presenterInfo () {
    const pid = this.presenterId
    if (!pid) return null
    if (pid === this.me.id) return { id: pid, name: this.me.name, site: this.me.site, color: this.me.color, connected: true, isMe: true }
    const p = this.presenterClient()
    if (p) return { id: pid, name: p.state.user.name, site: p.state.user.site, color: p.state.user.color, connected: true, clientId: p.clientId }
    return { id: pid, name: pid, site: '', color: '#888', connected: false }
  }

  /** The slide a follower should be on: the presenter's, from presence, else `state.current`. */
  presenterSlide () {
    const p = this.presenterClient()
    const s = p && p.state.slide
    return typeof s === 'string' && s && this.agenda.includes(s) ? s : this.current
  }

  // ---- actions ------------------------------------------------------------------------------------

  /** Presenter: show another slide of the agenda to everyone. Others: look at it on their own. */
  goTo (slideId) {
    if (!this.agenda.includes(slideId)) return
    if (this.isPresenter) {
      if (this.current !== slideId) this.room.doc.transact(() => this.stateMap.set('current', slideId))
      this._reconcile()
    } else {
      this.setFollowing(false)
      if (slideId !== this.viewSlide) this._mount(slideId)
    }
  }

  /** A presenter-role participant becomes the presenter, on the slide they are looking at. */
  takeOver () {
    if (!this.me.canPresent || this.isPresenter || !this.room) return
    const slide = this.viewSlide || this.current
    this.room.doc.transact(() => {
      this.stateMap.set('presenter', this.me.id)
      if (slide) this.stateMap.set('current', slide)
    })
    this.following = false
    this._reconcile()
  }

  setFollowing (on) {
    on = !!on && !this.isPresenter
    if (this.following === on) { this._renderFollow(); return }
    this.following = on
    this._appliedKey = null
    this._sendFollowing()
    this._renderFollow()
    if (on) this._reconcile(true)
  }

  async openSummary () {
    // A new window now (a popup opened after an await is blocked), filled when the HTML is here.
    const win = window.open('', '_blank')
    try {
      const html = await sessionSummaryHTML(this.id, this.token)
      const url = URL.createObjectURL(new Blob([html], { type: 'text/html' }))
      if (win) win.location = url
      else window.open(url, '_blank')
      setTimeout(() => URL.revokeObjectURL(url), 60_000)
    } catch (e) {
      if (win) win.close()
      this.toast(`The summary is not available: ${e.message}`, { level: 'error' })
    }
  }

  // ---- following ------------------------------------------------------------------------------------

  /** Brings the page in line with the shared state: which slide to show, whose view to mirror. */
  _reconcile (forceApply = false) {
    if (!this.room || this.closed) return
    const isPresenter = this.isPresenter
    if (isPresenter && !this._wasPresenter) this.following = false
    if (!isPresenter && this._wasPresenter) {
      // Someone took over from me: follow them.
      this.following = true
      this._appliedKey = null
      this.toast(`${this.presenterInfo()?.name || 'Someone'} is presenting now; you follow them.`)
    }
    this._wasPresenter = isPresenter
    let target
    if (isPresenter) target = this.current
    else if (this.following) target = this.presenterSlide()
    else target = this.viewSlide || this.current
    if (!this._synced) target = null // the agenda and state come with the first sync
    if (target && target !== this.viewSlide) this._mount(target)
    else if (this.following && !isPresenter) this._applyPresenterViewport(forceApply)
    this._sendFollowing()
    this._renderAll()
  }

  _onPresence (changed) {
    const p = this.presenterClient()
    if (p) {
      const key = `${p.state.slide}|${vpKey(p.state.viewport)}`
      if (p.state.viewport && key !== this._lastPresenterKey) this._logPush('received', vpKey(p.state.viewport))
      this._lastPresenterKey = key
    }
    if (!this.isPresenter && this.following) {
      const target = this.presenterSlide()
      if (target && target !== this.viewSlide) this._mount(target)
      else this._applyPresenterViewport(false)
    }
    if (this.view) this.view.overlay.requestDraw()
    const sig = this._presenceSignature()
    if (sig !== this._presenceSig) {
      this._presenceSig = sig
      this._renderAll()
    }
  }

  _presenceSignature () {
    const p = this.presenterInfo()
    const pc = this.presenterClient()
    return JSON.stringify([p, pc && pc.state.slide, this.presenterId, this.current])
  }

  _applyPresenterViewport (force) {
    const view = this.view
    const p = this.presenterClient()
    if (!view || !view.ready || !p) return
    const slide = p.state.slide || this.current
    if (slide !== this.viewSlide) return
    const vp = p.state.viewport
    if (!vp) return
    const key = vpKey(vp)
    if (!force && key === this._appliedKey) return
    const first = force || this._appliedKey == null
    this._appliedKey = key
    view.setViewport(vp, { immediately: first })
    this._logPush('applied', key)
  }

  // ---- the slide view --------------------------------------------------------------------------------

  _slideRecord (slideId) {
    const s = this.slides.get(slideId)
    if (s) return { ...s, mpp: Number(s.mpp) > 0 ? Number(s.mpp) : null }
    const prefix = location.pathname.replace(/\/app(\/.*)?$/, '')
    return { id: slideId, title: slideId, width: 0, height: 0, mpp: null, tiles: `${prefix}/slides/${encodeURIComponent(slideId)}.dzi` }
  }

  _mount (slideId, restore = null) {
    if (this.view) { this.view.destroy(); this.view = null }
    this.viewSlide = slideId
    this._appliedKey = null
    this._publishViewport?.cancel()
    if (this.awareness) {
      // The slide and a cleared viewport in one state: a follower never applies the previous
      // slide's viewport to the new one.
      this.awareness.setLocalState({ ...(this.awareness.getLocalState() || {}), slide: slideId, viewport: null, cursor: null })
    }
    const slide = this._slideRecord(slideId)
    const view = new SlideView(this.regions, {
      slide,
      token: this.token,
      me: this.me,
      toast: this.toast,
      resync: () => this._mount(slideId, { viewport: view.getViewport(false) }),
      extraPointers: () => this._pointers(),
    })
    this.view = view
    this.emit('view', view)
    view.on('ready', () => {
      if (this.view !== view) return
      if (restore && restore.viewport) view.setViewport(restore.viewport, { immediately: true })
      if (this.following && !this.isPresenter) this._applyPresenterViewport(true)
      this._sendViewport()
      this._renderAll()
    })
    view.on('user-navigation', () => {
      if (this.view === view && this.following && !this.isPresenter) this.setFollowing(false)
    })
    view.on('pointer', (p) => { if (this.view === view) this._publishCursor?.(p) })
    view.on('closed', ({ code, reason }) => {
      this.toast(`This slide cannot be shown: ${reason || code}`, { level: 'error', sticky: true })
    })
    const onMove = () => { if (this.view === view && view.ready) this._publishViewport() }
    const onSettle = () => { if (this.view === view && view.ready) { this._publishViewport(); this._publishViewport.flush() } }
    view.viewer.addHandler('viewport-change', onMove)
    view.viewer.addHandler('animation-finish', onSettle)
    view.viewer.addHandler('resize', onSettle)
    this._renderAll()
  }

  _sendViewport () {
    const view = this.view
    if (!view || !view.ready || !this.awareness) return
    const vp = view.getViewport()
    if (!vp) return
    const cur = this.awareness.getLocalState() || {}
    if (vpKey(cur.viewport) === vpKey(vp) && cur.slide === this.viewSlide) return
    this.awareness.setLocalState({ ...cur, slide: this.viewSlide, viewport: vp })
    if (this.isPresenter) this._logPush('sent', vpKey(vp))
  }

  _sendFollowing () {
    if (!this.awareness) return
    const p = this.following && !this.isPresenter ? this.presenterClient() : null
    const value = p ? p.clientId : null
    const cur = this.awareness.getLocalState() || {}
    if (cur.following !== value) this.awareness.setLocalStateField('following', value)
  }

  /** The presenter's pointer (from the session room) on the slide I am looking at. */
  _pointers () {
    if (this.isPresenter) return []
    const p = this.presenterClient()
    if (!p || !p.state.cursor || p.state.slide !== this.viewSlide) return []
    const u = p.state.user
    return [{ user: u, cursor: p.state.cursor, label: `Presenter · ${u.name}${u.site ? ' · ' + u.site : ''}` }]
  }

  _logPush (kind, key) {
    const list = this.log[kind]
    list.push({ key, t: now() })
    if (list.length > LOG_MAX) list.splice(0, list.length - LOG_MAX)
  }

  // ---- rendering ---------------------------------------------------------------------------------------

  _renderAll () {
    this._renderPresenter()
    this._renderAgenda()
    this._renderFollow()
  }

  _renderConnection () {
    const el = this.el.sessionConn
    const state = this.room ? this.room.state : 'connecting'
    el.dataset.state = state
    el.textContent = state === 'connected' ? 'Session' : state === 'closed' ? 'Session closed' : 'Session…'
  }

  _renderPresenter () {
    const box = clear(this.el.presenter)
    const p = this.presenterInfo()
    box.dataset.userId = p ? p.id : ''
    box.dataset.me = String(!!(p && p.isMe))
    if (!p) {
      box.append(h('span.muted', { 'data-testid': 'presenter-name' }, 'Nobody is presenting yet.'))
    } else {
      box.append(
        h('span.dot', { style: { background: p.color || '#888' } }),
        h('div.p-main', null,
          h('div.p-name', { 'data-testid': 'presenter-name' }, p.name, p.isMe && h('span.muted', null, ' (you)')),
          h('div.p-meta', null, h('span', { 'data-testid': 'presenter-site' }, p.site || '—'),
            !p.connected && h('span.muted', null, ' · not connected'))))
    }
    const canTake = this.me.canPresent && !this.isPresenter
    this.el.takeOver.hidden = !canTake
    this.el.takeOver.textContent = p ? 'Take over' : 'Start presenting'
    this.el.takeOver.title = p ? `Present instead of ${p.name}: everyone follows you` : 'Lead the session: everyone follows you'
    this.el.followToggle.hidden = this.isPresenter
  }

  _renderAgenda () {
    const ul = clear(this.el.agenda)
    const agenda = this.agenda
    this.el.agendaCount.textContent = String(agenda.length)
    const pc = this.presenterClient()
    const presenterOn = this.isPresenter ? this.viewSlide : (pc && pc.state.slide) || this.current
    const isPresenter = this.isPresenter
    agenda.forEach((id, i) => {
      const rec = this.slides.get(id)
      const isCurrent = id === this.current
      const viewing = id === this.viewSlide
      ul.append(h('li.agenda-item', {
        'data-testid': 'agenda-item',
        'data-slide-id': id,
        'data-current': String(isCurrent),
        'data-viewing': String(viewing),
        class: [isCurrent ? 'current' : '', viewing ? 'viewing' : ''].join(' '),
        'aria-current': isCurrent ? 'true' : null,
      },
      h('button.agenda-btn', {
        title: isPresenter ? 'Show this slide to everyone' : 'Look at this slide on your own (stops following)',
        on: { click: () => this.goTo(id) },
      },
      h('span.agenda-n', null, String(i + 1)),
      h('span.agenda-title', null, (rec && rec.title) || id),
      isCurrent && h('span.agenda-flag', { title: 'The slide being presented' }, 'now'),
      !isCurrent && presenterOn === id && h('span.agenda-flag', null, 'presenter'),
      viewing && !isCurrent && h('span.agenda-flag.mine', null, 'you'))))
    })
    if (!agenda.length) ul.append(h('li.muted', null, this._synced ? 'The agenda is empty.' : 'Loading…'))
  }

  _renderFollow () {
    const presenting = this.isPresenter
    const hasPresenter = !!this.presenterId
    const following = this.following && !presenting
    this.el.followToggle.setAttribute('aria-pressed', String(following))
    this.el.followToggle.classList.toggle('active', following)
    this.el.followToggle.textContent = following ? 'Following presenter' : 'Follow presenter'
    this.el.back.hidden = presenting || following || !hasPresenter
    const badge = this.el.followBadge
    clear(badge)
    const p = this.presenterInfo()
    if (presenting) {
      badge.hidden = false
      badge.className = 'session-follow-badge viewer-ui presenting'
      badge.append(h('span', null, 'You are presenting'))
    } else if (following && p) {
      badge.hidden = false
      badge.className = 'session-follow-badge viewer-ui'
      badge.append(h('span', null, `Following ${p.name}${p.site ? ' · ' + p.site : ''}`))
    } else {
      badge.hidden = true
    }
    document.body.dataset.sessionFollowing = String(following)
  }

  // ---- state for tests -----------------------------------------------------------------------------------

  state () {
    const pc = this.presenterClient()
    return {
      id: this.id,
      title: (this.record && this.record.title) || null,
      agenda: this.agenda,
      current: this.current,
      presenter: this.presenterInfo(),
      presenterClientId: pc ? pc.clientId : null,
      presenterSlide: pc ? pc.state.slide ?? null : null,
      presenterViewport: pc ? pc.state.viewport ?? null : null,
      isPresenter: this.isPresenter,
      canPresent: !!this.me.canPresent,
      following: this.following && !this.isPresenter,
      viewSlide: this.viewSlide,
      connection: this.room ? this.room.state : 'connecting',
      synced: !!this._synced,
      closeCode: this.room ? this.room.closeCode : null,
      clientId: this.awareness ? this.awareness.clientID : null,
      denied: this.room ? this.room.deniedCount : 0,
    }
  }

  destroy () {
    if (this.view) this.view.destroy()
    if (this.room) this._closeRoom()
  }
}

function homeOf () {
  const token = new URLSearchParams(location.search).get('token')
  return location.pathname + (token ? `?token=${encodeURIComponent(token)}` : '')
}
