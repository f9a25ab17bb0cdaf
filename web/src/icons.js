// Inline SVG icons (24x24, stroke = currentColor): no image files to ship.
const svg = (body) => `<svg viewBox="0 0 24 24" width="20" height="20" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">${body}</svg>`

export const ICONS = {
  select: svg('<path d="M5 3l6 17 2.5-7L20 10.5z"/>'),
  point: svg('<circle cx="12" cy="12" r="3.5" fill="currentColor"/><circle cx="12" cy="12" r="8"/>'),
  rectangle: svg('<rect x="4" y="6" width="16" height="12" rx="1"/>'),
  polygon: svg('<path d="M5 8l7-4 7 5-2 10H7z"/><circle cx="5" cy="8" r="1.3" fill="currentColor"/><circle cx="12" cy="4" r="1.3" fill="currentColor"/><circle cx="19" cy="9" r="1.3" fill="currentColor"/>'),
  freehand: svg('<path d="M4 15c2-6 5-9 8-7s-1 7 2 8 4-5 6-6"/>'),
  line: svg('<path d="M4 20L20 4"/><path d="M7 17l-2-2M10 14l-1.5-1.5M13 11l-2-2M16 8l-1.5-1.5"/>'),
  trash: svg('<path d="M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13"/>'),
  undo: svg('<path d="M9 14L4 9l5-5"/><path d="M4 9h10a6 6 0 010 12h-3"/>'),
  redo: svg('<path d="M15 14l5-5-5-5"/><path d="M20 9H10a6 6 0 000 12h3"/>'),
  zoomIn: svg('<circle cx="11" cy="11" r="7"/><path d="M21 21l-5-5M8 11h6M11 8v6"/>'),
  zoomOut: svg('<circle cx="11" cy="11" r="7"/><path d="M21 21l-5-5M8 11h6"/>'),
  home: svg('<path d="M4 11l8-7 8 7M6 9.5V20h12V9.5"/>'),
  rotL: svg('<rect x="9" y="10" width="11" height="10" rx="1"/><path d="M4 12a8 8 0 0 1 9-8"/><path d="M2 9l2 3 3-2"/>'),
  rotR: svg('<rect x="4" y="10" width="11" height="10" rx="1"/><path d="M20 12a8 8 0 0 0-9-8"/><path d="M22 9l-2 3-3-2"/>'),
  lock: svg('<rect x="5" y="11" width="14" height="9" rx="1.5"/><path d="M8 11V8a4 4 0 018 0v3"/>'),
  eye: svg('<path d="M2 12s4-7 10-7 10 7 10 7-4 7-10 7S2 12 2 12z"/><circle cx="12" cy="12" r="3"/>'),
}
