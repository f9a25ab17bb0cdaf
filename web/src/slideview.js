// One slide, live: OpenSeadragon + the slide room + annotation overlay + tools + presence + panels.
// A host (the slide page, later a tumor-board session page) gives it layout regions; it fills
// them and cleans up after itself in destroy(), so a host can switch slides by replacing it.
import OpenSeadragon from 'openseadragon'
import { Room } from './room.js'
import { AnnotationStore } from './model.js'
import { Overlay, viewportCorners, readableOn } from './overlay.js'
import { Tools, TOOLS } from './tools.js'
import { Presence, roundViewport } from './presence.js'
import { CLASSES, UNCLASSIFIED_COLOR, colorOf } from './classes.js'
import * as geo from './geometry.js'
import { Emitter, h, add, clear, rgb, relTime, throttle } from './dom.js'
import { ICONS } from './icons.js'

const NAV_KEYS = new Set(['ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'w', 'a', 's', 'd', 'W', 'A', 'S', 'D', '+', '-', '=', '_', '0'])
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
   * @param {string} opts.token
   * @param {object} opts.me identity from the token (auth.js)
   * @param {(msg: string, opts?: object) => void} opts.toast
   */
  constructor (regions, { slide, token, me, toast, resync, extraPointers }) {
    super()
    // A host may add pointers to draw (a session presenter's, from the session room):
    // () => [{user, cursor, label}]; the same user's slide-room cursor is then not drawn twice.
    this.extraPointers = extraPointers || null
    this.regions = regions
    this.slide = slide
    this.token = token
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

    this.room = new Room({ kind: 'slides', id: slide.id, token })
    this.doc = this.room.doc
    this.awareness = this.room.awareness
    this.store = new AnnotationStore(this.doc, { width: slide.width, height: slide.height, mpp: slide.mpp, me })

    this._buildDom()
    this._buildViewer()
    this.overlay = new Overlay(this)
    this.tools = new Tools(this)
    this.presence = new Presence({
      awareness: this.awareness,
      me,
      getViewport: () => this.getViewport(),
      applyViewport: (vp, first) => this.setViewport(vp, { immediately: first }),
    })
    this._wire()
    this.tools.setTool('select')
    this._renderConnection()
    this._renderParticipants()
    this._renderClasses()
    this._renderDetails()
    this._renderList()
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
      h('span.slide-title', { 'data-testid': 'slide-title', title: this.slide.id }, this.slide.title || this.slide.id),
      this.canEdit ? h('div.btn-group', null, this.el.undo, this.el.redo) : h('span.badge.readonly', { 'data-testid': 'readonly-badge', title: 'Your role can watch and follow, not edit' }, 'Read-only'),
      this.el.connection,
      h('button.icon-btn.help-btn', { 'data-testid': 'help', title: 'Keyboard shortcuts (?)', 'aria-label': 'Keyboard shortcuts', 'aria-expanded': 'false', on: { click: () => this.toggleHelp() } }, '?'),
      h('span.me', { 'data-testid': 'me', title: `${me.name} (${me.site}, ${me.role})` },
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
    const keys = [
      ...TOOLS.filter((t) => !t.edit || this.canEdit).map((t) => [t.key.toUpperCase(), t.label]),
      ...(this.canEdit
        ? [['Del', 'Delete the selected annotation'], ['Ctrl+Z', 'Undo my last change'], ['Ctrl+Shift+Z', 'Redo'],
            ['Enter', 'Finish a polygon (or double click)'], ['Backspace', 'Remove the last polygon point']]
        : []),
      ['Esc', 'Cancel drawing, deselect, stop following'], ['H', 'Hide/show annotations'],
      ['[ ]', 'Rotate 90°'], ['+ − 0', 'Zoom in, out, whole slide (when the image has focus)'], ['?', 'This help'],
    ]
    this.el.help = h('div.help.viewer-ui', { 'data-testid': 'help-panel', role: 'dialog', 'aria-label': 'Keyboard shortcuts', hidden: true },
      h('h2', null, 'Keyboard shortcuts'),
      h('dl', null, keys.map(([k, v]) => [h('dt', null, h('kbd', null, k)), h('dd', null, v)])))
    main.append(this.el.viewer, this.el.scalebar, this.el.coords, this.el.tooltip, this.el.followBanner, this.el.help)

    this.el.participants = h('ul.participants', { 'data-testid': 'participants', 'aria-label': 'Participants' })
    this.el.participantsCount = h('span.count')
    this.el.classes = h('div.classes', { 'data-testid': 'classes' })
    this.el.details = h('div.details', { 'data-testid': 'selection' })
    this.el.list = h('ul.ann-list', { 'data-testid': 'annotation-list' })
    this.el.listCount = h('span.count', { 'data-testid': 'annotation-count' })
    const section = (title, extra, body, opts = {}) => h('section.panel', { 'aria-label': title, 'data-testid': opts.testid },
      h('h2', null, title, extra), body)
    this.el.side = h('div.side-inner', null,
      section('Participants', this.el.participantsCount, this.el.participants, { testid: 'participants-panel' }),
      this.canEdit && section('Classification', null, this.el.classes, { testid: 'classes-panel' }),
      section('Selected annotation', null, this.el.details, { testid: 'details-panel' }),
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
    this.viewer.addHandler('open', () => {
      this.ready = true
      this._navCanvas()
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
    on(v, 'canvas-exit', () => { this.presence.publishCursor(null); this.emit('pointer', null); this.el.coords.textContent = ''; this.el.tooltip.hidden = true; this._setHover(null) })

    on(this.room, 'state', () => this._renderConnection())
    on(this.room, 'denied', (reason) => this._denied(reason))
    on(this.room, 'synced', () => { this.overlay.requestDraw(); this._renderList() })

    on(this.store, 'change', (ids) => {
      this.overlay.requestDraw()
      if (this.selectedId && ids.has(this.selectedId)) this._renderDetails()
      if (this.hoverId && ids.has(this.hoverId) && !this.store.get(this.hoverId)) this._setHover(null)
      this._renderListSoon()
    })
    const undoChanged = () => this._renderUndo()
    on(this.store.undo, 'stack-item-added', undoChanged)
    on(this.store.undo, 'stack-item-popped', undoChanged)
    on(this.store.undo, 'stack-cleared', undoChanged)
    this._renderUndo()

    on(this.presence, 'participants', () => this._renderParticipants())
    on(this.presence, 'remote-change', () => { this.overlay.requestDraw(); this._drawNavigatorSoon() })
    on(this.presence, 'follow', () => { this._renderParticipants(); this._renderFollowBanner() })
    on(this.presence, 'notice', (m) => this.toast(m))
    on(this.tools, 'tool', (id) => {
      for (const [tid, b] of this.el.toolButtons) {
        b.classList.toggle('active', tid === id)
        b.setAttribute('aria-pressed', String(tid === id))
      }
      this.el.tooltip.hidden = true
      this._setHover(null)
    })

    this._onKey = (e) => this.onKey(e)
    window.addEventListener('keydown', this._onKey, true)
    this._cleanup.push(() => window.removeEventListener('keydown', this._onKey, true))
  }

  destroy () {
    clearTimeout(this._resyncTimer)
    for (const fn of this._cleanup.splice(0)) { try { fn() } catch {} }
    this.presence.destroy()
    this.tools.destroy()
    this.overlay.destroy()
    this.store.destroy()
    this.room.destroy()
    this.viewer.destroy()
    for (const r of Object.values(this.regions)) if (r) clear(r)
  }

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
    if (this.presence.following != null) {
      this.presence.unfollow()
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

  hitTest (s) {
    if (!this.ready) return null
    const T = this.overlay.T || this.overlay.computeTransform()
    if (!T) return null
    const p = this.overlay.screenToImage(s[0], s[1], T)
    const tol = 6 / T.scale
    let best = null; let bestRank = 0; let bestArea = Infinity
    this.store.query([p[0] - tol, p[1] - tol, p[0] + tol, p[1] + tol], (e) => {
      const b = e.bbox
      if (!e.geometry || !b || p[0] < b[0] - tol || p[0] > b[2] + tol || p[1] < b[1] - tol || p[1] > b[3] + tol) return
      const r = geo.hit(e.geometry, p[0], p[1], tol)
      if (!r) return
      const a = (b[2] - b[0]) * (b[3] - b[1])
      if (r > bestRank || (r === bestRank && a < bestArea)) { best = e; bestRank = r; bestArea = a }
    })
    return best
  }

  hoverAt (s) {
    this._hoverPos = s
    if (this._hoverRaf) return
    this._hoverRaf = requestAnimationFrame(() => {
      this._hoverRaf = 0
      const pos = this._hoverPos
      const e = this.hitTest(pos)
      this._setHover(e ? e.id : null)
      const tip = this.el.tooltip
      if (!e) { tip.hidden = true; return }
      clear(tip)
      const m = this.store.measurements(e)
      add(tip,
        h('div.tip-title', null, h('span.swatch', { style: { background: rgb(e.color) } }), e.name || (e.classification && e.classification.name) || 'Unclassified'),
        this.measureText(m) && h('div', null, this.measureText(m)),
        e.locked && h('div.muted', null, 'Locked'),
        e.status && e.status !== 'ok' && h('div', { class: `status-${e.status}` }, `${e.status === 'invalid' ? 'Invalid' : 'Repaired'} by the server: ${e.problem || 'no reason given'}`))
      tip.hidden = false
      const W = this.el.viewer.clientWidth
      tip.style.left = Math.min(pos[0] + 16, W - 260) + 'px'
      tip.style.top = (pos[1] + 18) + 'px'
    })
  }

  _setHover (id) {
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
    this._renderDetails(true)
    this._markListSelection()
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
    this._renderClasses()
  }

  // ---- keyboard -----------------------------------------------------------------------------------

  onKey (e) {
    const t = e.target
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) {
      if (e.key === 'Escape') t.blur()
      return
    }
    const mod = e.ctrlKey || e.metaKey
    const k = e.key
    let handled = true
    if (mod && (k === 'z' || k === 'Z')) {
      if (e.shiftKey) this.redo(); else this.undo()
    } else if (mod && (k === 'y' || k === 'Y')) {
      this.redo()
    } else if (mod || e.altKey) {
      handled = false
    } else if (k === '?') {
      this.toggleHelp()
    } else if (k === 'Escape') {
      if (!this.el.help.hidden) this.toggleHelp(false)
      else if (!this.tools.cancelDraft()) {
        if (this.selectedId) this.select(null)
        else if (this.presence.following != null) this.presence.unfollow()
        else if (this.tools.tool !== 'select') this.tools.setTool('select')
      }
    } else if (k === 'Enter' && this.tools.draft && this.tools.draft.kind === 'polygon') {
      this.tools.finishPolygon()
    } else if (k === 'Backspace' && this.tools.removeLastVertex()) {
      // removed the last polygon vertex
    } else if (k === 'Delete' || k === 'Backspace') {
      this.deleteSelected()
    } else if (k === '[' || k === ']') {
      this.rotateBy(k === '[' ? -90 : 90); this.userNavigated()
    } else if (k.length === 1 && TOOLS.some((x) => x.key === k.toLowerCase())) {
      // Tool keys (also keeps OpenSeadragon's own r/f = rotate/flip from firing).
      this.tools.setTool(TOOLS.find((x) => x.key === k.toLowerCase()).id)
    } else if (k === 'h' || k === 'H') {
      this.showAnnotations = !this.showAnnotations
      this.toast(this.showAnnotations ? 'Annotations shown' : 'Annotations hidden (H to show)')
      this.overlay.requestDraw()
    } else {
      handled = false
    }
    if (handled) {
      e.preventDefault()
      e.stopPropagation()
    }
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

  _renderFollowBanner () {
    const b = this.el.followBanner
    const id = this.presence.following
    clear(b)
    if (id == null) { b.hidden = true; return }
    b.hidden = false
    b.append(h('span', null, `Following ${this.presence.nameOf(id) || 'participant'}`),
      h('button.link-btn', { 'data-testid': 'stop-following', on: { click: () => this.presence.unfollow() } }, 'Stop (Esc)'))
  }

  // ---- rendering: side panels -------------------------------------------------------------------

  _renderParticipants () {
    const list = this.presence.participants()
    const ul = clear(this.el.participants)
    this.el.participantsCount.textContent = String(list.length)
    const me = this.awareness.clientID
    const followers = new Map()
    for (const p of list) if (p.following != null) followers.set(p.following, (followers.get(p.following) || []).concat(p.user.name))
    for (const p of list) {
      const u = p.user
      const isFollowed = this.presence.following === p.clientId
      const followingName = p.following != null ? (p.following === me ? 'you' : this.presence.nameOf(p.following)) : null
      ul.append(h('li.participant', {
        'data-testid': 'participant',
        'data-client-id': String(p.clientId),
        'data-user-id': u.id,
        'data-name': u.name,
        'data-site': u.site,
        'data-role': u.role,
        'data-following': p.following != null ? String(p.following) : '',
        class: p.isMe ? 'is-me' : '',
      },
      h('span.dot', { style: { background: u.color || '#888' }, title: u.color }),
      h('div.p-main', null,
        h('div.p-name', null, u.name, p.isMe && h('span.muted', null, ' (you)')),
        h('div.p-meta', null, h('span', null, u.site || '—'), ' · ', h('span.role', { 'data-testid': 'participant-role' }, u.role),
          followingName && h('span.following', { 'data-testid': 'participant-following' }, ` · following ${followingName}`),
          followers.get(p.clientId) && h('span.followed', null, ` · followed by ${followers.get(p.clientId).join(', ')}`))),
      !p.isMe && h('button.follow-btn', {
        'data-testid': 'follow-button',
        'aria-pressed': String(isFollowed),
        class: isFollowed ? 'active' : '',
        title: isFollowed ? `Stop following ${u.name}` : `Follow ${u.name}'s view`,
        on: { click: () => (isFollowed ? this.presence.unfollow() : this.presence.follow(p.clientId)) },
      }, isFollowed ? 'Following' : 'Follow')))
    }
    this._renderFollowBanner()
  }

  _renderClasses () {
    if (!this.canEdit) return
    const box = clear(this.el.classes)
    const cur = this.currentClass ? this.currentClass.name : null
    const chip = (cls) => h('button.class-chip', {
      'data-testid': `class-${cls ? cls.name : 'none'}`,
      'aria-pressed': String((cls ? cls.name : null) === cur),
      class: (cls ? cls.name : null) === cur ? 'active' : '',
      title: cls ? `${cls.name}: for new shapes and the selected one` : 'No classification',
      on: { click: () => this.setClass(cls) },
    }, h('span.swatch', { style: { background: rgb(cls ? cls.color : UNCLASSIFIED_COLOR), borderStyle: cls ? 'solid' : 'dashed' } }), cls ? cls.name : 'Unclassified')
    box.append(chip(null), ...CLASSES.map(chip))
    box.append(h('p.hint', null, 'Applies to new shapes and to the selected one.'))
  }

  _renderDetails (selectionChanged = false) {
    const box = this.el.details
    const e = this.selectedId && this.store.get(this.selectedId)
    if (!e) {
      clear(box)
      box.append(h('p.muted.empty', null, this.canEdit
        ? 'Nothing selected. Draw with the tools on the left (P, R, G, F, L) or click a shape (V).'
        : 'Nothing selected. Click a shape to see its details and comments.'))
      box.dataset.id = ''
      return
    }
    const editable = this.canEdit && !e.locked
    if (selectionChanged || box.dataset.id !== e.id || !this._details) {
      clear(box)
      box.dataset.id = e.id
      const d = this._details = {}
      d.swatch = h('span.swatch.big')
      d.cls = h('span.cls', { 'data-testid': 'selection-class' })
      d.name = h('input.name-input', {
        type: 'text', 'data-testid': 'selection-name', placeholder: 'Name', 'aria-label': 'Annotation name', maxlength: '200',
        on: {
          change: () => { const cur = this.store.get(box.dataset.id); if (cur && cur.name !== d.name.value) this.store.update(cur.id, { name: d.name.value }) },
          keydown: (ev) => { if (ev.key === 'Enter') d.name.blur() },
        },
      })
      d.lock = h('input', {
        type: 'checkbox', 'data-testid': 'selection-lock', 'aria-label': 'Locked',
        on: { change: () => this.store.update(box.dataset.id, { locked: d.lock.checked }) },
      })
      d.status = h('div.status', { 'data-testid': 'selection-status' })
      d.measures = h('dl.measures', { 'data-testid': 'selection-measurements' })
      d.meta = h('div.meta.muted')
      d.comments = h('ul.comments', { 'data-testid': 'comments' })
      d.text = h('textarea', { rows: '2', placeholder: 'Add a comment…', 'aria-label': 'Comment', 'data-testid': 'comment-input', maxlength: '4000' })
      const send = () => {
        const text = d.text.value.trim()
        if (!text) return
        this.store.addComment(box.dataset.id, text)
        d.text.value = ''
      }
      d.text.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey || !ev.shiftKey)) { ev.preventDefault(); send() } })
      add(box,
        h('div.sel-head', null, d.swatch, d.cls),
        d.name,
        h('div.row', null,
          h('label.check', null, d.lock, ' Locked'),
          h('button.link-btn', { on: { click: () => this.reveal(box.dataset.id) } }, 'Show'),
          this.canEdit && h('button.danger-btn', { 'data-testid': 'selection-delete', on: { click: () => this.deleteSelected() } }, 'Delete')),
        d.status, d.measures, d.meta,
        h('h3', null, 'Comments'), d.comments,
        this.canEdit && h('div.comment-form', null, d.text, h('button.primary', { 'data-testid': 'comment-send', on: { click: send } }, 'Send')))
    }
    const d = this._details
    d.swatch.style.background = rgb(e.color)
    d.cls.textContent = e.classification ? e.classification.name : 'Unclassified'
    if (document.activeElement !== d.name) d.name.value = e.name || ''
    d.name.disabled = !editable
    d.lock.checked = e.locked
    d.lock.disabled = !this.canEdit
    clear(d.status)
    d.status.className = 'status' + (e.status && e.status !== 'ok' ? ` status-${e.status}` : '')
    d.status.dataset.status = e.status || ''
    if (e.status === 'repaired') d.status.append(h('strong', null, 'Repaired by the server'), h('div', null, e.problem || 'The outline was not valid and was corrected.'))
    else if (e.status === 'invalid') d.status.append(h('strong', null, 'Invalid geometry'), h('div', null, e.problem || 'The server could not use this shape.'))
    const m = this.store.measurements(e)
    clear(d.measures)
    const row = (k, v, id) => [h('dt', null, k), h('dd', { 'data-testid': id }, v)]
    d.measures.append(h('dt', null, 'Type'), h('dd', null, e.geometry ? e.geometry.type : '—'))
    if (Number.isFinite(m.area_um2)) d.measures.append(...row('Area', geo.formatArea(m.area_um2), 'measure-area'))
    if (Number.isFinite(m.perimeter_um)) d.measures.append(...row('Perimeter', geo.formatLength(m.perimeter_um), 'measure-perimeter'))
    if (Number.isFinite(m.length_um)) d.measures.append(...row('Length', geo.formatLength(m.length_um), 'measure-length'))
    if (!this.slide.mpp && e.geometry) d.measures.append(...row('Area', `${Math.round(geo.area(e.geometry))} px²`, 'measure-area-px'))
    d.measures.dataset.source = m.source
    d.measures.title = m.source === 'server' ? 'Measured by the server' : 'Measured in the browser (the server has not measured it yet)'
    d.meta.textContent = `by ${this._nameForUser(e.author)}${e.created ? ', ' + relTime(e.created) : ''}${e.updated && e.updated !== e.created ? ` · edited ${relTime(e.updated)}` : ''}`
    clear(d.comments)
    if (!e.comments.length) d.comments.append(h('li.muted', null, 'No comments yet.'))
    for (const c of e.comments) {
      d.comments.append(h('li.comment', { 'data-testid': 'comment' },
        h('div.c-head', null, h('strong', null, this._nameForUser(c.author)), h('span.muted', null, ' · ' + relTime(c.created))),
        h('div.c-text', null, String(c.text ?? ''))))
    }
  }

  _nameForUser (id) {
    if (!id) return 'unknown'
    if (id === this.me.id) return `${this.me.name} (you)`
    for (const p of this.presence.participants()) if (p.user.id === id) return p.user.name
    return id
  }

  _renderListSoon () {
    if (!this._listThrottle) this._listThrottle = throttle(() => this._renderList(), 300)
    this._listThrottle()
  }

  _renderList () {
    const ul = clear(this.el.list)
    const n = this.store.size
    this.el.listCount.textContent = String(n)
    if (!n) { ul.append(h('li.muted', null, 'No annotations yet.')); return }
    // Most recently changed first; the list is capped, the canvas shows them all.
    const all = [...this.store.entries.values()]
    all.sort((a, b) => (b.updated || b.created) - (a.updated || a.created))
    for (const e of all.slice(0, 40)) {
      const m = this.store.measurements(e)
      ul.append(h('li.ann', {
        'data-testid': 'annotation-item', 'data-id': e.id, tabindex: '0',
        class: e.id === this.selectedId ? 'selected' : '',
        on: {
          click: () => { this.select(e.id); this.reveal(e.id) },
          keydown: (ev) => { if (ev.key === 'Enter') { this.select(e.id); this.reveal(e.id) } },
        },
      },
      h('span.swatch', { style: { background: rgb(e.color) } }),
      h('span.a-name', null, e.name || (e.classification ? e.classification.name : 'Unclassified')),
      e.locked && h('span.lock-icon', { title: 'Locked', html: ICONS.lock }),
      e.status && e.status !== 'ok' && h('span', { class: `flag status-${e.status}`, title: e.problem || e.status }, e.status === 'invalid' ? '!' : '~'),
      h('span.a-measure.muted', null, this.measureText(m).split(' · ')[0] || (e.geometry ? e.geometry.type : ''))))
    }
    if (n > 40) ul.append(h('li.muted.more', null, `…and ${n - 40} more on the slide`))
  }

  _markListSelection () {
    for (const li of this.el.list.querySelectorAll('li.ann')) li.classList.toggle('selected', li.dataset.id === this.selectedId)
  }

  // ---- navigator (minimap): everyone's viewport -------------------------------------------------

  _navCanvas () {
    const nav = this.viewer.navigator
    if (!nav || this._nav) return
    const c = document.createElement('canvas')
    c.className = 'nav-overlay'
    c.setAttribute('data-testid', 'navigator-overlay')
    nav.element.appendChild(c)
    this._nav = { canvas: c, ctx: c.getContext('2d') }
    const redraw = () => this._drawNavigator()
    nav.addHandler('update-viewport', redraw)
    nav.addHandler('resize', redraw)
    this._cleanup.push(() => { nav.removeHandler('update-viewport', redraw); nav.removeHandler('resize', redraw) })
  }

  _drawNavigatorSoon () {
    if (this._navRaf) return
    this._navRaf = requestAnimationFrame(() => { this._navRaf = 0; this._drawNavigator() })
  }

  _drawNavigator () {
    const nav = this.viewer.navigator
    const item = this.item
    if (!this._nav || !nav || !item) return
    const { canvas, ctx } = this._nav
    const w = nav.element.clientWidth; const hgt = nav.element.clientHeight
    const dpr = window.devicePixelRatio || 1
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
      canvas.width = Math.round(w * dpr); canvas.height = Math.round(hgt * dpr)
      canvas.style.width = w + 'px'; canvas.style.height = hgt + 'px'
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
    ctx.clearRect(0, 0, w, hgt)
    for (const p of this.presence.remotes()) {
      if (!p.viewport) continue
      const pts = viewportCorners(p.viewport).map(([x, y]) => nav.viewport.pixelFromPoint(item.imageToViewportCoordinates(x, y, true), true))
      ctx.beginPath()
      pts.forEach((q, i) => (i ? ctx.lineTo(q.x, q.y) : ctx.moveTo(q.x, q.y)))
      ctx.closePath()
      ctx.lineWidth = 2
      ctx.strokeStyle = p.user.color || '#888'
      ctx.stroke()
      ctx.fillStyle = (p.user.color || '#888888') + '22'
      ctx.fill()
    }
  }

  onOverlayDrawn (T) {
    this._drawNavigator()
    this._updateScalebar(T)
  }

  _updateScalebar (T) {
    const mpp = this.slide.mpp
    const bar = this.el.scalebar
    if (!mpp || !T) { bar.hidden = true; return }
    const umPerPx = mpp / T.scale
    const target = 110 * umPerPx
    const pow = Math.pow(10, Math.floor(Math.log10(target)))
    const nice = [1, 2, 5, 10].map((k) => k * pow).filter((v) => v <= target).pop() || pow
    const px = nice / umPerPx
    const key = `${nice}|${Math.round(px)}`
    if (this._scaleKey === key) return
    this._scaleKey = key
    bar.hidden = false
    bar.firstChild.style.width = Math.round(px) + 'px'
    const mag = 10 / umPerPx
    bar.lastChild.textContent = `${geo.formatLength(nice)} · ≈${mag >= 10 ? Math.round(mag) : mag.toFixed(1)}×`
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
      following: this.presence.following,
      viewport: this.getViewport(),
      annotationCount: this.store.size,
      annotationIds: this.store.size <= 1000 ? [...this.store.entries.keys()] : null,
      participants: this.presence.participants().map((p) => ({ clientId: p.clientId, isMe: p.isMe, user: p.user, following: p.following, viewport: p.viewport, cursor: p.cursor })),
      render: (({ recent, ...rest }) => ({ ...rest, recentMs: recent.slice() }))(this.overlay.stats),
    }
  }
}

export { readableOn, colorOf }
