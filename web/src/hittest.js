// What is under the pointer: the annotation hit at a screen point, and the hover tooltip.
import { h, add, clear, rgb } from './dom.js'
import * as geo from './geometry.js'

const TOLERANCE_PX = 6

/** The annotation at screen point s (viewer px): an edge or point hit beats an inside hit; then the smallest. */
export function hitTest (view, s) {
  if (!view.ready) return null
  const T = view.overlay.T || view.overlay.computeTransform()
  if (!T) return null
  const p = view.overlay.screenToImage(s[0], s[1], T)
  const tol = TOLERANCE_PX / T.scale
  let best = null; let bestRank = 0; let bestArea = Infinity
  view.store.query([p[0] - tol, p[1] - tol, p[0] + tol, p[1] + tol], (e) => {
    const b = e.bbox
    if (!e.geometry || !b || p[0] < b[0] - tol || p[0] > b[2] + tol || p[1] < b[1] - tol || p[1] > b[3] + tol) return
    const r = geo.hit(e.geometry, p[0], p[1], tol)
    if (!r) return
    const a = (b[2] - b[0]) * (b[3] - b[1])
    if (r > bestRank || (r === bestRank && a < bestArea)) { best = e; bestRank = r; bestArea = a }
  })
  return best
}

/** Hover feedback for the select tool: highlight and a tooltip, at most once a frame. */
export class Hover {
  /** @param {import('./slideview.js').SlideView} view */
  constructor (view, tip) {
    this.view = view
    this.tip = tip
    this._pos = null
    this._raf = 0
  }

  at (s) {
    this._pos = s
    if (this._raf) return
    this._raf = requestAnimationFrame(() => {
      this._raf = 0
      this._show(this._pos)
    })
  }

  hide () { this.tip.hidden = true }

  destroy () { if (this._raf) cancelAnimationFrame(this._raf) }

  _show (pos) {
    const view = this.view
    const e = hitTest(view, pos)
    view.setHover(e ? e.id : null)
    const tip = this.tip
    if (!e) { tip.hidden = true; return }
    clear(tip)
    const m = view.store.measurements(e)
    add(tip,
      h('div.tip-title', null, h('span.swatch', { style: { background: rgb(e.color) } }), e.name || (e.classification && e.classification.name) || 'Unclassified'),
      view.measureText(m) && h('div', null, view.measureText(m)),
      e.locked && h('div.muted', null, 'Locked'),
      e.status && e.status !== 'ok' && h('div', { class: `status-${e.status}` }, `${e.status === 'invalid' ? 'Invalid' : 'Repaired'} by the server: ${e.problem || 'no reason given'}`))
    tip.hidden = false
    const W = view.el.viewer.clientWidth
    tip.style.left = Math.min(pos[0] + 16, W - 260) + 'px'
    tip.style.top = (pos[1] + 18) + 'px'
  }
}
