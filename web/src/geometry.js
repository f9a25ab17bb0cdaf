// GeoJSON geometry helpers in level-0 slide pixels (y down).

const finite = (p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1])

/** Calls fn(ring, isOuter) for each ring/line; for points calls pointFn(p). */
function eachPart (g, lineFn, pointFn) {
  if (!g || typeof g !== 'object') return
  const c = g.coordinates
  switch (g.type) {
    case 'Point': pointFn && pointFn(c); break
    case 'MultiPoint': if (Array.isArray(c)) c.forEach((p) => pointFn && pointFn(p)); break
    case 'LineString': lineFn(c, false, false); break
    case 'MultiLineString': if (Array.isArray(c)) c.forEach((l) => lineFn(l, false, false)); break
    case 'Polygon': if (Array.isArray(c)) c.forEach((r, i) => lineFn(r, true, i === 0)); break
    case 'MultiPolygon':
      if (Array.isArray(c)) c.forEach((poly) => Array.isArray(poly) && poly.forEach((r, i) => lineFn(r, true, i === 0)))
      break
    case 'GeometryCollection':
      if (Array.isArray(g.geometries)) g.geometries.forEach((x) => eachPart(x, lineFn, pointFn))
      break
  }
}

export function isAreal (g) {
  return !!g && (g.type === 'Polygon' || g.type === 'MultiPolygon')
}
export function isLinear (g) {
  return !!g && (g.type === 'LineString' || g.type === 'MultiLineString')
}
export function isPuntal (g) {
  return !!g && (g.type === 'Point' || g.type === 'MultiPoint')
}

/** [minx, miny, maxx, maxy] or null when there is no finite coordinate. */
export function bbox (g) {
  let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity
  const add = (p) => {
    if (!finite(p)) return
    if (p[0] < x0) x0 = p[0]
    if (p[1] < y0) y0 = p[1]
    if (p[0] > x1) x1 = p[0]
    if (p[1] > y1) y1 = p[1]
  }
  eachPart(g, (line) => { if (Array.isArray(line)) line.forEach(add) }, add)
  return x0 === Infinity ? null : [x0, y0, x1, y1]
}

function ringArea (r) {
  if (!Array.isArray(r) || r.length < 3) return 0
  let s = 0
  for (let i = 0, n = r.length; i < n; i++) {
    const a = r[i]; const b = r[(i + 1) % n]
    if (!finite(a) || !finite(b)) return NaN
    s += a[0] * b[1] - b[0] * a[1]
  }
  return Math.abs(s) / 2
}

function lineLength (l, closed) {
  if (!Array.isArray(l)) return 0
  let s = 0
  const n = l.length
  for (let i = 1; i < n; i++) s += dist(l[i - 1], l[i])
  if (closed && n > 2 && (l[0][0] !== l[n - 1][0] || l[0][1] !== l[n - 1][1])) s += dist(l[n - 1], l[0])
  return s
}

function dist (a, b) {
  return Math.hypot(b[0] - a[0], b[1] - a[1])
}

/** Area in px² (outer rings minus holes). */
export function area (g) {
  let s = 0
  eachPart(g, (ring, closed, outer) => { if (closed) s += outer ? ringArea(ring) : -ringArea(ring) })
  return s
}

/** Perimeter of areal geometries, length of linear ones, in px. */
export function perimeter (g) {
  let s = 0
  eachPart(g, (line, closed) => { if (closed) s += lineLength(line, true) })
  return s
}

export function length (g) {
  let s = 0
  eachPart(g, (line, closed) => { if (!closed) s += lineLength(line, false) })
  return s
}

export function vertexCount (g) {
  let n = 0
  eachPart(g, (l) => { if (Array.isArray(l)) n += l.length }, () => { n++ })
  return n
}

/** Measurements in µm / µm², the same keys the server writes. */
export function measure (g, mpp) {
  const m = {}
  const k = Number.isFinite(mpp) && mpp > 0 ? mpp : null
  if (!k) return m
  if (isAreal(g)) {
    m.area_um2 = area(g) * k * k
    m.perimeter_um = perimeter(g) * k
  } else if (isLinear(g)) {
    m.length_um = length(g) * k
  }
  return m
}

export function translate (g, dx, dy) {
  const mv = (p) => (finite(p) ? [p[0] + dx, p[1] + dy, ...p.slice(2)] : p)
  const c = g.coordinates
  switch (g.type) {
    case 'Point': return { type: g.type, coordinates: mv(c) }
    case 'MultiPoint': case 'LineString': return { type: g.type, coordinates: c.map(mv) }
    case 'MultiLineString': case 'Polygon': return { type: g.type, coordinates: c.map((l) => l.map(mv)) }
    case 'MultiPolygon': return { type: g.type, coordinates: c.map((p) => p.map((l) => l.map(mv))) }
    default: return g
  }
}

/** A Path2D in slide pixels (points are drawn separately, in screen space). */
export function toPath (g) {
  const path = new Path2D()
  eachPart(g, (line, closed) => {
    if (!Array.isArray(line)) return
    let started = false
    for (const p of line) {
      if (!finite(p)) continue
      if (!started) { path.moveTo(p[0], p[1]); started = true } else path.lineTo(p[0], p[1])
    }
    if (closed && started) path.closePath()
  })
  return path
}

export function points (g) {
  const out = []
  eachPart(g, () => {}, (p) => { if (finite(p)) out.push(p) })
  return out
}

function segDist2 (px, py, a, b) {
  const vx = b[0] - a[0]; const vy = b[1] - a[1]
  const l2 = vx * vx + vy * vy
  let t = l2 ? ((px - a[0]) * vx + (py - a[1]) * vy) / l2 : 0
  t = t < 0 ? 0 : t > 1 ? 1 : t
  const dx = a[0] + t * vx - px; const dy = a[1] + t * vy - py
  return dx * dx + dy * dy
}

function inRing (x, y, r) {
  let inside = false
  for (let i = 0, j = r.length - 1; i < r.length; j = i++) {
    const a = r[i]; const b = r[j]
    if (!finite(a) || !finite(b)) continue
    if ((a[1] > y) !== (b[1] > y) && x < ((b[0] - a[0]) * (y - a[1])) / (b[1] - a[1]) + a[0]) inside = !inside
  }
  return inside
}

/**
 * Hit test at (x, y) in slide px with tolerance tol (slide px).
 * Returns 0 for a miss, 1 for an interior hit, 2 for a hit on an outline/point (preferred).
 */
export function hit (g, x, y, tol) {
  const t2 = tol * tol
  let result = 0
  const onLine = (line, closed) => {
    if (!Array.isArray(line) || result === 2) return
    const n = line.length
    for (let i = 1; i < n; i++) {
      if (finite(line[i - 1]) && finite(line[i]) && segDist2(x, y, line[i - 1], line[i]) <= t2) { result = 2; return }
    }
    if (closed && n > 2 && finite(line[0]) && finite(line[n - 1]) && segDist2(x, y, line[n - 1], line[0]) <= t2) result = 2
  }
  eachPart(g, onLine, (p) => {
    if (finite(p) && (p[0] - x) ** 2 + (p[1] - y) ** 2 <= t2 * 4) result = 2
  })
  if (result) return result
  if (g.type === 'Polygon' || g.type === 'MultiPolygon') {
    const polys = g.type === 'Polygon' ? [g.coordinates] : g.coordinates
    for (const poly of polys || []) {
      if (!Array.isArray(poly) || !Array.isArray(poly[0])) continue
      if (inRing(x, y, poly[0]) && !poly.slice(1).some((h) => Array.isArray(h) && inRing(x, y, h))) return 1
    }
  }
  return 0
}

/** Drops points closer than minDist to the previous kept point (freehand capture). */
export function thin (pts, minDist) {
  if (pts.length < 3) return pts.slice()
  const out = [pts[0]]
  for (let i = 1; i < pts.length - 1; i++) {
    if (dist(out[out.length - 1], pts[i]) >= minDist) out.push(pts[i])
  }
  out.push(pts[pts.length - 1])
  return out
}

/** Ramer-Douglas-Peucker simplification of an open polyline. */
export function simplify (pts, eps) {
  if (pts.length < 3) return pts.slice()
  const keep = new Uint8Array(pts.length)
  keep[0] = keep[pts.length - 1] = 1
  const stack = [[0, pts.length - 1]]
  const e2 = eps * eps
  while (stack.length) {
    const [i0, i1] = stack.pop()
    let max = 0; let idx = -1
    for (let i = i0 + 1; i < i1; i++) {
      const d = segDist2(pts[i][0], pts[i][1], pts[i0], pts[i1])
      if (d > max) { max = d; idx = i }
    }
    if (idx >= 0 && max > e2) {
      keep[idx] = 1
      stack.push([i0, idx], [idx, i1])
    }
  }
  return pts.filter((_, i) => keep[i])
}

export function closeRing (pts) {
  const r = pts.map((p) => [p[0], p[1]])
  if (r.length && (r[0][0] !== r[r.length - 1][0] || r[0][1] !== r[r.length - 1][1])) r.push([r[0][0], r[0][1]])
  return r
}

/** Rounds coordinates to 1/100 px: enough for level-0 pixels, and keeps documents small. */
export function round (g) {
  const r = (p) => (finite(p) ? [Math.round(p[0] * 100) / 100, Math.round(p[1] * 100) / 100] : p)
  const c = g.coordinates
  switch (g.type) {
    case 'Point': return { type: g.type, coordinates: r(c) }
    case 'MultiPoint': case 'LineString': return { type: g.type, coordinates: c.map(r) }
    case 'MultiLineString': case 'Polygon': return { type: g.type, coordinates: c.map((l) => l.map(r)) }
    case 'MultiPolygon': return { type: g.type, coordinates: c.map((p) => p.map((l) => l.map(r))) }
    default: return g
  }
}

// ---- formatting ---------------------------------------------------------------------------

const nf = (v, digits) => v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 })

export function formatLength (um) {
  if (!Number.isFinite(um)) return '–'
  if (um >= 1000) return `${nf(um / 1000, um >= 10000 ? 2 : 3)} mm`
  return `${nf(um, um >= 100 ? 1 : 2)} µm`
}

export function formatArea (um2) {
  if (!Number.isFinite(um2)) return '–'
  if (um2 >= 1e5) return `${nf(um2 / 1e6, um2 >= 1e7 ? 2 : 4)} mm²`
  return `${nf(um2, um2 >= 100 ? 0 : 2)} µm²`
}
