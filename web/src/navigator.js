// The navigator (OpenSeadragon's minimap) with everyone else's viewport drawn on it.
import { viewportCorners } from './overlay.js'

export class NavigatorViewports {
  /** @param {import('./slideview.js').SlideView} view */
  constructor (view) {
    this.view = view
    this.canvas = null
    this._raf = 0
  }

  /** Called once the slide is open (the navigator exists from then on). */
  attach () {
    const nav = this.view.viewer.navigator
    if (!nav || this.canvas) return
    const c = document.createElement('canvas')
    c.className = 'nav-overlay'
    c.setAttribute('data-testid', 'navigator-overlay')
    nav.element.appendChild(c)
    this.canvas = c
    this.ctx = c.getContext('2d')
    const redraw = () => this.draw()
    nav.addHandler('update-viewport', redraw)
    nav.addHandler('resize', redraw)
    this._detach = () => { nav.removeHandler('update-viewport', redraw); nav.removeHandler('resize', redraw) }
  }

  destroy () {
    if (this._raf) cancelAnimationFrame(this._raf)
    this._detach?.()
  }

  drawSoon () {
    if (this._raf) return
    this._raf = requestAnimationFrame(() => { this._raf = 0; this.draw() })
  }

  draw () {
    const view = this.view
    const nav = view.viewer.navigator
    const item = view.item
    if (!this.canvas || !nav || !item) return
    const { canvas, ctx } = this
    const w = nav.element.clientWidth; const hgt = nav.element.clientHeight
    const dpr = window.devicePixelRatio || 1
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
      canvas.width = Math.round(w * dpr); canvas.height = Math.round(hgt * dpr)
      canvas.style.width = w + 'px'; canvas.style.height = hgt + 'px'
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0)
    ctx.clearRect(0, 0, w, hgt)
    for (const p of view.presence.remotes()) {
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
}
