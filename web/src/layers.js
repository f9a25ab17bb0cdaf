// Detection layers over the slide (docs/layers.md): the slide's layers, fetched for the viewport
// in the compact binary form (centroids at low zoom, outlines near full resolution) and drawn on
// a canvas of their own, under the annotations, for the viewport only.
import { apiRoot } from './api.js'
import { Emitter, rgb } from './dom.js'

// From this many screen px per slide px, outlines are fetched and drawn; below it, points.
const OUTLINE_SCALE = 0.25
// Fetch half a viewport more on each side, so that small pans need no new request.
const MARGIN = 0.5

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
    this.stats = { drawn: {}, detail: null, requests: 0 }
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
    this.requestDraw()
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

  setLayer (id, on) { this.shown.set(id, !!on); this.fetchVisible(); this.requestDraw(); this.emit('layers') }

  setClass (id, name, on) {
    const hidden = this.hidden.get(id) || new Set()
    if (on) hidden.delete(name); else hidden.add(name)
    this.hidden.set(id, hidden)
    this.requestDraw()
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
      this.requestDraw()
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
    const drawn = {}
    this.stats.drawn = drawn
    if (!T) return
    const vis = this.view.overlay.visibleBox(T, w, h, 8)
    for (const l of this.layers) {
      const d = this.data.get(l.id)
      if (!this.shown.get(l.id) || !d) continue
      const hidden = this.hidden.get(l.id) || new Set()
      const { classes, cls, xy, outlines } = d.decoded
      const outlineMode = outlines && T.scale >= OUTLINE_SCALE * 0.5
      this.stats.detail = outlineMode ? 'outlines' : 'points'
      classes.forEach((c, k) => {
        if (hidden.has(c.name)) return
        let count = 0
        if (outlineMode) {
          ctx.setTransform(dpr * T.a, dpr * T.b, dpr * T.c, dpr * T.d, dpr * T.e, dpr * T.f)
          const path = new Path2D()
          for (let i = 0; i < cls.length; i++) {
            if (cls[i] !== k || !inBox(vis, xy[2 * i], xy[2 * i + 1])) continue
            const s = outlines.starts[i]; const e = outlines.starts[i + 1]
            if (e - s < 2) continue
            path.moveTo(outlines.coords[2 * s], outlines.coords[2 * s + 1])
            for (let j = s + 1; j < e; j++) path.lineTo(outlines.coords[2 * j], outlines.coords[2 * j + 1])
            path.closePath()
            count++
          }
          ctx.strokeStyle = rgb(c.color)
          ctx.lineWidth = 1.5 / T.scale
          ctx.stroke(path)
        } else {
          ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
          ctx.fillStyle = rgb(c.color)
          for (let i = 0; i < cls.length; i++) {
            const x = xy[2 * i]; const y = xy[2 * i + 1]
            if (cls[i] !== k || !inBox(vis, x, y)) continue
            ctx.fillRect(T.a * x + T.c * y + T.e - 1.5, T.b * x + T.d * y + T.f - 1.5, 3, 3)
            count++
          }
        }
        if (count) drawn[c.name] = (drawn[c.name] || 0) + count
      })
    }
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
