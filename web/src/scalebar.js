// The scale bar: a round length in µm or mm at the current zoom, and the equivalent magnification.
import * as geo from './geometry.js'

export class Scalebar {
  constructor (el, mpp) {
    this.el = el
    this.mpp = mpp
    this._key = null
  }

  /** T: the overlay's transform (T.scale = screen px per slide px). */
  update (T) {
    const mpp = this.mpp
    const bar = this.el
    if (!mpp || !T) { bar.hidden = true; return }
    const umPerPx = mpp / T.scale
    const target = 110 * umPerPx
    const pow = Math.pow(10, Math.floor(Math.log10(target)))
    const nice = [1, 2, 5, 10].map((k) => k * pow).filter((v) => v <= target).pop() || pow
    const px = nice / umPerPx
    const key = `${nice}|${Math.round(px)}`
    if (this._key === key) return
    this._key = key
    bar.hidden = false
    bar.firstChild.style.width = Math.round(px) + 'px'
    const mag = 10 / umPerPx
    bar.lastChild.textContent = `${geo.formatLength(nice)} · ≈${mag >= 10 ? Math.round(mag) : mag.toFixed(1)}×`
  }
}
