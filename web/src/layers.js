// Detection layers over the slide (docs/layers.md): the slide's layers, fetched for the viewport
// in the compact binary form (centroids at low zoom, outlines near full resolution) and drawn on
// a canvas of their own, under the annotations. The cells are rendered into a cached bitmap a
// little larger than the view (centroids written as pixels, outlines as one path per class);
// panning only moves that bitmap, as the annotation overlay does, so a frame costs one image copy
// whatever the number of cells.
import { apiRoot } from './api.js'
import { Emitter, rgb } from './dom.js'
import { cleared, reuseTransform } from './overlay.js'

// From this many screen px per slide px, outlines are fetched and drawn; below it, points.
const OUTLINE_SCALE = 0.25
// Fetch half a viewport more on each side, so that small pans need no new request.
const MARGIN = 0.5
// The cached bitmap covers this much of the view more on each side (panning past it re-renders).
const CACHE_MARGIN = 0.4
// Centroids are squares of this many CSS px.
const POINT_PX = 3

/** The binary answer of GET .../objects?format=binary, decoded (little-endian, no padding). */
export function decodeLayerBinary (buffer) {
  const dv = new DataView(buffer)
  const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3))
  if (magic !== 'CLY1') throw new Error('not a layer binary')
  const flags = dv.getUint8(4)
  const nclass = dv.getUint16(6, true)
  const n = dv.getUint32(8, true)
  let at = 12
  const classes = []
  const text = new TextDecoder()
  for (let i = 0; i < nclass; i++) {
    const color = [dv.getUint8(at), dv.getUint8(at + 1), dv.getUint8(at + 2)]
    const len = dv.getUint8(at + 3)
    classes.push({ name: text.decode(new Uint8Array(buffer, at + 4, len)), color })
    at += 4 + len
  }
  // Copied out: typed arrays need aligned offsets, the format has none.
  const ids = new Uint32Array(buffer.slice(at, at + 4 * n)); at += 4 * n
  const cls = new Uint16Array(buffer.slice(at, at + 2 * n)); at += 2 * n
  const xy = new Float32Array(buffer.slice(at, at + 8 * n)); at += 8 * n
  let outlines = null
  if (flags & 1) {
    const sizes = new Uint16Array(buffer.slice(at, at + 2 * n)); at += 2 * n
    let total = 0
    const starts = new Uint32Array(n + 1)
    for (let i = 0; i < n; i++) { starts[i] = total; total += sizes[i] }
    starts[n] = total
    outlines = { starts, coords: new Float32Array(buffer.slice(at, at + 8 * total)) }
  }
  return { classes, ids, cls, xy, outlines }
}

export class LayerView extends Emitter {
  /** @param {import('./slideview.js').SlideView} view */
  constructor (view) {
    super()
    this.view = view
    this.viewer = view.viewer
    this.layers = [] // [{id, name, count, classes: {name: n}, colors: {name: [r,g,b]}}]
    this.shown = new Map() // layer id -> on
    this.hidden = new Map() // layer id -> Set of hidden class names
    this.data = new Map() // layer id -> {box, detail, decoded}
    this.pending = new Map() // layer id -> the request under way {box, detail}
    this.stats = { drawn: {}, detail: null, requests: 0, renders: 0 }
    this.version = 0 // bumped whenever what is drawn changes (data, layers or classes shown)
    this.cache = null // {canvas, ctx, key, T, mx, my, image, blank}
    this.canvas = document.createElement('canvas')
    this.canvas.className = 'layers-canvas'
    this.canvas.setAttribute('aria-hidden', 'true')
    this.viewer.canvas.insertBefore(this.canvas, view.overlay.canvas)
    this.ctx = this.canvas.getContext('2d')
    this._raf = 0
    this._onUpdate = () => this.requestDraw()
    this._onSettle = () => { this.requestDraw(); this.fetchVisible() }
    this.viewer.addHandler('update-viewport', this._onUpdate)
    this.viewer.addHandler('resize', this._onSettle)
    this.viewer.addHandler('animation-finish', this._onSettle)
    this.viewer.addHandler('open', this._onSettle)
  }

  destroy () {
    cancelAnimationFrame(this._raf)
    this.viewer.removeHandler('update-viewport', this._onUpdate)
    this.viewer.removeHandler('resize', this._onSettle)
    this.viewer.removeHandler('animation-finish', this._onSettle)
    this.viewer.removeHandler('open', this._onSettle)
    this.canvas.remove()
  }

  async refresh () {
    const res = await this._get(`api/slides/${encodeURIComponent(this.view.slide.id)}/layers`)
    this.layers = await res.json()
    for (const l of this.layers) {
      if (!this.shown.has(l.id)) this.shown.set(l.id, true)
      if (!this.hidden.has(l.id)) this.hidden.set(l.id, new Set())
    }
    const ids = new Set(this.layers.map((l) => l.id))
    for (const id of [...this.data.keys()]) if (!ids.has(id)) this.data.delete(id)
    this.emit('layers')
    this.fetchVisible()
    this.changed()
  }

  layerName (id) {
    const l = this.layers.find((x) => x.id === id)
    return l ? l.name : null
  }

  colorOf (layerId, name) {
    const l = this.layers.find((x) => x.id === layerId)
    const c = l && l.colors && l.colors[name]
    return Array.isArray(c) ? c : [160, 160, 160]
  }

  setLayer (id, on) { this.shown.set(id, !!on); this.fetchVisible(); this.changed(); this.emit('layers') }

  setClass (id, name, on) {
    const hidden = this.hidden.get(id) || new Set()
    if (on) hidden.delete(name); else hidden.add(name)
    this.hidden.set(id, hidden)
    this.changed()
    this.emit('layers')
  }

  _get (path) {
    return fetch(apiRoot() + path, { headers: { Authorization: `Bearer ${this.view.token}` }, cache: 'no-store' })
      .then((res) => { if (!res.ok) throw new Error(`${res.status} ${res.statusText}`); return res })
  }

  /** What the current view wants: a slide-pixel box (with margin) and a level of detail. */
  _wanted () {
    const o = this.view.overlay
    const T = o.computeTransform()
    const el = this.viewer.container
    if (!T || !el.clientWidth) return null
    const b = o.visibleBox(T, el.clientWidth, el.clientHeight, 0)
    const mw = (b[2] - b[0]) * MARGIN; const mh = (b[3] - b[1]) * MARGIN
    return {
      visible: b,
      box: [b[0] - mw, b[1] - mh, b[2] + mw, b[3] + mh].map(Math.round),
      detail: T.scale >= OUTLINE_SCALE ? 'outlines' : 'points',
    }
  }

  fetchVisible () {
    const want = this._wanted()
    if (!want) return
    for (const l of this.layers) {
      if (!this.shown.get(l.id)) continue
      const have = this.data.get(l.id)
      if (have && have.detail === want.detail && contains(have.box, want.visible)) continue
      const going = this.pending.get(l.id)
      if (going && going.detail === want.detail && contains(going.box, want.visible)) continue
      this._fetch(l.id, want.box, want.detail)
    }
  }

  async _fetch (id, box, detail) {
    const ticket = { box, detail }
    this.pending.set(id, ticket)
    this.stats.requests++
    try {
      const q = `bbox=${box.join(',')}&format=binary&detail=${detail}`
      const res = await this._get(`api/slides/${encodeURIComponent(this.view.slide.id)}/layers/${encodeURIComponent(id)}/objects?${q}`)
      const decoded = decodeLayerBinary(await res.arrayBuffer())
      if (this.pending.get(id) !== ticket) return // a newer view asked meanwhile
      this.data.set(id, { box, detail, decoded })
      this.changed()
    } catch (e) {
      if (this.pending.get(id) === ticket) this.view.toast(`Cells of a layer could not be loaded: ${e.message}`, { level: 'error' })
    } finally {
      if (this.pending.get(id) === ticket) this.pending.delete(id)
    }
  }

  requestDraw () {
    if (this._raf) return
    this._raf = requestAnimationFrame(() => { this._raf = 0; this.draw() })
  }

  /** Something drawn changed: the cached bitmap is stale. */
  changed () { this.version++; this.requestDraw() }

  draw () {
    const el = this.viewer.container
    const w = el.clientWidth; const h = el.clientHeight
    const dpr = window.devicePixelRatio || 1
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr); this.canvas.height = Math.round(h * dpr)
      this.canvas.style.width = w + 'px'; this.canvas.style.height = h + 'px'
    }
    const ctx = this.ctx
    ctx.setTransform(1, 0, 0, 1, 0, 0)
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height)
    const T = this.view.overlay.computeTransform()
    if (!T || !w || !h) { this.stats.drawn = {}; return }
    const key = `${this.version}|${w}x${h}@${dpr}`
    const c = this.cache
    let R = null // cached bitmap -> screen
    if (c && c.key === key) R = reuseTransform(c, T, this.view.overlay.animating)
    if (!R) {
      this._render(T, w, h, dpr, key)
      R = { a: 1, b: 0, c: 0, d: 1, e: 0, f: 0 }
    }
    const cache = this.cache
    ctx.setTransform(dpr * R.a, dpr * R.b, dpr * R.c, dpr * R.d, dpr * R.e, dpr * R.f)
    ctx.translate(-cache.mx, -cache.my)
    ctx.scale(1 / dpr, 1 / dpr)
    ctx.drawImage(cache.canvas, 0, 0)
  }

  /** Renders every loaded cell near the view into the cached bitmap, for transform T. */
  _render (T, w, h, dpr, key) {
    this.stats.renders++
    const cache = this.cache = cleared(this.cache, { key, T, w, h, dpr, margin: CACHE_MARGIN },
      { willReadFrequently: false })
    const ctx = cache.ctx
    const { mx, my } = cache
    cache.blank = true
    const drawn = {}
    this.stats.drawn = drawn
    const overlay = this.view.overlay
    const vis = overlay.visibleBox(T, w, h, 8) // counted as drawn: the cells in view
    const near = overlay.visibleBox(T, w, h, Math.max(mx, my) + 24) // rendered: those of the bitmap
    for (const l of this.layers) {
      const d = this.data.get(l.id)
      if (!this.shown.get(l.id) || !d) continue
      const hidden = this.hidden.get(l.id) || new Set()
      const { classes, outlines } = d.decoded
      const outlineMode = outlines && T.scale >= OUTLINE_SCALE * 0.5
      this.stats.detail = outlineMode ? 'outlines' : 'points'
      const show = classes.map((c) => !hidden.has(c.name))
      const counts = outlineMode
        ? this._renderOutlines(ctx, T, dpr, mx, my, d.decoded, show, vis, near)
        : this._renderPoints(cache, T, dpr, mx, my, d.decoded, show, vis)
      cache.blank = false
      classes.forEach((c, k) => { if (counts[k]) drawn[c.name] = (drawn[c.name] || 0) + counts[k] })
    }
  }

  /** Outlines: one path per class, stroked once. Returns the count in view per class. */
  _renderOutlines (ctx, T, dpr, mx, my, decoded, show, vis, near) {
    const { classes, cls, xy, outlines } = decoded
    const counts = new Array(classes.length).fill(0)
    const paths = classes.map(() => new Path2D())
    const { starts, coords } = outlines
    for (let i = 0; i < cls.length; i++) {
      const k = cls[i]
      const x = xy[2 * i]; const y = xy[2 * i + 1]
      if (!show[k] || !inBox(near, x, y)) continue
      const s = starts[i]; const e = starts[i + 1]
      if (e - s < 2) continue
      const path = paths[k]
      path.moveTo(coords[2 * s], coords[2 * s + 1])
      for (let j = s + 1; j < e; j++) path.lineTo(coords[2 * j], coords[2 * j + 1])
      path.closePath()
      if (inBox(vis, x, y)) counts[k]++
    }
    ctx.setTransform(dpr * T.a, dpr * T.b, dpr * T.c, dpr * T.d, dpr * (T.e + mx), dpr * (T.f + my))
    ctx.lineWidth = 1 / (dpr * T.scale) // one device px: a hairline, which software rendering strokes far faster
    classes.forEach((c, k) => {
      if (!show[k]) return
      ctx.strokeStyle = rgb(c.color)
      ctx.stroke(paths[k])
    })
    return counts
  }

  /** Centroids: squares of POINT_PX written straight into the bitmap's pixels (a million
   * fillRect calls would take a second). Returns the count in view per class. */
  _renderPoints (cache, T, dpr, mx, my, decoded, show, vis) {
    const { classes, cls, xy } = decoded
    const W = cache.canvas.width; const H = cache.canvas.height
    let image = cache.image
    if (cache.blank && image && image.width === W && image.height === H) {
      new Uint32Array(image.data.buffer).fill(0)
    } else {
      // The first layer drawn starts from a blank image (kept between renders); another one
      // from what is there already.
      image = cache.blank ? new ImageData(W, H) : cache.ctx.getImageData(0, 0, W, H)
      if (cache.blank) cache.image = image
    }
    const px = new Uint32Array(image.data.buffer)
    const counts = new Array(classes.length).fill(0)
    const colors = new Uint32Array(classes.length)
    classes.forEach((c, k) => {
      const [r, g, b] = c.color
      colors[k] = (show[k] ? (255 << 24) | (b << 16) | (g << 8) | r : 0) >>> 0 // RGBA bytes, little-endian
    })
    const size = Math.max(1, Math.round(POINT_PX * dpr))
    const half = size / 2
    const A = dpr * T.a; const B = dpr * T.b; const C = dpr * T.c; const D = dpr * T.d
    const E = dpr * (T.e + mx) - half; const F = dpr * (T.f + my) - half
    const [v0, v1, v2, v3] = vis
    for (let i = 0; i < cls.length; i++) {
      const k = cls[i]
      const color = colors[k]
      if (!color) continue
      const x = xy[2 * i]; const y = xy[2 * i + 1]
      const left = Math.round(A * x + C * y + E); const top = Math.round(B * x + D * y + F)
      if (left >= W || top >= H || left + size <= 0 || top + size <= 0) continue
      const x0 = left < 0 ? 0 : left; const x1 = left + size > W ? W : left + size
      const y1 = top + size > H ? H : top + size
      for (let row = top < 0 ? 0 : top; row < y1; row++) px.fill(color, row * W + x0, row * W + x1)
      if (x >= v0 && y >= v1 && x <= v2 && y <= v3) counts[k]++
    }
    cache.ctx.putImageData(image, 0, 0)
    return counts
  }

  state () {
    return {
      layers: this.layers.map((l) => ({ id: l.id, name: l.name, count: l.count, shown: !!this.shown.get(l.id), hidden: [...(this.hidden.get(l.id) || [])] })),
      drawn: { ...this.stats.drawn },
      detail: this.stats.detail,
      loaded: [...this.data.keys()],
      requests: this.stats.requests,
    }
  }
}

function contains (outer, inner) {
  return outer[0] <= inner[0] && outer[1] <= inner[1] && outer[2] >= inner[2] && outer[3] >= inner[3]
}

function inBox (b, x, y) { return x >= b[0] && y >= b[1] && x <= b[2] && y <= b[3] }
