// Keyboard shortcuts of the slide view, and the help panel's list of them.
import { TOOLS } from './tools.js'

/** Keys OpenSeadragon navigates with (when the image has focus): they end "follow". */
export const NAV_KEYS = new Set(['ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'w', 'a', 's', 'd', 'W', 'A', 'S', 'D', '+', '-', '=', '_', '0'])

/** [key, what it does] for the help panel. */
export function shortcuts (canEdit) {
  return [
    ...TOOLS.filter((t) => !t.edit || canEdit).map((t) => [t.key.toUpperCase(), t.label]),
    ...(canEdit
      ? [['Del', 'Delete the selected annotation'], ['Ctrl+Z', 'Undo my last change'], ['Ctrl+Shift+Z', 'Redo'],
          ['Enter', 'Finish a polygon (or double click)'], ['Backspace', 'Remove the last polygon point']]
      : []),
    ['Esc', 'Cancel drawing, deselect, stop following'], ['H', 'Hide/show annotations'],
    ['[ ]', 'Rotate 90°'], ['+ − 0', 'Zoom in, out, whole slide (when the image has focus)'], ['?', 'This help'],
  ]
}

/** Listens on the window (capture phase, so OpenSeadragon's own r/f keys never fire); returns the remover. */
export function bindKeyboard (view) {
  const onKey = (e) => handleKey(view, e)
  window.addEventListener('keydown', onKey, true)
  return () => window.removeEventListener('keydown', onKey, true)
}

export function handleKey (view, e) {
  const t = e.target
  if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) {
    if (e.key === 'Escape') t.blur()
    return
  }
  const tools = view.tools
  const mod = e.ctrlKey || e.metaKey
  const k = e.key
  let handled = true
  if (mod && (k === 'z' || k === 'Z')) {
    if (e.shiftKey) view.redo(); else view.undo()
  } else if (mod && (k === 'y' || k === 'Y')) {
    view.redo()
  } else if (mod || e.altKey) {
    handled = false
  } else if (k === '?') {
    view.toggleHelp()
  } else if (k === 'Escape') {
    if (!view.el.help.hidden) view.toggleHelp(false)
    else if (!tools.cancelDraft()) {
      if (view.selectedId) view.select(null)
      else if (view.follow.following != null) view.follow.stop()
      else if (tools.tool !== 'select') tools.setTool('select')
    }
  } else if (k === 'Enter' && tools.draft && tools.draft.kind === 'polygon') {
    tools.finishPolygon()
  } else if (k === 'Backspace' && tools.removeLastVertex()) {
    // removed the last polygon vertex
  } else if (k === 'Delete' || k === 'Backspace') {
    view.deleteSelected()
  } else if (k === '[' || k === ']') {
    view.rotateBy(k === '[' ? -90 : 90); view.userNavigated()
  } else if (k.length === 1 && TOOLS.some((x) => x.key === k.toLowerCase())) {
    // Tool keys (also keeps OpenSeadragon's own r/f = rotate/flip from firing).
    tools.setTool(TOOLS.find((x) => x.key === k.toLowerCase()).id)
  } else if (k === 'h' || k === 'H') {
    view.toggleAnnotations()
  } else {
    handled = false
  }
  if (handled) {
    e.preventDefault()
    e.stopPropagation()
  }
}
