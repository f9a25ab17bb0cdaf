// The "Detection layers" panel: each layer of the slide with a toggle, and per class a toggle
// and its color; and, for the selected annotation, its cell counts (see cellCounts below).
import { h, clear, rgb } from '../dom.js'

export class LayersPanel {
  /** @param {import('../slideview.js').SlideView} view */
  constructor (view, el) {
    this.view = view
    this.el = el
  }

  render () {
    const lv = this.view.layers
    clear(this.el)
    if (!lv.layers.length) {
      this.el.append(h('p.muted.empty', null, 'No detection layers on this slide.'))
      return
    }
    for (const l of lv.layers) {
      const hidden = lv.hidden.get(l.id) || new Set()
      const classes = Object.entries(l.classes || {}).sort((a, b) => b[1] - a[1])
      this.el.append(h('div.layer', { 'data-testid': 'layer', 'data-layer': l.id },
        h('label.check.layer-head', null,
          h('input', { type: 'checkbox', checked: !!lv.shown.get(l.id), 'data-testid': 'layer-toggle', 'aria-label': `Show ${l.name}`, on: { change: (ev) => lv.setLayer(l.id, ev.target.checked) } }),
          h('strong', null, l.name), h('span.muted', null, ` · ${l.count.toLocaleString()}`)),
        h('ul.layer-classes', null, classes.map(([name, n]) => h('li', null,
          h('label.check', null,
            h('input', { type: 'checkbox', checked: !hidden.has(name), 'data-testid': 'layer-class', 'data-class': name, 'aria-label': `Show ${name}`, on: { change: (ev) => lv.setClass(l.id, name, ev.target.checked) } }),
            h('span.swatch', { style: { background: rgb(lv.colorOf(l.id, name)) } }),
            ` ${name} `, h('span.muted', null, n.toLocaleString())))))))
    }
  }
}

/** The cell counts of an annotation (`measurements.cells`), per layer: total, then per class
 * its count and fraction of the total. */
export function cellCounts (view, cells) {
  if (!cells || typeof cells !== 'object') return null
  const box = h('div.cell-counts', { 'data-testid': 'cell-counts' })
  for (const [layerId, c] of Object.entries(cells)) {
    if (!c || typeof c !== 'object') continue
    const total = Number(c.total) || 0
    const name = view.layers.layerName(layerId) || 'Layer'
    const rows = Object.entries(c.classes || {}).sort((a, b) => b[1] - a[1])
    box.append(h('div.cell-layer', { 'data-testid': 'cell-layer', 'data-layer': layerId, 'data-total': String(total) },
      h('div', null, h('strong', null, name), ': ', h('span', { 'data-testid': 'cell-total' }, `${total.toLocaleString()} cells`)),
      h('dl.measures', null, rows.map(([cls, n]) => [
        h('dt', null, h('span.swatch', { style: { background: rgb(view.layers.colorOf(layerId, cls)) } }), ` ${cls}`),
        h('dd', { 'data-testid': 'cell-class', 'data-class': cls, 'data-count': String(n) },
          `${Number(n).toLocaleString()} (${total ? (100 * n / total).toFixed(1) : '0.0'}%)`),
      ]))))
  }
  return box
}

/** The "Cell counts" panel: the selected annotation's counts, following its live updates. */
export class CellsPanel {
  constructor (view, el) {
    this.view = view
    this.el = el
  }

  render () {
    const view = this.view
    clear(this.el)
    const e = view.selectedId && view.store.get(view.selectedId)
    const cells = e && e.measurements && e.measurements.cells
    this.el.dataset.id = e ? e.id : ''
    if (!e) { this.el.append(h('p.muted.empty', null, 'Select an outline to see the cells inside.')); return }
    if (cells && Object.keys(cells).some((id) => !view.layers.layerName(id))) view.layers.refresh().catch(() => {})
    const box = cellCounts(view, cells)
    this.el.append(box && box.childNodes.length ? box : h('p.muted.empty', null, 'No cell counts for this annotation (an outline on a slide with layers has them).'))
  }
}
