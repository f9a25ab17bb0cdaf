// Canvas overlay over OpenSeadragon: annotations (culled with the grid index, cached Path2D in
// slide pixels, drawn through one affine transform), drafts, and other people's presence.
import * as geo from './geometry.js'
import { rgb } from './dom.js'

const TINY = 4 // shapes smaller than this on screen (px) are drawn as a batched square

export class Overlay {
  /**
   * @param {import('./slideview.js').SlideView} view
   */
  constructor (view) {
    this.view = view
    this.viewer = view.viewer
    this.canvas = document.createElement('canvas')
    this.canvas.className = 'overlay-canvas'
    this.canvas.setAttribute('aria-hidden', 'true')
    this.viewer.canvas.appendChild(this.canvas)
    this.ctx = this.canvas.getContext('2d')
    this.T = null
    this._raf = 0
    this.stats = { frames: 0, lastMs: 0, maxMs: 0, drawn: 0, firstDrawAt: null, recent: [], baseRenders: 0, baseMs: 0 }
    this.cache = null
    this.animating = false
    this._onUpdate = () => this.draw()
    this._onAnimStart = () => { this.animating = true }
    this._onAnimEnd = () => { this.animating = false; this.requestDraw() }
    this.viewer.addHandler('update-viewport', this._onUpdate)
    this.viewer.addHandler('resize', this._onUpdate)
    this.viewer.addHandler('animation-start', this._onAnimStart)
    this.viewer.addHandler('animation-finish', this._onAnimEnd)
  }

  destroy () {
    cancelAnimationFrame(this._raf)
    this.viewer.removeHandler('update-viewport', this._onUpdate)
    this.viewer.removeHandler('resize', this._onUpdate)
    this.viewer.removeHandler('animation-start', this._onAnimStart)
    this.viewer.removeHandler('animation-finish', this._onAnimEnd)
    this.canvas.remove()
    this.cache = null
  }

  requestDraw () {
    if (this._raf) return
    this._raf = requestAnimationFrame(() => { this._raf = 0; this.draw() })
  }

  get item () { return this.viewer.world.getItemCount() ? this.viewer.world.getItemAt(0) : null }

  /** The image -> viewer-element affine map for the current (animated) viewport. */
  computeTransform () {
    const item = this.item
    if (!item) return null
    const vp = this.viewer.viewport
    const S = item.source.dimensions.x || 1
    const px = (x, y) => vp.pixelFromPoint(item.imageToViewportCoordinates(x, y, true), true)
    const o = px(0, 0); const ex = px(S, 0); const ey = px(0, S)
    const a = (ex.x - o.x) / S; const b = (ex.y - o.y) / S
    const c = (ey.x - o.x) / S; const d = (ey.y - o.y) / S
    const det = a * d - b * c
    return { a, b, c, d, e: o.x, f: o.y, scale: Math.hypot(a, b), det }
  }

  imageToScreen (x, y, T = this.T || this.computeTransform()) {
    if (!T) return [0, 0]
    return [T.a * x + T.c * y + T.e, T.b * x + T.d * y + T.f]
  }

  screenToImage (sx, sy, T = this.T || this.computeTransform()) {
    if (!T) return [0, 0]
    const x = sx - T.e; const y = sy - T.f
    return [(T.d * x - T.c * y) / T.det, (-T.b * x + T.a * y) / T.det]
  }

  /** Slide-pixel box covering the visible area (rotation included), with a margin in screen px. */
  visibleBox (T, w, h, margin = 24) {
    const pts = [[-margin, -margin], [w + margin, -margin], [w + margin, h + margin], [-margin, h + margin]]
      .map(([x, y]) => this.screenToImage(x, y, T))
    const xs = pts.map((p) => p[0]); const ys = pts.map((p) => p[1])
    return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)]
  }

  _resize () {
    const el = this.viewer.container
    const w = el.clientWidth; const h = el.clientHeight
    const dpr = window.devicePixelRatio || 1
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr)
      this.canvas.height = Math.round(h * dpr)
      this.canvas.style.width = w + 'px'
      this.canvas.style.height = h + 'px'
    }
    return { w, h, dpr }
  }

  draw () {
    const t0 = performance.now()
    const { w, h, dpr } = this._resize()
    const ctx = this.ctx
    ctx.setTransform(1, 0, 0, 1, 0, 0)
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height)
    const T = this.computeTransform()
    this.T = T
    if (!T || !w || !h) return
    const view = this.view
    const store = view.store

    // 1. All shapes: a cached bitmap (re-rendered only when data or zoom/rotation settle changes;
    //    panning just moves it), so 10,000 shapes cost one image copy per frame.
    let rendered = false
    if (store && view.showAnnotations) rendered = this._drawBase(T, w, h, dpr)

    // 2. Per-frame layer: selection, hover, the shape being moved, drafts, other people.
    const scale = T.scale
    const moving = view.tools?.moving
    const selected = view.selectedId ? store.get(view.selectedId) : null
    const hover = view.hoverId && view.hoverId !== view.selectedId ? store.get(view.hoverId) : null
    ctx.setTransform(dpr * T.a, dpr * T.b, dpr * T.c, dpr * T.d, dpr * T.e, dpr * T.f)
    ctx.lineJoin = 'round'
    ctx.lineCap = 'round'
    const emphasize = (e, fillAlpha, width, dx = 0, dy = 0) => {
      if (!e || !e.geometry) return
      if (geo.isPuntal(e.geometry)) return
      if (!e.path) e.path = geo.toPath(e.geometry)
      ctx.save()
      if (dx || dy) ctx.translate(dx, dy)
      if (geo.isAreal(e.geometry)) {
        ctx.fillStyle = rgb(e.color, fillAlpha)
        ctx.fill(e.path, 'evenodd')
      }
      ctx.strokeStyle = 'rgba(255,255,255,0.9)'
      ctx.lineWidth = (width + 2.5) / scale
      ctx.stroke(e.path)
      ctx.strokeStyle = rgb(e.color)
      ctx.lineWidth = width / scale
      if (e.status === 'invalid') ctx.setLineDash([2 / scale, 4 / scale])
      else if (e.status === 'repaired') ctx.setLineDash([9 / scale, 5 / scale])
      ctx.stroke(e.path)
      ctx.restore()
    }
    if (view.showAnnotations) {
      if (hover) emphasize(hover, 0.12, 2.2)
      if (selected && !(moving && moving.id === selected.id)) emphasize(selected, 0.22, 2.5)
    }
    const movingEntry = moving ? store.get(moving.id) : null
    if (movingEntry) emphasize(movingEntry, 0.25, 2.5, moving.dx, moving.dy)

    ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
    if (view.showAnnotations) {
      for (const e of [hover, selected]) if (e && e.geometry && geo.isPuntal(e.geometry)) this._drawPoints(ctx, T, e, 0, 0, true)
    }
    if (movingEntry && geo.isPuntal(movingEntry.geometry)) this._drawPoints(ctx, T, movingEntry, moving.dx, moving.dy, true)
    if (selected && view.showAnnotations && selected.bbox) this._measureLabel(ctx, selected, T)
    this._drawDraft(ctx, T)
    this._drawPresence(ctx, T, w, h)
    this._drawExtraPointers(ctx, T, w, h)

    const ms = performance.now() - t0
    const s = this.stats
    s.frames++
    s.lastMs = ms
    s.maxMs = Math.max(s.maxMs, ms)
    if (rendered) { s.baseRenders++; s.lastBaseMs = ms }
    if (s.firstDrawAt === null && store && store.size) s.firstDrawAt = performance.now()
    s.recent.push(ms)
    if (s.recent.length > 120) s.recent.shift()
    this.view.onOverlayDrawn?.(T)
  }

  /** Draws the cached shape layer, re-rendering it when needed. Returns true if re-rendered. */
  _drawBase (T, w, h, dpr) {
    const store = this.view.store
    const key = `${store.version}|${this.view.tools?.moving?.id || ''}|${w}x${h}@${dpr}`
    const c = this.cache
    let R = null
    if (c && c.key === key && !this._forceBase) R = reuseTransform(c, T, this.animating)
    let rendered = false
    if (!R) {
      this._renderBase(T, w, h, dpr, key)
      R = { a: 1, b: 0, c: 0, d: 1, e: 0, f: 0 }
      rendered = true
    }
    const cache = this.cache
    const ctx = this.ctx
    ctx.setTransform(dpr * R.a, dpr * R.b, dpr * R.c, dpr * R.d, dpr * R.e, dpr * R.f)
    ctx.translate(-cache.mx, -cache.my)
    ctx.scale(1 / dpr, 1 / dpr)
    ctx.drawImage(cache.canvas, 0, 0)
    return rendered
  }

  _renderBase (T, w, h, dpr, key) {
    const t0 = performance.now()
    this._forceBase = false
    const cache = this.cache = cleared(this.cache, { key, T, w, h, dpr, margin: 0.3 })
    const ctx = cache.ctx
    const { mx, my } = cache

    const view = this.view
    const store = view.store
    const scale = T.scale
    const box = this.visibleBox(T, w, h, Math.max(mx, my) + 24)
    const moving = view.tools?.moving
    const groups = new Map(); const normal = []; const tiny = new Map(); const pts = []; const flagged = []
    store.query(box, (e) => {
      const b = e.bbox
      if (!b || !e.geometry) return
      if (b[2] < box[0] || b[0] > box[2] || b[3] < box[1] || b[1] > box[3]) return
      if (moving && moving.id === e.id) return
      if (e.status === 'invalid' || e.status === 'repaired') flagged.push(e)
      if (geo.isPuntal(e.geometry)) { pts.push(e); return }
      if (Math.max(b[2] - b[0], b[3] - b[1]) * scale < TINY) {
        const k = rgb(e.color)
        let list = tiny.get(k)
        if (!list) { list = []; tiny.set(k, list) }
        list.push(e)
        return
      }
      const st = e._style || (e._style = rgb(e.color) + '|' + (e.status || ''))
      let g = groups.get(st)
      if (!g) { g = []; groups.set(st, g) }
      g.push(e)
      normal.push(e)
    })

    // Shapes in slide pixels through one transform, grouped by style (few state changes).
    ctx.setTransform(dpr * T.a, dpr * T.b, dpr * T.c, dpr * T.d, dpr * (T.e + mx), dpr * (T.f + my))
    ctx.lineJoin = 'miter'
    ctx.lineCap = 'butt'
    const lw = 1.6 / scale
    for (const list of groups.values()) {
      const e0 = list[0]
      ctx.strokeStyle = rgb(e0.color)
      ctx.lineWidth = lw
      if (e0.status === 'invalid') ctx.setLineDash([2 / scale, 4 / scale])
      else if (e0.status === 'repaired') ctx.setLineDash([9 / scale, 5 / scale])
      else ctx.setLineDash([])
      for (const e of list) ctx.stroke(e.path || (e.path = geo.toPath(e.geometry)))
    }
    ctx.setLineDash([])

    // Screen-space marks (shifted by the margin).
    ctx.setTransform(dpr, 0, 0, dpr, dpr * mx, dpr * my)
    for (const [color, list] of tiny) {
      ctx.fillStyle = color
      ctx.beginPath()
      for (const e of list) {
        const b = e.bbox
        const [sx, sy] = this.imageToScreen((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, T)
        ctx.rect(sx - 1.5, sy - 1.5, 3, 3)
      }
      ctx.fill()
    }
    for (const e of pts) this._drawPoints(ctx, T, e, 0, 0, false)
    // Server verdicts: a warning badge on repaired/invalid shapes.
    for (const e of flagged.slice(0, 500)) {
      const [sx, sy] = this.imageToScreen(e.bbox[0], e.bbox[1], T)
      this._badge(ctx, sx, sy, e.status === 'invalid' ? '#d93025' : '#e37400', e.status === 'invalid' ? '!' : '~')
    }
    // Names (or classes) of shapes large enough on screen.
    let labels = 0
    for (const e of normal) {
      if (labels > 150) break
      const label = e.name || (e.classification && e.classification.name) || ''
      const b = e.bbox
      if (!label || (b[2] - b[0]) * scale < 70) continue
      const [sx, sy] = this.imageToScreen(b[0], b[1], T)
      this._label(ctx, label, sx + 10, sy - 3, rgb(e.color))
      labels++
    }
    this.stats.drawn = normal.length + pts.length + [...tiny.values()].reduce((n, l) => n + l.length, 0)
    this.stats.baseMs = performance.now() - t0
  }

  _drawPoints (ctx, T, e, dx, dy, big) {
    for (const p of geo.points(e.geometry)) {
      const [sx, sy] = this.imageToScreen(p[0] + dx, p[1] + dy, T)
      ctx.beginPath()
      ctx.arc(sx, sy, big ? 6 : 4.5, 0, Math.PI * 2)
      ctx.fillStyle = rgb(e.color)
      ctx.fill()
      ctx.lineWidth = big ? 2.5 : 1.5
      ctx.strokeStyle = big ? '#fff' : 'rgba(0,0,0,0.6)'
      ctx.stroke()
    }
  }

  _badge (ctx, x, y, color, glyph) {
    ctx.beginPath()
    ctx.arc(x, y, 7, 0, Math.PI * 2)
    ctx.fillStyle = color
    ctx.fill()
    ctx.lineWidth = 1.5
    ctx.strokeStyle = '#fff'
    ctx.stroke()
    ctx.fillStyle = '#fff'
    ctx.font = 'bold 11px system-ui, sans-serif'
    ctx.textAlign = 'center'
    ctx.textBaseline = 'middle'
    ctx.fillText(glyph, x, y + 0.5)
    ctx.textAlign = 'start'
  }

  _label (ctx, text, x, y, color) {
    ctx.font = '12px system-ui, sans-serif'
    ctx.textBaseline = 'bottom'
    const w = ctx.measureText(text).width
    ctx.fillStyle = 'rgba(20,22,26,0.78)'
    ctx.fillRect(x - 3, y - 16, w + 6, 17)
    ctx.fillStyle = color || '#fff'
    ctx.fillRect(x - 3, y - 16, 2, 17)
    ctx.fillStyle = '#fff'
    ctx.fillText(text, x + 1, y - 1)
  }

  _measureLabel (ctx, e, T) {
    const m = this.view.store.measurements(e)
    const text = this.view.measureText(m)
    if (!text) return
    const b = e.bbox
    const [sx, sy] = this.imageToScreen((b[0] + b[2]) / 2, b[3], T)
    ctx.font = '12px system-ui, sans-serif'
    const w = ctx.measureText(text).width
    const x = Math.round(sx - w / 2); const y = Math.round(sy + 22)
    ctx.fillStyle = 'rgba(20,22,26,0.85)'
    ctx.fillRect(x - 5, y - 16, w + 10, 20)
    ctx.fillStyle = '#fff'
    ctx.textBaseline = 'bottom'
    ctx.fillText(text, x, y)
  }

  _drawDraft (ctx, T) {
    const d = this.view.tools?.draft
    if (!d || !d.points.length) return
    const color = rgb(this.view.currentColor())
    const sp = d.points.map((p) => this.imageToScreen(p[0], p[1], T))
    ctx.lineWidth = 2
    ctx.strokeStyle = color
    ctx.fillStyle = rgb(this.view.currentColor(), 0.15)
    ctx.beginPath()
    if (d.kind === 'rectangle' && sp.length === 2) {
      const [a, b] = d.points
      const c = [[a[0], a[1]], [b[0], a[1]], [b[0], b[1]], [a[0], b[1]]].map((p) => this.imageToScreen(p[0], p[1], T))
      c.forEach((p, i) => (i ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1])))
      ctx.closePath()
      ctx.fill()
    } else {
      sp.forEach((p, i) => (i ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1])))
      if (d.kind === 'polygon' && d.cursor) {
        const c = this.imageToScreen(d.cursor[0], d.cursor[1], T)
        ctx.lineTo(c[0], c[1])
      }
      if (d.kind === 'freehand' || d.kind === 'polygon') ctx.fill()
    }
    ctx.stroke()
    if (d.kind === 'polygon') {
      sp.forEach((p, i) => {
        ctx.beginPath()
        ctx.arc(p[0], p[1], i === 0 ? 5 : 3, 0, Math.PI * 2)
        ctx.fillStyle = i === 0 ? '#fff' : color
        ctx.fill()
        ctx.strokeStyle = color
        ctx.lineWidth = 1.5
        ctx.stroke()
      })
    }
    const g = this.view.tools.draftGeometry()
    if (g) {
      const text = this.view.measureText(geo.measure(g, this.view.slide.mpp))
      const last = sp[sp.length - 1]
      if (text) this._label(ctx, text, last[0] + 14, last[1] + 24, color)
    }
  }

  _drawPresence (ctx, T, w, h) {
    const presence = this.view.presence
    if (!presence) return
    const extra = (this.view.extraPointers && this.view.extraPointers()) || []
    const shownElsewhere = new Set(extra.map((e) => e.user && e.user.id))
    for (const p of presence.remotes()) {
      const color = p.user.color || '#888'
      if (p.viewport && this.view.showViewports) {
        const corners = viewportCorners(p.viewport).map((q) => this.imageToScreen(q[0], q[1], T))
        ctx.beginPath()
        corners.forEach((q, i) => (i ? ctx.lineTo(q[0], q[1]) : ctx.moveTo(q[0], q[1])))
        ctx.closePath()
        ctx.setLineDash([6, 4])
        ctx.lineWidth = 2
        ctx.strokeStyle = color
        ctx.stroke()
        ctx.setLineDash([])
        const tl = corners.reduce((m, q) => (q[1] < m[1] || (q[1] === m[1] && q[0] < m[0]) ? q : m), corners[0])
        if (tl[0] > -50 && tl[0] < w && tl[1] > -20 && tl[1] < h) this._tag(ctx, `${p.user.name} view`, tl[0] + 4, tl[1] + 4, color)
      }
      if (p.cursor && Number.isFinite(p.cursor.x) && Number.isFinite(p.cursor.y) && !shownElsewhere.has(p.user.id)) {
        const [x, y] = this.imageToScreen(p.cursor.x, p.cursor.y, T)
        if (x < -20 || y < -20 || x > w + 20 || y > h + 20) continue
        ctx.beginPath()
        ctx.moveTo(x, y)
        ctx.lineTo(x + 3.5, y + 15)
        ctx.lineTo(x + 7, y + 10)
        ctx.lineTo(x + 13, y + 10)
        ctx.closePath()
        ctx.fillStyle = color
        ctx.fill()
        ctx.lineWidth = 1.2
        ctx.strokeStyle = '#fff'
        ctx.stroke()
        this._tag(ctx, p.user.name + (p.user.site ? ` · ${p.user.site}` : ''), x + 12, y + 14, color)
      }
    }
  }

  /** A presenter's pointer: a ringed dot with an arrow, larger than a participant's cursor. */
  _drawExtraPointers (ctx, T, w, h) {
    const extra = (this.view.extraPointers && this.view.extraPointers()) || []
    for (const e of extra) {
      const c = e.cursor
      if (!c || !Number.isFinite(c.x) || !Number.isFinite(c.y)) continue
      const [x, y] = this.imageToScreen(c.x, c.y, T)
      if (x < -30 || y < -30 || x > w + 30 || y > h + 30) continue
      const color = (e.user && e.user.color) || '#ffd166'
      ctx.beginPath()
      ctx.arc(x, y, 11, 0, 2 * Math.PI)
      ctx.fillStyle = color + '55'
      ctx.fill()
      ctx.lineWidth = 2.5
      ctx.strokeStyle = '#fff'
      ctx.stroke()
      ctx.beginPath()
      ctx.moveTo(x, y)
      ctx.lineTo(x + 5, y + 21)
      ctx.lineTo(x + 10, y + 14)
      ctx.lineTo(x + 18, y + 14)
      ctx.closePath()
      ctx.fillStyle = color
      ctx.fill()
      ctx.lineWidth = 1.5
      ctx.strokeStyle = '#fff'
      ctx.stroke()
      this._tag(ctx, e.label || (e.user && e.user.name) || 'Presenter', x + 16, y + 20, color)
    }
  }

  _tag (ctx, text, x, y, color) {
    ctx.font = '600 11px system-ui, sans-serif'
    ctx.textBaseline = 'top'
    const tw = ctx.measureText(text).width
    ctx.fillStyle = color
    ctx.fillRect(x, y, tw + 8, 16)
    ctx.fillStyle = readableOn(color)
    ctx.fillText(text, x + 4, y + 2)
  }
}

export function invert (m) {
  const det = m.a * m.d - m.b * m.c
  return { a: m.d / det, b: -m.b / det, c: -m.c / det, d: m.a / det, e: (m.c * m.f - m.d * m.e) / det, f: (m.b * m.e - m.a * m.f) / det }
}

/**
 * How a cached bitmap rendered with transform cache.T (slide -> bitmap, with margins mx, my)
 * maps onto the screen under transform T, if it can still be shown: a pan within its margins, or
 * a zoom/rotation while `animating` (within 0.5x-2x); null when it must be rendered again.
 */
export function reuseTransform (cache, T, animating) {
  const R = compose(T, invert(cache.T))
  const linear = Math.abs(R.a - 1) + Math.abs(R.b) + Math.abs(R.c) + Math.abs(R.d - 1) < 1e-9
  if (linear) return Math.abs(R.e) > cache.mx - 2 || Math.abs(R.f) > cache.my - 2 ? null : R // panned past the margin
  const k = Math.hypot(R.a, R.b)
  return !animating || k < 0.5 || k > 2 ? null : R // zoom or rotation settled: sharp again
}

/**
 * A cache bitmap (reused when given) sized for a w x h view plus `margin` of it on each side,
 * cleared, its transform reset, and labelled with what it will show (key, T, margins mx, my).
 */
export function cleared (cache, { key, T, w, h, dpr, margin }, options = {}) {
  if (!cache) {
    const canvas = document.createElement('canvas')
    cache = { canvas, ctx: canvas.getContext('2d', options) }
  }
  const mx = Math.round(w * margin); const my = Math.round(h * margin)
  const W = Math.round((w + 2 * mx) * dpr); const H = Math.round((h + 2 * my) * dpr)
  if (cache.canvas.width !== W || cache.canvas.height !== H) { cache.canvas.width = W; cache.canvas.height = H }
  Object.assign(cache, { key, T, mx, my })
  cache.ctx.setTransform(1, 0, 0, 1, 0, 0)
  cache.ctx.clearRect(0, 0, W, H)
  return cache
}

/** m1 after m2 (both affine {a, b, c, d, e, f} as in canvas setTransform). */
export function compose (m1, m2) {
  return {
    a: m1.a * m2.a + m1.c * m2.b,
    b: m1.b * m2.a + m1.d * m2.b,
    c: m1.a * m2.c + m1.c * m2.d,
    d: m1.b * m2.c + m1.d * m2.d,
    e: m1.a * m2.e + m1.c * m2.f + m1.e,
    f: m1.b * m2.e + m1.d * m2.f + m1.f,
  }
}

/** The four corners (slide px) of a published viewport {x, y, width, height, rotation}. */
export function viewportCorners (v) {
  const cx = v.x + v.width / 2; const cy = v.y + v.height / 2
  const t = ((v.rotation || 0) * Math.PI) / 180
  const cos = Math.cos(t); const sin = Math.sin(t)
  return [[-1, -1], [1, -1], [1, 1], [-1, 1]].map(([sx, sy]) => {
    const x = (sx * v.width) / 2; const y = (sy * v.height) / 2
    // screen offset (x, y) seen through a view rotated by t maps back to slide offsets R(-t)(x, y)
    return [cx + x * cos + y * sin, cy - x * sin + y * cos]
  })
}

export function readableOn (hex) {
  const m = /^#?([0-9a-f]{6})$/i.exec(hex || '')
  if (!m) return '#fff'
  const n = parseInt(m[1], 16)
  const r = (n >> 16) & 255; const g = (n >> 8) & 255; const b = n & 255
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? '#111' : '#fff'
}
