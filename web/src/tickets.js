// WebSocket authentication without the token in the URL: before each (re)connection, trade the
// token for a single-use ticket (POST /api/tickets) and open `?ticket=...`. A server without
// tickets (404) gets `?token=...`, as stock y-websocket clients send.
import { postJSON, ApiError } from './api.js'

let ticketsMissing = false // this server has no /api/tickets: stop asking

/** The query parameter that authenticates one new connection. */
export async function connectionParam (credentials) {
  if (!ticketsMissing) {
    try {
      const body = await postJSON('api/tickets', credentials.token)
      if (body && typeof body.ticket === 'string') return `ticket=${encodeURIComponent(body.ticket)}`
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 404) throw e
      ticketsMissing = true
    }
  }
  return `token=${encodeURIComponent(credentials.token)}`
}

/**
 * A WebSocket class for y-websocket's `WebSocketPolyfill` option: the provider constructs it
 * synchronously on every (re)connect; it fetches the ticket, then opens the real socket. A
 * refused ticket request ends like a refused connection (4401/4403, so the provider stops); an
 * unreachable server like a dropped one (1006, so it retries).
 */
export function ticketSocketClass (credentials) {
  return class TicketSocket {
    constructor (url, protocols) {
      this.url = url
      this.readyState = 0
      this.binaryType = 'arraybuffer'
      this.onopen = this.onmessage = this.onerror = this.onclose = null
      this._ws = null
      this._closed = false
      connectionParam(credentials).then((param) => {
        if (this._closed) return
        const ws = this._ws = new WebSocket(url + (url.includes('?') ? '&' : '?') + param, protocols)
        ws.binaryType = this.binaryType
        ws.onopen = (e) => { this.readyState = 1; this.onopen?.(e) }
        ws.onmessage = (e) => this.onmessage?.(e)
        ws.onerror = (e) => this.onerror?.(e)
        ws.onclose = (e) => { this.readyState = 3; this.onclose?.(e) }
      }, (e) => {
        if (this._closed) return
        const status = e instanceof ApiError ? e.status : 0
        const code = status === 401 ? 4401 : status === 403 ? 4403 : status === 404 ? 4404 : 1006
        this.readyState = 3
        this.onclose?.({ code, reason: e.message || '', wasClean: false })
      })
    }

    get OPEN () { return 1 }

    send (data) { this._ws?.send(data) }

    close (code, reason) {
      this._closed = true
      this.readyState = 3
      this._ws?.close(code, reason)
    }
  }
}
