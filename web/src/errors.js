// What a refusal means for the person in front of the page: HTTP 401/403/404 and the WebSocket
// close codes 4401/4403/4404 (the server's two ways of saying the same three things).

const BY_CODE = {
  401: ['Your link is not valid', 'The server could not verify your link: it is damaged, expired or was revoked. Ask for a new link.'],
  403: ['No access', 'Your link does not give access to this. Ask for a link that does.'],
  404: ['Not found', 'This does not exist (anymore) on the server.'],
}

/**
 * {title, message, final} for an HTTP status or a close code; `final` is true when trying again
 * with the same link cannot succeed (so no "Try again" is offered).
 * @param {number} code
 * @param {object} [ctx] {what: 'slide'|'session', id, expired: bool (the token's own exp passed)}
 */
export function explain (code, ctx = {}) {
  const http = code >= 4400 && code < 4500 ? code - 4000 : code
  const what = ctx.what ? `${ctx.what} "${ctx.id}"` : null
  if (http === 401) {
    if (ctx.expired) return { title: 'Your link has expired', message: 'Your link has expired. Ask for a new link.', final: true }
    return { title: BY_CODE[401][0], message: BY_CODE[401][1], final: true }
  }
  if (http === 403) {
    return { title: BY_CODE[403][0], message: what ? `Your link does not give access to the ${what}. Ask for a link that does.` : BY_CODE[403][1], final: true }
  }
  if (http === 404) {
    return { title: ctx.what ? `${cap(ctx.what)} not found` : BY_CODE[404][0], message: what ? `There is no ${what} on the server.` : BY_CODE[404][1], final: true }
  }
  if (http === 0) return { title: 'Server unreachable', message: 'The server cannot be reached. It may be restarting; try again in a moment.', final: false }
  return { title: 'Disconnected', message: `The server closed the connection (${code}).`, final: false }
}

const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1)
