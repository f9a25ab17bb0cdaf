// Entry point: /app/?slide=<id>&token=<jwt> opens a slide; /app/?session=<id>&token=<jwt> a
// tumor-board session (session.js, hosting a SlideView per slide); /app/?token=<jwt> lists slides.
import './app.css'
import { isExpired } from './auth.js'
import { listSlides, ApiError } from './api.js'
import { Credentials } from './credentials.js'
import { ExpiryWatch } from './expiry.js'
import { explain } from './errors.js'
import { createLayout, homeHref, slideHref } from './layout.js'
import { SlideView } from './slideview.js'
import { SessionPage } from './session.js'
import { h } from './dom.js'
import { formatArea } from './geometry.js'

const root = document.getElementById('app')
const params = new URLSearchParams(location.search)
const credentials = new Credentials(params.get('token') || '')
// Read from the token without verifying it: used to adapt the UI, and shown only once the
// server has accepted the token (an API answer), never before.
const me = credentials.claims

// Test/automation hook: read state without scraping pixels.
const hook = {
  view: null,
  get doc () { return this.view && this.view.doc },
  get provider () { return this.view && this.view.room.provider },
  get awareness () { return this.view && this.view.awareness },
  get viewer () { return this.view && this.view.viewer },
  get store () { return this.view && this.view.store },
  me,
  credentials,
  expiry: null,
  page: null,
  session: null, // the SessionPage on /app/?session=...
  state () {
    const s = this.view ? this.view.state() : { page: this.page, me }
    if (this.session) s.session = this.session.state()
    return s
  },
  annotation (id) { return this.view ? this.view.annotationSummary(id) : null },
  imageToClient (x, y) { return this.view ? this.view.imageToClient(x, y) : null },
  follow (clientId) { this.view && this.view.follow.start(clientId) },
}
window.collab = hook

function noToken (layout, why) {
  hook.page = 'no-token'
  const damaged = !why && !!credentials.token // a token is there, but not a readable one
  layout.fatal(why || damaged ? 'This link cannot be used' : 'A link with a token is needed',
    why || (damaged
      ? 'The token in this link is damaged (incomplete or altered, perhaps cut when it was copied). Open the whole link you were given, or paste the token below.'
      : 'Open the link you were given (it contains your access token), or paste a token below.'), [])
  const box = layout.app.querySelector('.fatal-box')
  const input = h('input', { type: 'text', placeholder: 'eyJ…', 'aria-label': 'Token', 'data-testid': 'token-input' })
  box.append(h('form.token-form', {
    on: { submit: (e) => { e.preventDefault(); const t = input.value.trim(); if (t) location.search = `?${new URLSearchParams({ ...Object.fromEntries(params), token: t })}` } },
  }, input, h('button.primary', { type: 'submit' }, 'Open')))
}

/** After the server accepted the token: its holder may be named, and the link renewed. */
function verified (layout) {
  if (!hook.expiry) hook.expiry = new ExpiryWatch(credentials, layout.toast)
}

async function slideList () {
  hook.page = 'slides'
  document.title = 'Slides · collab'
  const layout = createLayout(root, { toolbar: false, side: false })
  if (!me) return noToken(layout)
  if (isExpired(me)) return noToken(layout, 'Your link has expired. Ask for a new link.')
  const header = h('div.header-items', null, h('span.slide-title', null, 'Slides'))
  layout.regions.header.append(header)
  const main = layout.regions.main
  main.classList.add('scroll')
  const list = h('ul.slide-list', { 'data-testid': 'slide-list' }, h('li.muted', null, 'Loading…'))
  main.append(h('div.page', null, h('h1', null, 'Slides you can open'), list))
  try {
    const slides = await listSlides(credentials.token)
    // The server verified the token: now its identity may be shown.
    header.append(h('span.me', { 'data-testid': 'me', title: `${me.name} (${me.site || '—'}, ${me.role})` }, h('span.dot', { style: { background: me.color } }), h('span.me-name', null, me.name), h('span.muted', null, ` · ${me.site || '—'} · `), h('span.role', null, me.role)))
    verified(layout)
    list.replaceChildren()
    if (!slides.length) list.append(h('li.muted', null, 'No slides are registered yet.'))
    for (const s of slides) {
      list.append(h('li.slide-card', { 'data-testid': 'slide-card', 'data-id': s.id },
        h('a', { href: slideHref(s.id, credentials.token), title: s.title || s.id },
          h('strong', null, s.title || s.id),
          h('span.muted', null, `${s.id} · ${Number(s.width).toLocaleString('en-US')} × ${Number(s.height).toLocaleString('en-US')} px`,
            s.mpp ? ` · ${s.mpp} µm/px · ${formatArea(s.width * s.height * s.mpp * s.mpp)}` : ''))))
    }
  } catch (e) {
    list.replaceChildren(h('li.error', { role: 'alert' }, messageFor(e)))
  }
}

function messageFor (e, ctx = {}) {
  if (e instanceof ApiError) {
    if (e.status === 401 || e.status === 403 || e.status === 404 || e.status === 0) {
      return explain(e.status, { ...ctx, expired: isExpired(me) }).message
    }
    return e.message
  }
  return String(e && e.message ? e.message : e)
}

async function slidePage (slideId) {
  hook.page = 'slide'
  const layout = createLayout(root)
  if (!me) return noToken(layout)
  if (isExpired(me)) return noToken(layout, 'Your link has expired. Ask for a new link.')
  let slide = null
  try {
    const slides = await listSlides(credentials.token)
    verified(layout)
    slide = slides.find((s) => s.id === slideId) || null
    if (!slide) {
      // The server accepted the token, so its `slides` claim is genuine: say which case it is.
      const granted = me.slides === '*' || (Array.isArray(me.slides) && me.slides.includes(slideId))
      const x = explain(granted ? 404 : 403, { what: 'slide', id: slideId })
      return layout.fatal(x.title, x.message, [{ label: 'Slide list', href: homeHref() }])
    }
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      const x = explain(e.status, { what: 'slide', id: slideId, expired: isExpired(me) })
      return layout.fatal(x.title, x.message, e.status === 401 ? [] : [{ label: 'Slide list', href: homeHref() }])
    }
    // The list is unavailable: fall back to the server's own tiles for this id.
    layout.toast(`Slide details unavailable (${messageFor(e)}); measurements are shown in pixels.`, { level: 'warn' })
    slide = { id: slideId, title: slideId, width: 0, height: 0, mpp: null, tiles: `${location.pathname.replace(/\/app(\/.*)?$/, '')}/slides/${encodeURIComponent(slideId)}.dzi` }
  }
  slide.mpp = Number(slide.mpp) > 0 ? Number(slide.mpp) : null
  document.title = `${slide.title || slide.id} · collab`
  // (Re)creates the live view; a resync drops this page's copy and reloads it from the server,
  // keeping where the user was looking and whom they followed.
  let view = null
  const mount = (restore) => {
    if (view) view.destroy()
    view = new SlideView(layout.regions, { slide, credentials, me, toast: layout.toast, resync: () => mount(snapshot()) })
    hook.view = view
    view.on('closed', ({ code, reason }) => {
      const x = explain(code, { what: 'slide', id: slideId, expired: isExpired(credentials.claims) })
      // No "Try again" where the same link cannot succeed (expired, no access, gone).
      const actions = code === 4401 ? [] : [{ label: 'Slide list', href: homeHref() }]
      if (!x.final) actions.push({ label: 'Try again', fn: () => location.reload() })
      layout.fatal(x.title, reason || x.message, actions)
    })
    if (restore && restore.viewport) {
      view.once('ready', () => {
        view.setViewport(restore.viewport, { immediately: true })
        if (restore.following != null) view.room.once('synced', () => setTimeout(() => view.follow.start(restore.following), 200))
      })
    }
  }
  const snapshot = () => (view ? { viewport: view.getViewport(false), following: view.follow.following } : null)
  mount(null)
}

function sessionPage (sessionId) {
  hook.page = 'session'
  document.title = 'Tumor board · collab'
  const layout = createLayout(root)
  if (!me) return noToken(layout)
  if (isExpired(me)) return noToken(layout, 'Your link has expired. Ask for a new link.')
  const session = new SessionPage({ layout, sessionId, credentials, me })
  hook.session = session
  session.on('view', (view) => { hook.view = view })
  session.once('verified', () => verified(layout))
  session.start().catch((e) => layout.fatal('Cannot open the session', messageFor(e), [{ label: 'Slide list', href: homeHref() }]))
}

const slideId = params.get('slide')
const sessionId = params.get('session')
if (sessionId) sessionPage(sessionId)
else if (slideId) slidePage(slideId)
else slideList()
