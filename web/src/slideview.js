// One slide, live: OpenSeadragon + the slide room + annotation overlay + tools + presence + panels.
// This module builds the DOM and wires the parts together; each part has a module of its own
// (follow, keyboard, hit-testing, navigator, scale bar, panels/*).
// A host (the slide page, later a tumor-board session page) gives it layout regions; it fills
// them and cleans up after itself in destroy(), so a host can switch slides by replacing it.
import OpenSeadragon from 'openseadragon'
import { Room } from './room.js'
import { AnnotationStore } from './model.js'
import { Overlay, readableOn } from './overlay.js'
import { Tools, TOOLS } from './tools.js'
import { Presence, roundViewport } from './presence.js'
import { Follow } from './follow.js'
import { NAV_KEYS, shortcuts, bindKeyboard } from './keyboard.js'
import { hitTest, Hover } from './hittest.js'
import { NavigatorViewports } from './navigator.js'
import { Scalebar } from './scalebar.js'
import { ParticipantsPanel } from './panels/participants.js'
import { ClassesPanel } from './panels/classes.js'
import { DetailsPanel } from './panels/details.js'
import { ListPanel } from './panels/list.js'
import { LayersPanel, CellsPanel } from './panels/layers.js'
import { LayerView } from './layers.js'
import { UNCLASSIFIED_COLOR, colorOf } from './classes.js'
import * as geo from './geometry.js'
import { Emitter, h, clear, rgb } from './dom.js'
import { ICONS } from './icons.js'
const STATE_TEXT = {
  connecting: 'Connecting…',
  syncing: 'Syncing…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
}

function sameOrigin (url) {
  try { return new URL(url, location.href).origin === location.origin } catch { return false }
}

export class SlideView extends Emitter {
  /**
   * @param {object} regions {header, toolbar, main, side} elements to fill (see layout.js)
   * @param {object} opts
   * @param {object} opts.slide {id, title, width, height, mpp, tiles}
   * @param {import('./credentials.js').Credentials} opts.credentials the token, renewable
   * @param {object} opts.me identity from the token (auth.js)
   * @param {(msg: string, opts?: object) => void} opts.toast
   */
  constructor (regions, { slide, credentials, me, toast, resync, extraPointers, followButtons = true, presenterId = null }) {
    super()
    // A host may add pointers to draw (a session presenter's, from the session room):
    // () => [{user, cursor, label}]; the same user's slide-room cursor is then not drawn twice.
    this.extraPointers = extraPointers || null
    this.regions = regions
    this.slide = slide
    this.credentials = credentials
    // In a session the page has one follow control (follow the presenter): no per-participant
    // Follow buttons; `presenterId()` names who presents, for the participants' labels.
    this.followButtons = followButtons
    this.presenterId = presenterId
    this.me = me
    this.canEdit = !!me.canEdit
    this.toast = toast || ((m) => console.log(m))
    this.resync = resync || (() => location.reload())
    this.selectedId = null
    this.hoverId = null
    this.currentClass = null
    this.showAnnotations = true
    this.showViewports = true
    this.ready = false
    this._cleanup = []

    this.room = new Room({ kind: 'slides', id: slide.id, credentials })
    this.doc = this.room.doc
    this.awareness = this.room.awareness
    this.store = new AnnotationStore(this.doc, { width: slide.width, height: slide.height, mpp: slide.mpp, me })

    this._buildDom()
    this._buildViewer()
    this.overlay = new Overlay(this)
    this.layers = new LayerView(this) // detection layers, drawn under the annotations
    this.tools = new Tools(this)
    this.presence = new Presence({ awareness: this.awareness, me, getViewport: () => this.getViewport() })
    this.follow = new Follow({
      presence: this.presence,
      applyViewport: (vp, first) => this.setViewport(vp, { immediately: first }),
      banner: this.el.followBanner,
    })
    this.hover = new Hover(this, this.el.tooltip)
    this.navigator = new NavigatorViewports(this)
    this.scalebar = new Scalebar(this.el.scalebar, slide.mpp)
    this.panels = {
      participants: new ParticipantsPanel(this, { list: this.el.participants, count: this.el.participantsCount }),
      classes: new ClassesPanel(this, this.el.classes),
      details: new DetailsPanel(this, this.el.details),
      list: new ListPanel(this, { list: this.el.list, count: this.el.listCount }),
      layers: new LayersPanel(this, this.el.layers),
      cells: new CellsPanel(this, this.el.cells),
    }
    this._wire()
    this.tools.setTool('select')
    this._renderConnection()
    for (const p of Object.values(this.panels)) p.render()
  }

  // ---- DOM ------------------------------------------------------------------------------------

  _buildDom () {
    const { header, toolbar, main, side } = this.regions
    const me = this.me

    this.el = {}
    this.el.connection = h('span.conn', { 'data-testid': 'connection', role: 'status', title: 'Connection to the collab server' })
    this.el.undo = h('button.icon-btn', { 'data-testid': 'undo', title: 'Undo my last change (Ctrl+Z)', 'aria-label': 'Undo', html: ICONS.undo, on: { click: () => this.undo() } })
    this.el.redo = h('button.icon-btn', { 'data-testid': 'redo', title: 'Redo (Ctrl+Shift+Z)', 'aria-label': 'Redo', html: ICONS.redo, on: { click: () => this.redo() } })
    this.el.headerItems = h('div.header-items', null,
      h('span.slide-title', { 'data-testid': 'slide-title', title: `${this.slide.title || this.slide.id} (${this.slide.id})` }, this.slide.title || this.slide.id),
      this.canEdit ? h('div.btn-group', null, this.el.undo, this.el.redo) : h('span.badge.readonly', { 'data-testid': 'readonly-badge', title: 'Your role can watch and follow, not edit' }, 'Read-only'),
      this.el.connection,
      h('button.icon-btn.help-btn', { 'data-testid': 'help', title: 'Keyboard shortcuts (?)', 'aria-label': 'Keyboard shortcuts', 'aria-expanded': 'false', on: { click: () => this.toggleHelp() } }, '?'),
      // My name from the token is shown once the server accepted it (the room synced).
      this.el.me = h('span.me', { 'data-testid': 'me', title: `${me.name} (${me.site}, ${me.role})`, hidden: true },
        h('span.dot', { style: { background: me.color } }),
        h('span.me-name', null, me.name),
        h('span.muted', null, ` · ${me.site || '—'} · `),
        h('span.role', null, me.role)))
    header.append(this.el.headerItems)

    // Toolbar: editing tools only for roles that may edit.
    this.el.toolButtons = new Map()
    const tools = TOOLS.filter((t) => !t.edit || this.canEdit)
    const toolEls = tools.map((t) => {
      const b = h('button.tool', {
        'data-testid': `tool-${t.id}`,
        title: `${t.label} (${t.key.toUpperCase()})`,
        'aria-label': t.label,
        'aria-pressed': 'false',
        html: ICONS[t.id] + `<span class="key">${t.key.toUpperCase()}</span>`,
        on: { click: () => this.tools.setTool(t.id) },
      })
      this.el.toolButtons.set(t.id, b)
      return b
    })
    const navBtn = (id, icon, label, fn) => h('button.tool', { 'data-testid': id, title: label, 'aria-label': label, html: icon, on: { click: () => { fn(); this.userNavigated() } } })
    this.el.toolbar = h('div.toolbar-inner', { role: 'toolbar', 'aria-label': 'Tools', 'aria-orientation': 'vertical' },
      toolEls,
      this.canEdit && h('button.tool.danger', { 'data-testid': 'delete', title: 'Delete selected annotation (Del)', 'aria-label': 'Delete selected annotation', html: ICONS.trash, on: { click: () => this.deleteSelected() } }),
      h('div.sep'),
      navBtn('zoom-in', ICONS.zoomIn, 'Zoom in (+)', () => this.viewer.viewport.zoomBy(1.6)),
      navBtn('zoom-out', ICONS.zoomOut, 'Zoom out (−)', () => this.viewer.viewport.zoomBy(1 / 1.6)),
      navBtn('home', ICONS.home, 'Whole slide (0)', () => this.viewer.viewport.goHome()),
      navBtn('rotate-left', ICONS.rotL, 'Rotate left 90° ([)', () => this.rotateBy(-90)),
      navBtn('rotate-right', ICONS.rotR, 'Rotate right 90° (])', () => this.rotateBy(90)))
    toolbar.append(this.el.toolbar)

    this.el.viewer = h('div.viewer', { 'data-testid': 'viewer', tabindex: '-1' })
    this.el.scalebar = h('div.scalebar.viewer-ui', { 'data-testid': 'scalebar', 'aria-hidden': 'true' }, h('div.scalebar-bar'), h('span.scalebar-text'))
    this.el.coords = h('div.coords.viewer-ui', { 'aria-hidden': 'true' })
    this.el.tooltip = h('div.tooltip', { role: 'tooltip', hidden: true })
    this.el.followBanner = h('div.follow-banner.viewer-ui', { 'data-testid': 'follow-banner', hidden: true })
    const keys = shortcuts(this.canEdit)
    this.el.help = h('div.help.viewer-ui', { 'data-testid': 'help-panel', role: 'dialog', 'aria-label': 'Keyboard shortcuts', hidden: true },
      h('h2', null, 'Keyboard shortcuts'),
      h('dl', null, keys.map(([k, v]) => [h('dt', null, h('kbd', null, k)), h('dd', null, v)])))
    main.append(this.el.viewer, this.el.scalebar, this.el.coords, this.el.tooltip, this.el.followBanner, this.el.help)

    this.el.participants = h('ul.participants', { 'data-testid': 'participants', 'aria-label': 'Participants' })
    this.el.participantsCount = h('span.count')
    this.el.classes = h('div.classes', { 'data-testid': 'classes' })
    this.el.details = h('div.details', { 'data-testid': 'selection' })
    this.el.list = h('ul.ann-list', { 'data-testid': 'annotation-list' })
    this.el.layers = h('div.layers', { 'data-testid': 'layers' })
    this.el.cells = h('div.cells', { 'data-testid': 'cells' })
    this.el.listCount = h('span.count', { 'data-testid': 'annotation-count' })
    const section = (title, extra, body, opts = {}) => h('section.panel', { 'aria-label': title, 'data-testid': opts.testid },
      h('h2', null, title, extra), body)
    this.el.side = h('div.side-inner', null,
      section('Participants', this.el.participantsCount, this.el.participants, { testid: 'participants-panel' }),
      this.canEdit && section('Classification', null, this.el.classes, { testid: 'classes-panel' }),
      section('Selected annotation', null, this.el.details, { testid: 'details-panel' }),
      section('Cell counts', null, this.el.cells, { testid: 'cells-panel' }),
      section('Detection layers', null, this.el.layers, { testid: 'layers-panel' }),
      section('Annotations', this.el.listCount, this.el.list, { testid: 'list-panel' }))
    side.append(this.el.side)
  }

  _buildViewer () {
    const slide = this.slide
    this.viewer = OpenSeadragon({
      element: this.el.viewer,
      tileSources: slide.tiles,
      drawer: 'canvas',
      showNavigationControl: false,
      showNavigator: true,
      navigatorPosition: 'BOTTOM_RIGHT',
      navigatorSizeRatio: 0.2,
      navigatorAutoFade: false,
      navigatorOpacity: 1,
      navigatorBackground: '#0c0d0f',
      navigatorRotate: true,
      animationTime: 0.5,
      blendTime: 0.1,
      springStiffness: 9,
      maxZoomPixelRatio: 3,
      minZoomImageRatio: 0.5,
      visibilityRatio: 0.3,
      constrainDuringPan: false,
      preserveImageSizeOnResize: true,
      zoomPerScroll: 1.4,
      timeout: 60000,
      gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, flickEnabled: false, pinchRotate: false },
      gestureSettingsTouch: { clickToZoom: false, dblClickToZoom: true, flickEnabled: true, pinchRotate: true },
      gestureSettingsPen: { clickToZoom: false, dblClickToZoom: false, flickEnabled: false },
      crossOriginPolicy: false,
      ajaxWithCredentials: false,
      // The server's own tiles want the token: send it as a Bearer header (never to other hosts).
      ...(sameOrigin(slide.tiles) ? { loadTilesWithAjax: true, ajaxHeaders: { Authorization: `Bearer ${this.token}` } } : {}),
    })
    if (sameOrigin(slide.tiles)) {
      // A renewed token: later tile requests carry the new one.
      this._cleanup.push(this.credentials.on('change', (t) => this.viewer.setAjaxHeaders({ Authorization: `Bearer ${t}` }, true)))
    }
    this.viewer.addHandler('open', () => {
      this.ready = true
      this.navigator.attach()
      this.overlay.requestDraw()
      this.presence.viewportSettled()
      this.emit('ready')
    })
    this.viewer.addHandler('open-failed', (ev) => {
      this.toast(`The slide image could not be opened: ${ev.message || 'unknown error'}`, { level: 'error', sticky: true })
    })
  }

  // ---- wiring -------------------------------------------------------------------------------------

  _wire () {
    const v = this.viewer
    const on = (target, ev, fn) => {
      if (target.addHandler) { target.addHandler(ev, fn); this._cleanup.push(() => target.removeHandler(ev, fn)) } else { target.on(ev, fn); this._cleanup.push(() => target.off(ev, fn)) }
    }
    // Presence: publish my viewport while moving (throttled) and when it settles.
    on(v, 'viewport-change', () => { if (this.ready) this.presence.publishViewport() })
    on(v, 'animation-finish', () => { if (this.ready) this.presence.viewportSettled() })
    on(v, 'resize', () => { if (this.ready) this.presence.viewportSettled() })
    // Any navigation of my own ends "follow".
    for (const ev of ['canvas-drag', 'canvas-scroll', 'canvas-pinch', 'canvas-double-click', 'navigator-click', 'navigator-drag', 'navigator-scroll']) {
      on(v, ev, () => this.userNavigated())
    }
    on(v, 'canvas-key', (e) => { if (NAV_KEYS.has(e.originalEvent.key)) this.userNavigated() })
    on(v, 'canvas-exit', () => { this.presence.publishCursor(null); this.emit('pointer', null); this.el.coords.textContent = ''; this.hover.hide(); this.setHover(null) })

    on(this.room, 'state', () => this._renderConnection())
    on(this.room, 'denied', (reason) => this._denied(reason))
    on(this.room, 'synced', () => { this.el.me.hidden = false; this.overlay.requestDraw(); this.panels.list.render() })

    on(this.store, 'change', (ids) => {
      this.overlay.requestDraw()
      if (this.selectedId && ids.has(this.selectedId)) { this.panels.details.render(); this.panels.cells.render() }
      if (this.hoverId && ids.has(this.hoverId) && !this.store.get(this.hoverId)) this.setHover(null)
      this.panels.list.renderSoon()
    })
    const undoChanged = () => this._renderUndo()
    on(this.store.undo, 'stack-item-added', undoChanged)
    on(this.store.undo, 'stack-item-popped', undoChanged)
    on(this.store.undo, 'stack-cleared', undoChanged)
    this._renderUndo()

    on(this.layers, 'layers', () => { this.panels.layers.render(); this.panels.cells.render() })
    this.layers.refresh().catch((e) => this.toast(`The detection layers could not be listed: ${e.message}`, { level: 'error' }))
    on(this.presence, 'participants', () => this.panels.participants.render())
    on(this.presence, 'remote-change', () => { this.overlay.requestDraw(); this.navigator.drawSoon() })
    on(this.follow, 'follow', () => { this.panels.participants.render(); this.follow.renderBanner() })
    on(this.follow, 'notice', (m) => this.toast(m))
    on(this.tools, 'tool', (id) => {
      for (const [tid, b] of this.el.toolButtons) {
        b.classList.toggle('active', tid === id)
        b.setAttribute('aria-pressed', String(tid === id))
      }
      this.hover.hide()
      this.setHover(null)
    })

    this._cleanup.push(bindKeyboard(this))
  }

  destroy () {
    clearTimeout(this._resyncTimer)
    for (const fn of this._cleanup.splice(0)) { try { fn() } catch {} }
    this.follow.destroy()
    this.presence.destroy()
    this.hover.destroy()
    this.navigator.destroy()
    this.tools.destroy()
    this.layers.destroy()
    this.overlay.destroy()
    this.store.destroy()
    this.room.destroy()
    this.viewer.destroy()
    for (const r of Object.values(this.regions)) if (r) clear(r)
  }

  get token () { return this.credentials.token }

  // ---- viewport -------------------------------------------------------------------------------

  get item () { return this.viewer.world.getItemCount() ? this.viewer.world.getItemAt(0) : null }

  /** My viewport in slide pixels: the unrotated view box {x, y, width, height} and rotation. */
  getViewport (current = true) {
    const item = this.item
    if (!item) return null
    const vp = this.viewer.viewport
    const b = vp.getBoundsNoRotate(current)
    const r = item.viewportToImageRectangle(b.x, b.y, b.width, b.height, current)
    return roundViewport({ x: r.x, y: r.y, width: r.width, height: r.height, rotation: vp.getRotation(current) })
  }

  /** Shows someone's viewport: same center and rotation, zoomed so their whole view fits. */
  setViewport (v, { immediately = false } = {}) {
    const item = this.item
    if (!item || !v || ![v.x, v.y, v.width, v.height].every(Number.isFinite) || v.width <= 0 || v.height <= 0) return
    const vp = this.viewer.viewport
    const r = item.imageToViewportRectangle(v.x, v.y, v.width, v.height)
    const size = vp.getContainerSize()
    const zoom = Math.min(1 / r.width, size.y / (size.x * r.height))
    const center = item.imageToViewportCoordinates(v.x + v.width / 2, v.y + v.height / 2)
    vp.setRotation(Number(v.rotation) || 0, immediately)
    vp.zoomTo(zoom, null, immediately)
    vp.panTo(center, immediately)
  }

  toggleHelp (show = this.el.help.hidden) {
    this.el.help.hidden = !show
    this.regions.header.querySelector('.help-btn')?.setAttribute('aria-expanded', String(show))
  }

  rotateBy (deg) {
    const vp = this.viewer.viewport
    vp.setRotation(vp.getRotation() + deg)
  }

  /** Called on any navigation by this user: leaves follow mode. */
  userNavigated () {
    if (this.follow.following != null) {
      this.follow.stop()
      this.emit('navigated')
    }
    // Hosts (a session following its presenter) hear of every navigation of the user's own.
    this.emit('user-navigation')
  }

  /** Slide px -> page (client) px, for tests and hosts. */
  imageToClient (x, y) {
    const [sx, sy] = this.overlay.imageToScreen(x, y)
    const r = this.viewer.container.getBoundingClientRect()
    return [r.left + sx, r.top + sy]
  }

  // ---- pointer feedback (called by tools) -----------------------------------------------------

  pointerAt (s) {
    if (!this.ready) return
    const p = this.overlay.screenToImage(s[0], s[1])
    this.presence.publishCursor(p)
    this.emit('pointer', p)
    const mpp = this.slide.mpp
    this.el.coords.textContent = mpp
      ? `x ${(p[0] * mpp / 1000).toFixed(3)} mm · y ${(p[1] * mpp / 1000).toFixed(3)} mm`
      : `x ${Math.round(p[0])} · y ${Math.round(p[1])} px`
    this._lastPointer = s
  }

  hitTest (s) { return hitTest(this, s) }

  hoverAt (s) { this.hover.at(s) }

  setHover (id) {
    if (this.hoverId === id) return
    this.hoverId = id
    this.overlay.requestDraw()
  }

  // ---- annotations ------------------------------------------------------------------------------

  currentClassification () {
    return this.currentClass ? { name: this.currentClass.name, color: this.currentClass.color.slice() } : null
  }

  currentColor () { return this.currentClass ? this.currentClass.color : UNCLASSIFIED_COLOR }

  createAnnotation (geometry) {
    if (!this.canEdit) return null
    const id = this.store.create({ geometry: geo.round(geometry), classification: this.currentClassification() })
    this.select(id)
    return id
  }

  moveAnnotation (id, dx, dy) {
    const e = this.store.get(id)
    if (!e || !e.geometry || e.locked || !this.canEdit) return
    this.store.update(id, { geometry: geo.round(geo.translate(e.geometry, dx, dy)) })
  }

  deleteSelected () {
    const e = this.selectedId && this.store.get(this.selectedId)
    if (!e || !this.canEdit) return
    if (e.locked) { this.toast('This annotation is locked. Unlock it first.'); return }
    this.store.remove(e.id)
    this.select(null)
  }

  undo () { if (this.canEdit) { this.tools.cancelDraft(); this.store.undo.undo() } }
  redo () { if (this.canEdit) { this.tools.cancelDraft(); this.store.undo.redo() } }

  select (id) {
    if (id && !this.store.get(id)) id = null
    if (this.selectedId === id) return
    this.selectedId = id
    this.overlay.requestDraw()
    this.panels.details.render(true)
    this.panels.cells.render()
    this.panels.list.markSelection()
    this.emit('select', id)
  }

  /** Pans (and zooms out if needed) so the annotation is in view. */
  reveal (id) {
    const e = this.store.get(id)
    const item = this.item
    if (!e || !e.bbox || !item) return
    const b = e.bbox
    const size = Math.max(b[2] - b[0], b[3] - b[1])
    const pad = size * 0.8 + 60
    const cur = this.getViewport(false)
    // Pan only when it already shows at a useful size; otherwise frame it.
    const fits = cur && (b[2] - b[0]) < cur.width * 0.9 && (b[3] - b[1]) < cur.height * 0.9 && size > Math.min(cur.width, cur.height) * 0.08
    this.userNavigated()
    if (fits) {
      this.viewer.viewport.panTo(item.imageToViewportCoordinates((b[0] + b[2]) / 2, (b[1] + b[3]) / 2))
    } else {
      this.viewer.viewport.fitBoundsWithConstraints(item.imageToViewportRectangle(b[0] - pad, b[1] - pad, b[2] - b[0] + 2 * pad, b[3] - b[1] + 2 * pad))
    }
  }

  measureText (m) {
    if (!m) return ''
    if (Number.isFinite(m.area_um2)) return `${geo.formatArea(m.area_um2)} · ${geo.formatLength(m.perimeter_um)}`
    if (Number.isFinite(m.length_um)) return geo.formatLength(m.length_um)
    return ''
  }

  setClass (cls) {
    this.currentClass = cls
    const e = this.selectedId && this.store.get(this.selectedId)
    if (e && this.canEdit && !e.locked) {
      this.store.update(e.id, { classification: cls ? { name: cls.name, color: cls.color.slice() } : null })
    }
    this.panels.classes.render()
  }

  toggleAnnotations () {
    this.showAnnotations = !this.showAnnotations
    this.toast(this.showAnnotations ? 'Annotations shown' : 'Annotations hidden (H to show)')
    this.overlay.requestDraw()
  }

  // ---- server refusals ----------------------------------------------------------------------------

  _denied (reason) {
    // The refused change stays in this page's copy only: a viewer (who has nothing of their own
    // to keep) is resynced from the server at once; an editor chooses when.
    if (this.canEdit) {
      this.toast(`The server refused your change (${reason}). It is not saved; reload the shared state to drop it.`,
        { level: 'error', sticky: true, testid: 'denied', action: { label: 'Reload from server', fn: () => this.resync() } })
    } else {
      this.toast(`You have read-only access: changes are not possible (${reason}).`, { level: 'error', testid: 'denied', timeout: 8000 })
      clearTimeout(this._resyncTimer)
      this._resyncTimer = setTimeout(() => this.resync(), 300)
    }
    this.emit('denied', reason)
  }

  // ---- rendering: header ------------------------------------------------------------------------

  _renderConnection () {
    const r = this.room
    const el = this.el.connection
    let text = STATE_TEXT[r.state] || r.state
    if (r.pendingEdits > 0 && r.state !== 'connected') text += ` · ${r.pendingEdits} edit${r.pendingEdits > 1 ? 's' : ''} pending`
    el.textContent = text
    el.dataset.state = r.state
    el.dataset.pending = String(r.pendingEdits)
    el.title = r.state === 'closed' ? r.closeReason : (r.state === 'reconnecting' ? 'Lost the server; your edits are kept and sent when it is back.' : text)
    if (r.state === 'closed') this.emit('closed', { code: r.closeCode, reason: r.closeReason })
  }

  _renderUndo () {
    if (!this.canEdit) return
    this.el.undo.disabled = !this.store.undo.canUndo()
    this.el.redo.disabled = !this.store.undo.canRedo()
  }

  onOverlayDrawn (T) {
    this.navigator.draw()
    this.scalebar.update(T)
  }

  // ---- state for tests and hosts ----------------------------------------------------------------

  annotationSummary (id) {
    const e = this.store.get(id)
    if (!e) return null
    const m = this.store.measurements(e)
    return {
      id: e.id,
      type: e.geometry ? e.geometry.type : null,
      classification: e.classification ? e.classification.name : null,
      color: rgb(e.color),
      colorRGB: e.color.slice(),
      name: e.name,
      locked: e.locked,
      author: e.author,
      status: e.status,
      problem: e.problem,
      measurements: m,
      areaText: Number.isFinite(m.area_um2) ? geo.formatArea(m.area_um2) : null,
      lengthText: Number.isFinite(m.length_um) ? geo.formatLength(m.length_um) : null,
      comments: e.comments.length,
      created: e.created,
      receivedAt: e.receivedAt,
      bbox: e.bbox,
    }
  }

  state () {
    return {
      slide: { id: this.slide.id, width: this.slide.width, height: this.slide.height, mpp: this.slide.mpp },
      me: { ...this.me, clientId: this.awareness.clientID },
      canEdit: this.canEdit,
      ready: this.ready,
      tilesLoaded: !!(this.item && this.item.getFullyLoaded()),
      connection: this.room.state,
      closeCode: this.room.closeCode,
      closeReason: this.room.closeReason,
      pendingEdits: this.room.pendingEdits,
      denied: this.room.deniedCount,
      synced: !!this.room.provider.synced,
      tool: this.tools.tool,
      selected: this.selectedId,
      following: this.follow.following,
      viewport: this.getViewport(),
      annotationCount: this.store.size,
      annotationIds: this.store.size <= 1000 ? [...this.store.entries.keys()] : null,
      participants: this.presence.participants().map((p) => ({ clientId: p.clientId, isMe: p.isMe, user: p.user, following: p.following, viewport: p.viewport, cursor: p.cursor })),
      render: (({ recent, ...rest }) => ({ ...rest, recentMs: recent.slice() }))(this.overlay.stats),
      layers: this.layers.state(),
    }
  }
}

export { readableOn, colorOf }
