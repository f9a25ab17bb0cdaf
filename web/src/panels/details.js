// The "Selected annotation" panel: class, name, lock, server status, measurements, comments.
import { h, add, clear, rgb, relTime } from '../dom.js'
import * as geo from '../geometry.js'

// A new annotation's `updated` trails its `created` by the first writes (classification, the
// server's corrections): only a later change is an edit.
const EDIT_AFTER_MS = 2000

export function wasEdited (e) {
  return Number.isFinite(e.updated) && Number.isFinite(e.created) && e.updated - e.created > EDIT_AFTER_MS
}

export class DetailsPanel {
  /** @param {import('../slideview.js').SlideView} view */
  constructor (view, el) {
    this.view = view
    this.el = el
    this.parts = null
  }

  render (selectionChanged = false) {
    const view = this.view
    const box = this.el
    const e = view.selectedId && view.store.get(view.selectedId)
    if (!e) {
      clear(box)
      box.append(h('p.muted.empty', null, view.canEdit
        ? 'Nothing selected. Draw with the tools on the left (P, R, G, F, L) or click a shape (V).'
        : 'Nothing selected. Click a shape to see its details and comments.'))
      box.dataset.id = ''
      return
    }
    const editable = view.canEdit && !e.locked
    if (selectionChanged || box.dataset.id !== e.id || !this.parts) {
      clear(box)
      box.dataset.id = e.id
      const d = this.parts = {}
      d.swatch = h('span.swatch.big')
      d.cls = h('span.cls', { 'data-testid': 'selection-class' })
      d.name = h('input.name-input', {
        type: 'text', 'data-testid': 'selection-name', placeholder: 'Name', 'aria-label': 'Annotation name', maxlength: '200',
        on: {
          change: () => { const cur = view.store.get(box.dataset.id); if (cur && cur.name !== d.name.value) view.store.update(cur.id, { name: d.name.value }) },
          keydown: (ev) => { if (ev.key === 'Enter') d.name.blur() },
        },
      })
      d.lock = h('input', {
        type: 'checkbox', 'data-testid': 'selection-lock', 'aria-label': 'Locked',
        on: { change: () => view.store.update(box.dataset.id, { locked: d.lock.checked }) },
      })
      d.status = h('div.status', { 'data-testid': 'selection-status' })
      d.measures = h('dl.measures', { 'data-testid': 'selection-measurements' })
      d.meta = h('div.meta.muted', { 'data-testid': 'selection-meta' })
      d.comments = h('ul.comments', { 'data-testid': 'comments' })
      d.text = h('textarea', { rows: '2', placeholder: 'Add a comment…', 'aria-label': 'Comment', 'data-testid': 'comment-input', maxlength: '4000' })
      const send = () => {
        const text = d.text.value.trim()
        if (!text) return
        view.store.addComment(box.dataset.id, text)
        d.text.value = ''
      }
      d.text.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey || !ev.shiftKey)) { ev.preventDefault(); send() } })
      add(box,
        h('div.sel-head', null, d.swatch, d.cls),
        d.name,
        h('div.row', null,
          h('label.check', null, d.lock, ' Locked'),
          h('button.link-btn', { on: { click: () => view.reveal(box.dataset.id) } }, 'Show'),
          view.canEdit && h('button.danger-btn', { 'data-testid': 'selection-delete', on: { click: () => view.deleteSelected() } }, 'Delete')),
        d.status, d.measures, d.meta,
        h('h3', null, 'Comments'), d.comments,
        view.canEdit && h('div.comment-form', null, d.text, h('button.primary', { 'data-testid': 'comment-send', on: { click: send } }, 'Send')))
    }
    const d = this.parts
    d.swatch.style.background = rgb(e.color)
    d.cls.textContent = e.classification ? e.classification.name : 'Unclassified'
    if (document.activeElement !== d.name) d.name.value = e.name || ''
    d.name.disabled = !editable
    d.lock.checked = e.locked
    d.lock.disabled = !view.canEdit
    clear(d.status)
    d.status.className = 'status' + (e.status && e.status !== 'ok' ? ` status-${e.status}` : '')
    d.status.dataset.status = e.status || ''
    if (e.status === 'repaired') d.status.append(h('strong', null, 'Repaired by the server'), h('div', null, e.problem || 'The outline was not valid and was corrected.'))
    else if (e.status === 'invalid') d.status.append(h('strong', null, 'Invalid geometry'), h('div', null, e.problem || 'The server could not use this shape.'))
    const m = view.store.measurements(e)
    clear(d.measures)
    const row = (k, v, id) => [h('dt', null, k), h('dd', { 'data-testid': id }, v)]
    d.measures.append(h('dt', null, 'Type'), h('dd', null, e.geometry ? e.geometry.type : '—'))
    if (Number.isFinite(m.area_um2)) d.measures.append(...row('Area', geo.formatArea(m.area_um2), 'measure-area'))
    if (Number.isFinite(m.perimeter_um)) d.measures.append(...row('Perimeter', geo.formatLength(m.perimeter_um), 'measure-perimeter'))
    if (Number.isFinite(m.length_um)) d.measures.append(...row('Length', geo.formatLength(m.length_um), 'measure-length'))
    if (!view.slide.mpp && e.geometry) d.measures.append(...row('Area', `${Math.round(geo.area(e.geometry))} px²`, 'measure-area-px'))
    d.measures.dataset.source = m.source
    d.measures.title = m.source === 'server' ? 'Measured by the server' : 'Measured in the browser (the server has not measured it yet)'
    d.meta.textContent = d.meta.title = `by ${this.nameForUser(e.author)}${e.created ? ', ' + relTime(e.created) : ''}${wasEdited(e) ? ` · edited ${relTime(e.updated)}` : ''}`
    clear(d.comments)
    if (!e.comments.length) d.comments.append(h('li.muted', null, 'No comments yet.'))
    for (const c of e.comments) {
      d.comments.append(h('li.comment', { 'data-testid': 'comment' },
        h('div.c-head', null, h('strong', { title: this.nameForUser(c.author) }, this.nameForUser(c.author)), h('span.muted', null, ' · ' + relTime(c.created))),
        h('div.c-text', null, String(c.text ?? ''))))
    }
  }

  nameForUser (id) {
    const view = this.view
    if (!id) return 'unknown'
    if (id === view.me.id) return `${view.me.name} (you)`
    for (const p of view.presence.participants()) if (p.user.id === id) return p.user.name
    return id
  }
}
