// The updates a fan50 writer of the shared harness (fanout.mjs) sends, written out for
// bench/update_read_bench.py: the same seeded payload generator (mulberry32, seed 42), the same
// annotation shape (a 50-vertex polygon as a plain JSON value in Y.Map 'annotations', keyed by a
// random UUID), one Yjs transaction per annotation, captured from the writer's doc.on('update').
//
//   node bench/work/fan50_updates.mjs N VERTICES OUT   (a copy in bench/work, where yjs is installed:
//   ESM resolves imports next to the script; update_read_bench.py makes the copy)
import { writeFileSync } from 'node:fs'
import { randomUUID } from 'node:crypto'
import * as Y from 'yjs'

const [n = '2000', vertices = '50', out = 'fan50-updates.bin'] = process.argv.slice(2)
const VERTICES = Number(vertices)

// Copied from fanout.mjs (deterministic payloads), unchanged.
function mulberry32 (a) {
  return function () {
    a |= 0; a = a + 0x6D2B79F5 | 0
    let t = Math.imul(a ^ a >>> 15, 1 | a)
    t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t
    return ((t ^ t >>> 14) >>> 0) / 4294967296
  }
}
const rnd = mulberry32(42)
const CLASSES = ['tumor', 'stroma', 'necrosis', 'lymphocytes', 'normal', 'other']
function makeAnnotation (author) {
  const cx = rnd() * 100000
  const cy = rnd() * 100000
  const r = 50 + rnd() * 500
  const ring = new Array(VERTICES)
  for (let i = 0; i < VERTICES; i++) {
    const a = (2 * Math.PI * i) / VERTICES
    const rr = r * (0.8 + 0.4 * rnd())
    ring[i] = [Math.round((cx + rr * Math.cos(a)) * 100) / 100, Math.round((cy + rr * Math.sin(a)) * 100) / 100]
  }
  return {
    geometry: { type: 'Polygon', coordinates: [ring] },
    label: 'region-' + Math.floor(rnd() * 1e6),
    classification: CLASSES[Math.floor(rnd() * CLASSES.length)],
    author,
    t: 0
  }
}

const doc = new Y.Doc()
const map = doc.getMap('annotations')
const updates = []
doc.on('update', (u) => updates.push(u))
for (let i = 0; i < Number(n); i++) {
  const a = makeAnnotation('writer-0')
  a.t = performance.now()
  map.set(randomUUID(), a)
}
// Length-prefixed (4 bytes, little-endian) updates, in the order sent.
const parts = []
for (const u of updates) {
  const len = Buffer.alloc(4); len.writeUInt32LE(u.length)
  parts.push(len, Buffer.from(u))
}
writeFileSync(out, Buffer.concat(parts))
console.log(`${updates.length} updates, ${Buffer.concat(parts).length} bytes -> ${out}`)
