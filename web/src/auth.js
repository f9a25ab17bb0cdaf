// The page reads the token's payload only to adapt the UI; the server verifies everything.
import { digest } from 'lib0/hash/sha256'

export const ROLES = ['viewer', 'reviewer', 'presenter', 'admin']
const WRITERS = new Set(['reviewer', 'presenter', 'admin'])

// Same palette and choice as the server (collab/auth.py), so my own entry shows the color
// others see for me (the server stamps `user` on relayed presence; my own echo is not applied).
const PALETTE = [
  '#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4',
  '#f032e6', '#9a6324', '#469990', '#800000', '#808000', '#000075',
]

export function colorFor (userId) {
  const d = digest(new TextEncoder().encode(String(userId)))
  return PALETTE[d[0] % PALETTE.length]
}

/** Decodes a JWT payload without verifying it. Returns null when it is not a JWT. */
export function decodeToken (token) {
  if (!token || typeof token !== 'string') return null
  const parts = token.split('.')
  if (parts.length !== 3) return null
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/')
    while (b64.length % 4) b64 += '='
    const bin = atob(b64)
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0))
    const claims = JSON.parse(new TextDecoder().decode(bytes))
    return claims && typeof claims === 'object' ? claims : null
  } catch {
    return null
  }
}

/** The identity the UI works with, from a token's claims. */
export function identityFrom (token) {
  const claims = decodeToken(token)
  if (!claims) return null
  const id = String(claims.sub ?? '')
  const role = ROLES.includes(claims.role) ? claims.role : 'viewer'
  return {
    id,
    name: String(claims.name || id || 'anonymous'),
    site: String(claims.site || ''),
    role,
    color: colorFor(id),
    slides: claims.slides,
    exp: typeof claims.exp === 'number' ? claims.exp * 1000 : null,
    canEdit: WRITERS.has(role),
    canPresent: role === 'presenter' || role === 'admin',
  }
}

export function isExpired (identity, now = Date.now()) {
  return !!(identity && identity.exp && identity.exp <= now)
}
