// QuPath's default classifications and colors ([r, g, b]), in QuPath's order.
export const CLASSES = [
  { name: 'Tumor', color: [200, 0, 0] },
  { name: 'Stroma', color: [150, 200, 150] },
  { name: 'Immune cells', color: [160, 90, 160] },
  { name: 'Necrosis', color: [50, 50, 50] },
  { name: 'Other', color: [255, 200, 0] },
  { name: 'Region*', color: [0, 0, 180] },
  { name: 'Ignore*', color: [180, 180, 180] },
  { name: 'Positive', color: [200, 50, 50] },
  { name: 'Negative', color: [112, 112, 225] },
]

// Unclassified shapes get a neutral pale yellow, not QuPath's default red, which beside Tumor's
// rgb(200,0,0) read as "tumor" at the board (only the client's drawing color: nothing is stored).
export const UNCLASSIFIED_COLOR = [235, 225, 120]

export function classByName (name) {
  return CLASSES.find((c) => c.name === name) || null
}

/** A usable [r, g, b] from a classification written by any client (QuPath form). */
export function colorOf (classification) {
  const c = classification && classification.color
  if (Array.isArray(c) && c.length >= 3 && c.slice(0, 3).every((v) => Number.isFinite(Number(v)))) {
    return c.slice(0, 3).map(Number)
  }
  // QuPath also writes packed integer colors in some exports.
  if (Number.isInteger(c)) return [(c >> 16) & 255, (c >> 8) & 255, c & 255]
  if (classification && classification.name) {
    const known = classByName(classification.name)
    if (known) return known.color
  }
  return UNCLASSIFIED_COLOR
}
