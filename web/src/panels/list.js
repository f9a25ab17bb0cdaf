// The "Annotations" panel: the most recently changed annotations (the canvas shows them all).
import { h, clear, rgb, throttle } from '../dom.js'
import { ICONS } from '../icons.js'

export class ListPanel {
  /** @param {import('../slideview.js').SlideView} view */
  constructor (view, { list, count }) {
    this.view = view
    this.el = list
    this.countEl = count
  }

  renderSoon () {
    if (!this._throttle) this._throttle = throttle(() => this.render(), 300)
    this._throttle()
  }

  render () {
    const view = this.view
    const ul = clear(this.el)
    const n = view.store.size
    this.countEl.textContent = String(n)
    if (!n) { ul.append(h('li.muted', null, 'No annotations yet.')); return }
    // Most recently changed first; the list is capped, the canvas shows them all.
    const all = [...view.store.entries.values()]
    all.sort((a, b) => (b.updated || b.created) - (a.updated || a.created))
    for (const e of all.slice(0, 40)) {
      const m = view.store.measurements(e)
      ul.append(h('li.ann', {
        'data-testid': 'annotation-item', 'data-id': e.id, tabindex: '0',
        class: e.id === view.selectedId ? 'selected' : '',
        on: {
          click: () => { view.select(e.id); view.reveal(e.id) },
          keydown: (ev) => { if (ev.key === 'Enter') { view.select(e.id); view.reveal(e.id) } },
        },
      },
      h('span.swatch', { style: { background: rgb(e.color) } }),
      h('span.a-name', { title: e.name || (e.classification ? e.classification.name : 'Unclassified') }, e.name || (e.classification ? e.classification.name : 'Unclassified')),
      e.locked && h('span.lock-icon', { title: 'Locked', html: ICONS.lock }),
      e.status && e.status !== 'ok' && h('span', { class: `flag status-${e.status}`, title: e.problem || e.status }, e.status === 'invalid' ? '!' : '~'),
      h('span.a-measure.muted', null, view.measureText(m).split(' · ')[0] || (e.geometry ? e.geometry.type : ''))))
    }
    if (n > 40) ul.append(h('li.muted.more', null, `…and ${n - 40} more on the slide`))
  }

  markSelection () {
    const view = this.view
    for (const li of this.el.querySelectorAll('li.ann')) li.classList.toggle('selected', li.dataset.id === view.selectedId)
  }
}
