// The slide document's `annotations` map, mirrored into render-ready entries with a spatial index.
import * as Y from 'yjs'
import { Emitter, uuid } from './dom.js'
import { GridIndex } from './spatial.js'
import * as geo from './geometry.js'
import { colorOf } from './classes.js'

const plain = (x) => (x instanceof Y.AbstractType ? x.toJSON() : x)

/** Reads an annotation value written by any client: a Y.Map or a plain JSON object. */
export function readAnnotation (id, value) {
  let get
  if (value instanceof Y.Map) get = (k) => value.get(k)
  else if (value && typeof value === 'object' && !(value instanceof Y.AbstractType)) get = (k) => value[k]
  else return null
  let geometry = plain(get('geometry'))
  if (typeof geometry === 'string') {
    try { geometry = JSON.parse(geometry) } catch { geometry = null }
  }
  if (!geometry || typeof geometry !== 'object' || typeof geometry.type !== 'string') geometry = null
  const classification = plain(get('classification')) || null
  const comments = plain(get('comments'))
  const measurements = plain(get('measurements'))
  return {
    id,
    isY: value instanceof Y.Map,
    geometry,
    classification: classification && typeof classification === 'object' ? classification : null,
    name: typeof get('name') === 'string' ? get('name') : '',
    locked: get('locked') === true,
    author: get('author') != null ? String(get('author')) : '',
    created: Number(get('created')) || 0,
    updated: Number(get('updated')) || 0,
    status: typeof get('status') === 'string' ? get('status') : null,
    problem: get('problem') != null ? String(get('problem')) : '',
    measurements: measurements && typeof measurements === 'object' ? measurements : null,
    comments: Array.isArray(comments) ? comments.map(plain).filter((c) => c && typeof c === 'object') : [],
  }
}

export class AnnotationStore extends Emitter {
  /**
   * @param {Y.Doc} doc
   * @param {{width:number, height:number, mpp:number|null, me:{id:string}}} slide
   */
  constructor (doc, { width, height, mpp, me }) {
    super()
    this.doc = doc
    this.map = doc.getMap('annotations')
    this.mpp = mpp
    this.me = me
    this.index = new GridIndex(width, height)
    this.entries = new Map()
    /** Transaction origin of this page's own edits: the undo manager tracks only these. */
    this.origin = { local: true }
    this.undo = new Y.UndoManager(this.map, { trackedOrigins: new Set([this.origin]), captureTimeout: 300 })
    this.version = 0
    this._observer = (events, txn) => {
      const ids = new Set()
      for (const ev of events) {
        if (ev.target === this.map) for (const k of ev.keysChanged) ids.add(k)
        else if (ev.path.length) ids.add(String(ev.path[0]))
      }
      this._refresh(ids, txn.origin === this.origin || txn.origin === this.undo)
    }
    this.map.observeDeep(this._observer)
    this._refresh(new Set(this.map.keys()), false)
  }

  destroy () {
    this.map.unobserveDeep(this._observer)
    this.undo.destroy()
  }

  _refresh (ids, local) {
    for (const id of ids) {
      const value = this.map.get(id)
      const old = this.entries.get(id)
      if (old) this.index.remove(old)
      const a = value === undefined ? null : readAnnotation(id, value)
      if (!a) { this.entries.delete(id); continue }
      const e = old || { receivedAt: Date.now() } // when this page first saw it (tests, latency)
      Object.assign(e, a)
      e.bbox = a.geometry ? geo.bbox(a.geometry) : null
      e.color = colorOf(a.classification)
      e.path = null // rebuilt lazily by the renderer
      e._style = null
      e._local = null
      this.entries.set(id, e)
      this.index.insert(e, e.bbox)
    }
    this.version++
    this.emit('change', ids, local)
  }

  get (id) { return this.entries.get(id) || null }

  /** Server measurements when present, else computed here from the slide's mpp. */
  measurements (e) {
    const m = e.measurements
    if (m && (Number.isFinite(m.area_um2) || Number.isFinite(m.length_um) || Number.isFinite(m.perimeter_um))) {
      return { ...m, source: 'server' }
    }
    if (!e._local) e._local = e.geometry ? geo.measure(e.geometry, this.mpp) : {}
    return { ...e._local, source: 'local' }
  }

  // ---- writes (all in one transaction with this page's origin, so undo sees only mine) ----

  _transact (fn) { this.doc.transact(fn, this.origin) }

  create ({ geometry, classification = null, name = '' }) {
    const id = uuid()
    const now = Date.now()
    this._transact(() => {
      const m = new Y.Map()
      this.map.set(id, m)
      m.set('geometry', geometry)
      m.set('classification', classification)
      m.set('name', name)
      m.set('locked', false)
      m.set('author', this.me.id)
      m.set('created', now)
      m.set('updated', now)
      this._setServerFields(m, geometry)
      m.set('comments', new Y.Array())
    })
    this.undo.stopCapturing()
    return id
  }

  /**
   * Writes what the server would for a new geometry (status, and measurements rounded as the
   * server rounds them): when they agree, the server has nothing to correct, so an edit costs
   * one update instead of an update and a correction. The server still checks and corrects.
   */
  _setServerFields (m, geometry) {
    if (!Number.isFinite(this.mpp) || this.mpp <= 0) return
    const computed = geo.measure(geometry, this.mpp)
    const old = plain(m.get('measurements'))
    const kept = old && typeof old === 'object' ? { ...old } : {}
    for (const k of ['area_um2', 'perimeter_um', 'length_um']) delete kept[k]
    for (const [k, v] of Object.entries(computed)) kept[k] = Math.round(v * 1000) / 1000
    m.set('measurements', kept)
    // The server checks up to ~400 vertices at once, larger ones a moment later: only say `ok`
    // for what it will have answered by the time the others see it.
    if (geo.vertexCount(geometry) <= 400) m.set('status', 'ok')
  }

  /** Ensures the value under id is a Y.Map (a plain JSON annotation is replaced by one). */
  _ymap (id) {
    const v = this.map.get(id)
    if (v instanceof Y.Map) return v
    if (!v || typeof v !== 'object') return null
    const m = new Y.Map()
    this.map.set(id, m)
    for (const [k, val] of Object.entries(v)) {
      if (k === 'comments') {
        const arr = new Y.Array()
        if (Array.isArray(val)) arr.push(val.filter((c) => c && typeof c === 'object'))
        m.set(k, arr)
      } else m.set(k, val)
    }
    if (!(m.get('comments') instanceof Y.Array)) m.set('comments', new Y.Array())
    return m
  }

  update (id, patch) {
    this._transact(() => {
      const m = this._ymap(id)
      if (!m) return
      for (const [k, v] of Object.entries(patch)) m.set(k, v)
      if ('geometry' in patch) this._setServerFields(m, patch.geometry)
      m.set('updated', Date.now())
    })
    this.undo.stopCapturing()
  }

  remove (id) {
    this._transact(() => { this.map.delete(id) })
    this.undo.stopCapturing()
  }

  addComment (id, text) {
    const comment = { id: uuid(), author: this.me.id, text: String(text), created: Date.now() }
    this._transact(() => {
      const m = this._ymap(id)
      if (!m) return
      let arr = m.get('comments')
      if (!(arr instanceof Y.Array)) {
        arr = new Y.Array()
        m.set('comments', arr)
      }
      arr.push([comment])
    })
    this.undo.stopCapturing()
  }

  /** Entries meeting the box, for the renderer. */
  query (b, fn) { this.index.query(b, fn) }

  get size () { return this.entries.size }
}
