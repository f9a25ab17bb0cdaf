// A uniform grid over the slide: answers "what could be on screen" without touching every shape.

const MAX_CELLS_PER_ITEM = 256

export class GridIndex {
  /**
   * @param {number} width slide width (level-0 px)
   * @param {number} height slide height
   * @param {number} cellsAcross cells along the longer side
   */
  constructor (width, height, cellsAcross = 64) {
    this.w = Math.max(1, width || 1)
    this.h = Math.max(1, height || 1)
    this.size = Math.max(this.w, this.h) / cellsAcross
    this.cols = Math.ceil(this.w / this.size)
    this.rows = Math.ceil(this.h / this.size)
    this.cells = new Map() // cell number -> Set<item>
    this.big = new Set() // items spanning many cells, or outside/unbounded: always candidates
    this.where = new Map() // item -> cell numbers (or 'big')
    this._stamp = 0
  }

  _range (b) {
    const cl = (v, n) => Math.max(0, Math.min(n - 1, Math.floor(v / this.size)))
    return [cl(b[0], this.cols), cl(b[1], this.rows), cl(b[2], this.cols), cl(b[3], this.rows)]
  }

  insert (item, b) {
    this.remove(item)
    if (!b || !b.every(Number.isFinite)) {
      this.big.add(item)
      this.where.set(item, 'big')
      return
    }
    const [c0, r0, c1, r1] = this._range(b)
    if ((c1 - c0 + 1) * (r1 - r0 + 1) > MAX_CELLS_PER_ITEM) {
      this.big.add(item)
      this.where.set(item, 'big')
      return
    }
    const list = []
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const k = r * this.cols + c
        let s = this.cells.get(k)
        if (!s) { s = new Set(); this.cells.set(k, s) }
        s.add(item)
        list.push(k)
      }
    }
    this.where.set(item, list)
  }

  remove (item) {
    const w = this.where.get(item)
    if (w === undefined) return
    if (w === 'big') this.big.delete(item)
    else {
      for (const k of w) {
        const s = this.cells.get(k)
        if (s) { s.delete(item); if (!s.size) this.cells.delete(k) }
      }
    }
    this.where.delete(item)
  }

  clear () {
    this.cells.clear(); this.big.clear(); this.where.clear()
  }

  /** Calls fn(item) once for every item whose cells meet the box [x0, y0, x1, y1]. */
  query (b, fn) {
    const stamp = ++this._stamp
    for (const it of this.big) { it._q = stamp; fn(it) }
    const [c0, r0, c1, r1] = this._range(b)
    const nCells = (c1 - c0 + 1) * (r1 - r0 + 1)
    if (nCells > this.cells.size) {
      // Zoomed far out: walk the occupied cells instead of the empty ones.
      for (const [k, s] of this.cells) {
        const r = Math.floor(k / this.cols); const c = k - r * this.cols
        if (c < c0 || c > c1 || r < r0 || r > r1) continue
        for (const it of s) if (it._q !== stamp) { it._q = stamp; fn(it) }
      }
      return
    }
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const s = this.cells.get(r * this.cols + c)
        if (!s) continue
        for (const it of s) if (it._q !== stamp) { it._q = stamp; fn(it) }
      }
    }
  }

}
