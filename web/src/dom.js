// Tiny DOM helpers (no framework: the page is small and must stay light).

/**
 * h('div.cls#id', {attrs, on: {click}}, children...) -> Element
 */
export function h (tag, props, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(tag)
  const el = document.createElement((m && m[1]) || 'div')
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === '.') el.classList.add(part.slice(1))
      else el.id = part.slice(1)
    }
  }
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue
      if (k === 'on') {
        for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn)
      } else if (k === 'class') {
        for (const c of String(v).split(/\s+/)) if (c) el.classList.add(c)
      } else if (k === 'style' && typeof v === 'object') {
        Object.assign(el.style, v)
      } else if (k === 'html') {
        el.innerHTML = v
      } else if (k === 'text') {
        el.textContent = v
      } else if (k in el && typeof v !== 'string') {
        el[k] = v
      } else {
        el.setAttribute(k, v === true ? '' : String(v))
      }
    }
  }
  append(el, children)
  return el
}

/** el.append(...) that skips null/false/undefined (for `cond && h(...)` children). */
export function add (el, ...children) {
  append(el, children)
  return el
}

function append (el, children) {
  for (const c of children) {
    if (c == null || c === false) continue
    if (Array.isArray(c)) append(el, c)
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
}

export function clear (el) {
  while (el.firstChild) el.removeChild(el.firstChild)
  return el
}

export function rgb (color, alpha = 1) {
  if (!Array.isArray(color)) return `rgba(255,0,0,${alpha})`
  const [r, g, b] = color.map((v) => Math.max(0, Math.min(255, Math.round(Number(v) || 0))))
  return alpha === 1 ? `rgb(${r},${g},${b})` : `rgba(${r},${g},${b},${alpha})`
}

/** Calls fn at most every `ms`, always delivering the last call (trailing). */
export function throttle (fn, ms) {
  let last = 0
  let timer = null
  let pendingArgs = null
  const run = () => {
    timer = null
    last = performance.now()
    const args = pendingArgs
    pendingArgs = null
    fn(...args)
  }
  const throttled = (...args) => {
    pendingArgs = args
    if (timer) return
    const wait = ms - (performance.now() - last)
    if (wait <= 0) run()
    else timer = setTimeout(run, wait)
  }
  throttled.flush = () => {
    if (timer) { clearTimeout(timer); run() }
  }
  throttled.cancel = () => { if (timer) clearTimeout(timer); timer = null; pendingArgs = null }
  return throttled
}

/** A minimal event emitter. */
export class Emitter {
  constructor () { this._handlers = new Map() }
  on (name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set())
    this._handlers.get(name).add(fn)
    return () => this.off(name, fn)
  }
  off (name, fn) { this._handlers.get(name)?.delete(fn) }
  once (name, fn) {
    const off = this.on(name, (...args) => { off(); fn(...args) })
    return off
  }
  emit (name, ...args) {
    for (const fn of [...(this._handlers.get(name) || [])]) {
      try { fn(...args) } catch (e) { console.error(e) }
    }
  }
}

export function uuid () {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID()
  const b = new Uint8Array(16)
  crypto.getRandomValues(b)
  b[6] = (b[6] & 0x0f) | 0x40
  b[8] = (b[8] & 0x3f) | 0x80
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('')
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`
}

export function relTime (ms) {
  if (!ms) return ''
  const d = new Date(ms)
  const now = new Date()
  const sameDay = d.toDateString() === now.toDateString()
  return sameDay
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' })
}
