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

export const getJSON = (path, token) => requestJSON('GET', path, token)
export const postJSON = (path, token, body) => requestJSON('POST', path, token, body)

async function requestJSON (method, path, token, body) {
  let res
  try {
    res = await fetch(apiRoot() + path.replace(/^\//, ''), {
      method,
      headers: {
        Accept: 'application/json',
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      cache: 'no-store',
    })
  } catch (e) {
    throw new ApiError(0, 'The server cannot be reached.')
  }
  let answer = null
  try { answer = await res.json() } catch { answer = null }
  if (!res.ok) throw new ApiError(res.status, (answer && answer.error) || `${res.status} ${res.statusText}`)
  return answer
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
