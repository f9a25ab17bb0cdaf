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
import { Presence, vpKey } from './presence.js'
import { SlideView } from './slideview.js'
import { getSession, listSlides, sessionSummaryHTML, apiRoot, ApiError } from './api.js'
import { explain } from './errors.js'
import { Emitter, h, clear } from './dom.js'

const LOG_MAX = 2000

const PRESENTER_GRACE_MS = 15_000 // a presenter who dropped out is "reconnecting" this long, then "not connected"
const STATE_VIEWPORT_MS = 1000 // the presenter's settled view is written to `state.viewport` at most this often

const now = () => performance.timeOrigin + performance.now()

export class SessionPage extends Emitter {
  /**
   * @param {object} opts
   * @param {object} opts.layout createLayout(root) result
   * @param {string} opts.sessionId
   * @param {import('./credentials.js').Credentials} opts.credentials
   * @param {object} opts.me identity from the token (auth.js)
   */
  constructor ({ layout, sessionId, credentials, me }) {
    super()
    this.layout = layout
    this.id = sessionId
    this.credentials = credentials
    this.me = me
    // Names of everyone seen here (user id -> {name, site, color}), from presence (stamped by
    // the server) and the session record: shown while someone, or the server, is away.
    this.names = new Map()
    this._presenterHere = false
    this._presenterLeftAt = 0 // when the presenter's connection went away (for "reconnecting")
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

  get token () { return this.credentials.token }

  _remember (user) {
    if (user && typeof user.id === 'string' && user.name) this.names.set(user.id, { name: String(user.name), site: String(user.site || ''), color: user.color || null })
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
      href: this.recordHref(),
      target: '_blank',
      rel: 'noopener',
      title: 'The board\'s record: what was shown, made or changed during this session, per slide (printable)',
      on: { click: (e) => { e.preventDefault(); this.openSummary() } },
    }, 'Session record (printable)')
    // A renewed token: the link carries the new one.
    this.credentials.on('change', () => { this.el.summary.href = this.recordHref() })
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
      if (this.record.created_by) this._remember({ id: this.record.created_by, name: this.record.created_by_name })
      this.emit('verified')
    } else {
      const e = rec.reason
      if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 404)) {
        const x = explain(e.status, { what: 'session', id: this.id, expired: isPast(this.credentials.expiresAt) })
        this.closed = true
        this.layout.fatal(x.title, x.message, e.status === 401 ? [] : [{ label: 'Slide list', href: homeOf() }])
        return
      }
      // The live room still has the agenda: go on without the record.
    }
    if (slides.status === 'fulfilled') {
      for (const s of slides.value) this.slides.set(s.id, s)
      this.emit('verified')
    }
    if (this.record && this.record.title) {
      this.el.title.textContent = this.record.title
      document.title = `${this.record.title} · tumor board · collab`
    }
    this._openRoom()
    this._renderAll()
  }

  _openRoom () {
    if (this.room) this._closeRoom()
    const room = this.room = new Room({ kind: 'sessions', id: this.id, credentials: this.credentials })
    const doc = room.doc
    this.agendaArr = doc.getArray('slides')
    this.stateMap = doc.getMap('state')
    this.awareness = room.awareness
    // Same presence publishing as a slide room, plus the slide I look at, sent with my viewport.
    const presence = this.presence = new Presence({
      awareness: this.awareness,
      me: this.me,
      fields: { slide: this.viewSlide },
      getViewport: () => (this.view && this.view.ready ? this.view.getViewport() : null),
      viewportFields: (vp) => ({ slide: this.viewSlide, viewport: vp }),
    })
    const offs = [() => presence.destroy()]
    offs.push(presence.on('viewport-sent', (vp) => { if (this.isPresenter) this._logPush('sent', vpKey(vp)) }))
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
    this.room.destroy()
    this.room = null
    this.presence = null
    this._synced = false
  }

  _roomClosed () {
    const code = this.room.closeCode
    this.closed = true
    const x = explain(code, { what: 'session', id: this.id, expired: isPast(this.credentials.expiresAt) })
    if (code === 4403) x.message = 'Your link does not give access to every slide of this session. Ask for a link that does.'
    // No "Try again" where the same link cannot succeed.
    const actions = code === 4401 ? [] : [{ label: 'Slide list', href: homeOf() }]
    if (!x.final) actions.push({ label: 'Try again', fn: () => location.reload() })
    this.layout.fatal(x.title, code === 4401 || code === 4403 || code === 4404 ? x.message : this.room.closeReason || x.message, actions)
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
    // Away (or the server is): the name we knew, and "reconnecting" for a while after they left.
    const known = this.names.get(pid)
    const reconnecting = !!this._presenterLeftAt && (Date.now() - this._presenterLeftAt < PRESENTER_GRACE_MS || !this.room || this.room.state !== 'connected')
    return { id: pid, name: known ? known.name : 'The presenter', site: known ? known.site : '', color: (known && known.color) || '#888', connected: false, reconnecting }
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

  /** The board's record: a stable address (the token in it, as in the page's own address). */
  recordHref () {
    return `${apiRoot()}api/sessions/${encodeURIComponent(this.id)}/record?format=html&tz=${encodeURIComponent(localZone())}&token=${encodeURIComponent(this.token)}`
  }

  async openSummary () {
    // A new window now (a popup opened after an await is blocked), given its address when known.
    const win = window.open('', '_blank')
    try {
      const probe = await fetch(this.recordHref(), { method: 'HEAD', cache: 'no-store' }).catch(() => null)
      if (probe && probe.status !== 404 && probe.status !== 405) {
        if (win) win.location = this.recordHref()
        else window.open(this.recordHref(), '_blank')
        return
      }
      // A server without the record route: the older summary, fetched with the Bearer header.
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
    this._trackPresenter()
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
    for (const st of this.awareness.getStates().values()) if (st && st.user) this._remember(st.user)
    this._trackPresenter()
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

  /** Notes when the presenter's connection goes away: "reconnecting" for a while, then "not connected". */
  _trackPresenter () {
    const here = !!this.presenterClient()
    if (this._presenterHere && !here) {
      this._presenterLeftAt = Date.now()
      clearTimeout(this._graceTimer)
      this._graceTimer = setTimeout(() => this._renderAll(), PRESENTER_GRACE_MS + 100)
    } else if (here) {
      this._presenterLeftAt = 0
    }
    this._presenterHere = here
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
    if (this.presence) {
      // The slide and a cleared viewport in one state: a follower never applies the previous
      // slide's viewport to the new one.
      this.presence.publishViewport.cancel()
      this.presence.set({ slide: slideId, viewport: null, cursor: null })
    }
    const slide = this._slideRecord(slideId)
    const view = new SlideView(this.regions, {
      slide,
      credentials: this.credentials,
      me: this.me,
      followButtons: false,
      presenterId: () => this.presenterId,
      toast: this.toast,
      resync: () => this._mount(slideId, { viewport: view.getViewport(false) }),
      extraPointers: () => this._pointers(),
    })
    this.view = view
    this.emit('view', view)
    view.on('ready', () => {
      if (this.view !== view) return
      // A presenter coming back (reload) returns to where they were, and is only then published:
      // followers see no jump to the whole slide.
      const back = (restore && restore.viewport) || (this.isPresenter ? this._savedViewport(slideId) : null)
      this._quiet = true
      try {
        if (back) view.setViewport(back, { immediately: true })
      } finally {
        this._quiet = false
      }
      if (this.following && !this.isPresenter) this._applyPresenterViewport(true)
      this._sendViewport()
      this._renderAll()
    })
    view.on('select', (annotationId) => {
      // What the presenter points the board to: the server audits it as "shown".
      if (this.view === view && annotationId && this.isPresenter && this.room) {
        this.room.doc.transact(() => this.stateMap.set('focus', { slide: slideId, annotation: annotationId }))
      }
    })
    view.on('user-navigation', () => {
      if (this.view === view && this.following && !this.isPresenter) this.setFollowing(false)
    })
    view.on('pointer', (p) => { if (this.view === view) this.presence?.publishCursor(p) })
    view.on('closed', ({ code, reason }) => {
      this.toast(`This slide cannot be shown: ${reason || code}`, { level: 'error', sticky: true })
    })
    const onMove = () => { if (this.view === view && view.ready && !this._quiet) this.presence?.publishViewport() }
    const onSettle = () => {
      if (this.view !== view || !view.ready || this._quiet) return
      this.presence?.viewportSettled()
      if (this.isPresenter) this._saveViewport()
    }
    view.viewer.addHandler('viewport-change', onMove)
    view.viewer.addHandler('animation-finish', onSettle)
    view.viewer.addHandler('resize', onSettle)
    this._renderAll()
  }

  _sendViewport () {
    this.presence?.viewportSettled()
  }

  /** Where the presenter was on this slide: this tab's memory, else the session's `state.viewport`. */
  _savedViewport (slideId) {
    try {
      const v = JSON.parse(sessionStorage.getItem(this._viewportKey()) || 'null')
      if (v && v.slide === slideId) return v
    } catch {}
    const v = this.stateMap && this.stateMap.get('viewport')
    return v && typeof v === 'object' && v.slide === slideId ? v : null
  }

  _viewportKey () { return `collab:session:${this.id}:viewport` }

  _saveViewport () {
    const vp = this.view && this.view.getViewport()
    if (!vp) return
    const saved = { slide: this.viewSlide, ...vp }
    try { sessionStorage.setItem(this._viewportKey(), JSON.stringify(saved)) } catch {}
    // The shared copy (another device of the presenter) at most once a second, trailing.
    clearTimeout(this._stateViewportTimer)
    const wait = Math.max(0, (this._stateViewportAt || 0) + STATE_VIEWPORT_MS - Date.now())
    this._stateViewportTimer = setTimeout(() => {
      if (!this.room || !this.isPresenter || this.closed) return
      this._stateViewportAt = Date.now()
      const cur = this.stateMap.get('viewport')
      if (vpKey(cur) === vpKey(saved) && cur && cur.slide === saved.slide) return
      this.room.doc.transact(() => this.stateMap.set('viewport', saved))
    }, wait)
  }

  _sendFollowing () {
    if (!this.presence) return
    const p = this.following && !this.isPresenter ? this.presenterClient() : null
    const value = p ? p.clientId : null
    this.presence.set({ following: value })
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
    // The slide's participants panel labels the current presenter: it changes with `state`.
    if (this.view) this.view.panels.participants.render()
  }

  _renderConnection () {
    if (this.room) this._renderAll() // "reconnecting" / "not connected" depend on it
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
          h('div.p-name', { 'data-testid': 'presenter-name', title: p.name }, p.name, p.isMe && h('span.muted', null, ' (you)')),
          h('div.p-meta', null, h('span', { 'data-testid': 'presenter-site', title: p.site || '' }, p.site || '—'),
            !p.connected && h('span.muted', { 'data-testid': 'presenter-away' }, p.reconnecting ? ' · reconnecting…' : ' · not connected'))))
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
      h('span.agenda-title', { title: (rec && rec.title) || id }, (rec && rec.title) || id),
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
      const away = p.connected ? '' : p.reconnecting ? ' · reconnecting…' : ' · not connected'
      const text = `Following ${p.name}${p.site ? ' · ' + p.site : ''}${away}`
      badge.append(h('span', { title: text }, text))
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
    clearTimeout(this._graceTimer)
    clearTimeout(this._stateViewportTimer)
    if (this.view) this.view.destroy()
    if (this.room) this._closeRoom()
  }
}

function homeOf () {
  const token = new URLSearchParams(location.search).get('token')
  return location.pathname + (token ? `?token=${encodeURIComponent(token)}` : '')
}

const isPast = (ms) => !!ms && ms <= Date.now()

function localZone () {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC' } catch { return 'UTC' }
}
