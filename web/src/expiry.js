// Links expire: warn a few minutes before (5 min, or a third of a short link's life) with a
// "Continue" action that renews the token (POST /api/tokens/renew) without leaving the page.
import { ApiError } from './api.js'

const LEAD_MS = 5 * 60_000
const MIN_LEAD_MS = 5_000

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })

export class ExpiryWatch {
  /**
   * @param {import('./credentials.js').Credentials} credentials
   * @param {(msg: string, opts?: object) => () => void} toast layout.toast (returns its closer)
   */
  constructor (credentials, toast) {
    this.credentials = credentials
    this.toast = toast
    this.renewals = 0
    this._timer = null
    this._close = null
    this._issued = Date.now() // a token's life as this page sees it (tokens need not carry iat)
    this._off = credentials.on('change', () => { this._issued = Date.now(); this.schedule() })
    this.schedule()
  }

  schedule () {
    clearTimeout(this._timer)
    this._close?.()
    const exp = this.credentials.expiresAt
    if (!exp) return
    const iat = this.credentials.claims && this.credentials.claims.iat
    const life = exp - (typeof iat === 'number' ? iat * 1000 : this._issued)
    const lead = Math.max(MIN_LEAD_MS, Math.min(LEAD_MS, life / 3))
    this._timer = setTimeout(() => this.warn(), Math.max(0, exp - lead - Date.now()))
  }

  warn () {
    const exp = this.credentials.expiresAt
    const mins = Math.max(0, Math.round((exp - Date.now()) / 60_000))
    this._close = this.toast(`Your link expires at ${clock(exp)} (${mins ? `in ${mins} min` : 'in less than a minute'}). Continue working?`, {
      level: 'warn', sticky: true, testid: 'expiry-warning', action: { label: 'Continue', fn: () => this.renew() },
    })
  }

  async renew () {
    try {
      await this.credentials.renew()
      this.renewals++
      this.toast(`Your link is renewed until ${clock(this.credentials.expiresAt)}.`, { testid: 'expiry-renewed' })
    } catch (e) {
      const status = e instanceof ApiError ? e.status : 0
      const msg = status === 403
        ? `This link cannot be renewed further. Ask for a new link before ${clock(this.credentials.expiresAt)}.`
        : status === 401
          ? 'Your link has already expired. Ask for a new link.'
          : status === 404
            ? 'This server cannot renew links. Ask for a new link.'
            : `The link could not be renewed (${e.message}). Try again in a moment.`
      this.toast(msg, { level: 'error', sticky: true, testid: 'expiry-renew-failed',
        ...(status === 0 || status >= 500 ? { action: { label: 'Retry', fn: () => this.renew() } } : {}) })
    }
  }

  destroy () {
    clearTimeout(this._timer)
    this._off()
  }
}
