// HTTP API (CONTRACT §4): JSON with `Authorization: Bearer <token>`.

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
