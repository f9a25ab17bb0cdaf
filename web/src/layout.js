// The page shell: header, left toolbar, main area, side panel, toasts, and a blocking dialog.
import { h, clear } from './dom.js'

export function createLayout (root, { toolbar = true, side = true } = {}) {
  clear(root)
  const header = h('div.header-slot')
  const regions = {
    header,
    toolbar: toolbar ? h('nav.toolbar', { 'aria-label': 'Tools' }) : null,
    main: h('main.main'),
    side: side ? h('aside.side', { 'aria-label': 'Details' }) : null,
  }
  const toasts = h('div.toasts', { 'aria-live': 'assertive' })
  const app = h('div.app', { class: [toolbar ? '' : 'no-toolbar', side ? '' : 'no-side'].join(' ') },
    h('header.topbar', null, h('a.brand', { href: homeHref(), title: 'Slide list' }, h('span.logo', { 'aria-hidden': 'true' }), 'collab'), header),
    regions.toolbar, regions.main, regions.side, toasts)
  root.append(app)

  const toast = (message, { level = 'info', sticky = false, testid = 'toast', action = null, timeout = 5000 } = {}) => {
    const close = () => el.remove()
    const el = h('div.toast', { class: `toast-${level}`, role: level === 'error' ? 'alert' : 'status', 'data-testid': testid },
      h('span.toast-text', null, message),
      action && h('button.toast-action', { on: { click: () => { action.fn(); close() } } }, action.label),
      h('button.toast-close', { 'aria-label': 'Dismiss', title: 'Dismiss', on: { click: close } }, '×'))
    // Same message twice: keep one.
    for (const t of toasts.children) if (t.firstChild.textContent === message) t.remove()
    toasts.append(el)
    while (toasts.children.length > 4) toasts.firstChild.remove()
    if (!sticky) setTimeout(close, timeout)
    return close
  }

  const fatal = (title, message, actions = []) => {
    app.querySelector('.fatal')?.remove()
    app.append(h('div.fatal', { role: 'alertdialog', 'aria-modal': 'true', 'aria-labelledby': 'fatal-title', 'data-testid': 'fatal' },
      h('div.fatal-box', null,
        h('h1#fatal-title', null, title),
        h('p', { 'data-testid': 'fatal-message' }, message),
        h('div.fatal-actions', null, actions.map((a) => a.href
          ? h('a.button', { href: a.href }, a.label)
          : h('button.primary', { on: { click: a.fn } }, a.label))))))
  }

  return { app, regions, toast, fatal }
}

/** The app's own URL with only the token kept (the slide list). */
export function homeHref () {
  const token = new URLSearchParams(location.search).get('token')
  return location.pathname + (token ? `?token=${encodeURIComponent(token)}` : '')
}

export function slideHref (slideId, token) {
  return `${location.pathname}?slide=${encodeURIComponent(slideId)}&token=${encodeURIComponent(token)}`
}
