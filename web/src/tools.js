// Pointer interaction: drawing tools, select/move. Works on native pointer events in the
// capture phase, so OpenSeadragon only pans/zooms when no tool claims the gesture.
import * as geo from './geometry.js'
import { Emitter } from './dom.js'

export const TOOLS = [
  { id: 'select', key: 'v', label: 'Select / move', edit: false },
  { id: 'point', key: 'p', label: 'Point', edit: true },
  { id: 'rectangle', key: 'r', label: 'Rectangle', edit: true },
  { id: 'polygon', key: 'g', label: 'Polygon', edit: true },
  { id: 'freehand', key: 'f', label: 'Freehand', edit: true },
  { id: 'line', key: 'l', label: 'Line ruler', edit: true },
]

const CLICK_SLOP = 5 // px: below this a press-release is a click, not a drag
const CLOSE_DIST = 9 // px: clicking this close to the first vertex closes a polygon

export class Tools extends Emitter {
  constructor (view) {
    super()
    this.view = view
    this.tool = 'select'
    this.draft = null // {kind, points: [[x, y]...] in slide px, cursor}
    this.moving = null // {id, dx, dy}
    this.gesture = null
    this.el = view.viewer.container
    this._down = (e) => this.onDown(e)
    this._move = (e) => this.onMove(e)
    this._up = (e) => this.onUp(e)
    this._dbl = (e) => this.onDouble(e)
    this._cancel = (e) => this.onCancel(e)
    this.el.addEventListener('pointerdown', this._down, true)
    this.el.addEventListener('pointermove', this._move, true)
    this.el.addEventListener('pointerup', this._up, true)
    this.el.addEventListener('pointercancel', this._cancel, true)
    this.el.addEventListener('dblclick', this._dbl, true)
  }

  destroy () {
    this.el.removeEventListener('pointerdown', this._down, true)
    this.el.removeEventListener('pointermove', this._move, true)
    this.el.removeEventListener('pointerup', this._up, true)
    this.el.removeEventListener('pointercancel', this._cancel, true)
    this.el.removeEventListener('dblclick', this._dbl, true)
  }

  setTool (id) {
    const t = TOOLS.find((x) => x.id === id)
    if (!t || (t.edit && !this.view.canEdit)) return false
    this.cancelDraft()
    this.tool = id
    this.el.dataset.tool = id
    this.emit('tool', id)
    return true
  }

  cancelDraft () {
    const had = !!this.draft || !!this.moving
    this.draft = null
    this.moving = null
    this.gesture = null
    if (had) this.view.overlay.requestDraw()
    return had
  }

  _pos (e) {
    const r = this.el.getBoundingClientRect()
    return [e.clientX - r.left, e.clientY - r.top]
  }

  _img (s) { return this.view.overlay.screenToImage(s[0], s[1]) }

  /** A drawing point: clipped to the slide [0, width] x [0, height], since the server marks a
   *  shape reaching past the slide's edge invalid. (Unknown size: left as is.) */
  _drawAt (s) {
    const p = this._img(s)
    const { width, height } = this.view.slide
    if (!(width > 0 && height > 0)) return p
    return [Math.min(Math.max(p[0], 0), width), Math.min(Math.max(p[1], 0), height)]
  }

  _claim (e) {
    e.stopPropagation()
    e.preventDefault()
    try { this.el.setPointerCapture(e.pointerId) } catch {}
  }

  _isUi (e) {
    // Clicks on OSD's navigator or our own floating controls inside the viewer are not drawing.
    const t = e.target
    return !!(t && t.closest && t.closest('.navigator, .viewer-ui, .openseadragon-navigator, .displayregion'))
  }

  onDown (e) {
    if (e.button !== 0 || this._isUi(e) || !this.view.ready) return
    const s = this._pos(e)
    const p = this._img(s)
    const tool = this.tool
    if (tool === 'select') {
      const hit = this.view.hitTest(s)
      // Dragging moves a shape only once it is selected (as in QuPath): panning over a dense
      // slide must never move shapes by accident.
      if (hit && hit.id === this.view.selectedId && this.view.canEdit && !hit.locked) {
        this._claim(e)
        this.gesture = { kind: 'move', id: hit.id, s0: s, p0: p, moved: false }
      } else {
        this.gesture = { kind: 'click', hit: hit ? hit.id : null, s0: s, passive: true }
      }
      return
    }
    if (!this.view.canEdit) return
    this._claim(e)
    const q = this._drawAt(s)
    if (tool === 'polygon') {
      if (!this.draft) this.draft = { kind: 'polygon', points: [q], cursor: q }
      else {
        const pts = this.draft.points
        const first = this.view.overlay.imageToScreen(pts[0][0], pts[0][1])
        const last = this.view.overlay.imageToScreen(pts[pts.length - 1][0], pts[pts.length - 1][1])
        if (pts.length >= 3 && Math.hypot(first[0] - s[0], first[1] - s[1]) <= CLOSE_DIST) {
          this.finishPolygon()
          return
        }
        if (Math.hypot(last[0] - s[0], last[1] - s[1]) > 3) pts.push(q)
      }
      this.gesture = { kind: 'polygon-click', s0: s }
    } else if (tool === 'point') {
      this.gesture = { kind: 'point', s0: s, p0: q }
    } else if (tool === 'rectangle' || tool === 'line') {
      this.draft = { kind: tool, points: [q, q] }
      this.gesture = { kind: tool, s0: s }
    } else if (tool === 'freehand') {
      this.draft = { kind: 'freehand', points: [q] }
      this.gesture = { kind: 'freehand', s0: s, last: s }
    }
    this.view.overlay.requestDraw()
  }

  onMove (e) {
    const s = this._pos(e)
    this.view.pointerAt(s)
    const g = this.gesture
    if (this.draft && this.draft.kind === 'polygon') {
      this.draft.cursor = this._drawAt(s)
      this.view.overlay.requestDraw()
    }
    if (!g || g.passive) {
      if (!g && this.tool === 'select') this.view.hoverAt(s)
      return
    }
    e.stopPropagation()
    const p = this._img(s)
    if (g.kind === 'move') {
      if (!g.moved && Math.hypot(s[0] - g.s0[0], s[1] - g.s0[1]) < CLICK_SLOP) return
      g.moved = true
      this.moving = { id: g.id, dx: p[0] - g.p0[0], dy: p[1] - g.p0[1] }
    } else if (g.kind === 'rectangle' || g.kind === 'line') {
      this.draft.points[1] = this._drawAt(s)
    } else if (g.kind === 'freehand') {
      if (Math.hypot(s[0] - g.last[0], s[1] - g.last[1]) >= 2) {
        this.draft.points.push(this._drawAt(s))
        g.last = s
      }
    }
    this.view.overlay.requestDraw()
  }

  onUp (e) {
    const g = this.gesture
    if (!g) return
    this.gesture = null
    const s = this._pos(e)
    const dist = Math.hypot(s[0] - g.s0[0], s[1] - g.s0[1])
    if (g.passive) {
      if (g.kind === 'click' && dist < CLICK_SLOP) this.view.select(g.hit)
      return
    }
    e.stopPropagation()
    try { this.el.releasePointerCapture(e.pointerId) } catch {}
    const view = this.view
    if (g.kind === 'move') {
      const m = this.moving
      this.moving = null
      if (g.moved && m && (m.dx || m.dy)) view.moveAnnotation(g.id, m.dx, m.dy)
      view.select(g.id)
    } else if (g.kind === 'point') {
      if (dist < CLICK_SLOP) view.createAnnotation({ type: 'Point', coordinates: g.p0 })
    } else if (g.kind === 'rectangle' || g.kind === 'line' || g.kind === 'freehand') {
      const geom = dist >= 3 || g.kind === 'freehand' ? this.draftGeometry() : null
      this.draft = null
      if (geom) view.createAnnotation(geom)
    }
    view.overlay.requestDraw()
  }

  onCancel () {
    if (this.gesture && !this.gesture.passive) this.cancelDraft()
    this.gesture = null
  }

  onDouble (e) {
    if (this.tool !== 'select') {
      e.stopPropagation()
      e.preventDefault()
    }
    if (this.draft && this.draft.kind === 'polygon') this.finishPolygon()
  }

  /** The geometry the current draft would produce (for live measurements and for commit). */
  draftGeometry () {
    const d = this.draft
    if (!d) return null
    const scale = this.view.overlay.T?.scale || 1
    if (d.kind === 'rectangle') {
      const [a, b] = d.points
      const x0 = Math.min(a[0], b[0]); const x1 = Math.max(a[0], b[0])
      const y0 = Math.min(a[1], b[1]); const y1 = Math.max(a[1], b[1])
      if (x1 - x0 <= 0 || y1 - y0 <= 0) return null
      return { type: 'Polygon', coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] }
    }
    if (d.kind === 'line') {
      const [a, b] = d.points
      if (a[0] === b[0] && a[1] === b[1]) return null
      return { type: 'LineString', coordinates: [a, b] }
    }
    if (d.kind === 'freehand') {
      const pts = geo.simplify(geo.thin(d.points, 1.5 / scale), 0.6 / scale)
      if (pts.length < 3) return null
      const g = { type: 'Polygon', coordinates: [geo.closeRing(pts)] }
      return geo.area(g) > 0 ? g : null
    }
    if (d.kind === 'polygon') {
      const pts = d.points.slice()
      if (d.cursor && this.gesture == null && pts.length >= 2) pts.push(d.cursor)
      if (pts.length < 3) return pts.length === 2 ? { type: 'LineString', coordinates: pts } : null
      return { type: 'Polygon', coordinates: [geo.closeRing(pts)] }
    }
    return null
  }

  finishPolygon () {
    const d = this.draft
    if (!d || d.kind !== 'polygon') return
    this.draft = null
    this.gesture = null
    // de-duplicate consecutive vertices (a double click adds the last one twice)
    const pts = []
    for (const p of d.points) {
      const q = pts[pts.length - 1]
      if (!q || q[0] !== p[0] || q[1] !== p[1]) pts.push(p)
    }
    if (pts.length >= 3) {
      const g = { type: 'Polygon', coordinates: [geo.closeRing(pts)] }
      if (geo.area(g) > 0) this.view.createAnnotation(g)
    } else {
      this.view.toast('A polygon needs at least three points.')
    }
    this.view.overlay.requestDraw()
  }

  removeLastVertex () {
    const d = this.draft
    if (!d || d.kind !== 'polygon') return false
    d.points.pop()
    if (!d.points.length) this.draft = null
    this.view.overlay.requestDraw()
    return true
  }
}
