// HTTP API (docs/reference.md, and the HTTP API table of README.md): JSON with `Authorization: Bearer <token>`.

/** <prefix>/ where the app lives at <prefix>/app/. */
export function apiRoot (loc = location) {
  return loc.pathname.replace(/\/app(\/.*)?$/, '') + '/'
}

export class ApiError extends Error {
  constructor (status, message) {
    super(message)
    this.status = status
  }
}

export async function getJSON (path, token) {
  let res
  try {
    res = await fetch(apiRoot() + path.replace(/^\//, ''), {
      headers: { Accept: 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      cache: 'no-store',
    })
  } catch (e) {
    throw new ApiError(0, 'The server cannot be reached.')
  }
  let body = null
  try { body = await res.json() } catch { body = null }
  if (!res.ok) throw new ApiError(res.status, (body && body.error) || `${res.status} ${res.statusText}`)
  return body
}

export const listSlides = (token) => getJSON('api/slides', token)
export const getSession = (id, token) => getJSON(`api/sessions/${encodeURIComponent(id)}`, token)

/** The printable summary of a session, as HTML text (the API wants the Bearer header). */
export async function sessionSummaryHTML (id, token) {
  let res
  try {
    res = await fetch(apiRoot() + `api/sessions/${encodeURIComponent(id)}/summary?format=html`, {
      headers: { Accept: 'text/html', Authorization: `Bearer ${token}` },
      cache: 'no-store',
    })
  } catch {
    throw new ApiError(0, 'The server cannot be reached.')
  }
  const text = await res.text()
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`
    try { msg = JSON.parse(text).error || msg } catch {}
    throw new ApiError(res.status, msg)
  }
  return text
}
