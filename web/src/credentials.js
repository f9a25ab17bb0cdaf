// The page's access token, held in one place: replaced in memory and in the address bar when it
// is renewed, so every later request, tile and (re)connection uses the new one.
import { Emitter } from './dom.js'
import { identityFrom } from './auth.js'
import { postJSON, ApiError } from './api.js'

export class Credentials extends Emitter {
  constructor (token) {
    super()
    this.token = token || ''
    this.claims = identityFrom(this.token) // unverified: for the UI's expectations only
  }

  /** ms since epoch, or null when the token says nothing. */
  get expiresAt () { return this.claims ? this.claims.exp : null }

  /** POST /api/tokens/renew: a fresh token for the same person and slides. Throws ApiError. */
  async renew () {
    const body = await postJSON('api/tokens/renew', this.token)
    if (!body || typeof body.token !== 'string') throw new ApiError(502, 'the server answered without a token')
    this.replace(body.token)
    return body
  }

  replace (token) {
    this.token = token
    this.claims = identityFrom(token)
    // The address bar too, so a reload (or a copied link) carries the renewed token.
    const url = new URL(location.href)
    if (url.searchParams.has('token')) {
      url.searchParams.set('token', token)
      history.replaceState(history.state, '', url)
    }
    this.emit('change', token)
  }
}
