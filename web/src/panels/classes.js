// The "Classification" panel: the class for new shapes and the selected one (editors only).
import { h, clear, rgb } from '../dom.js'
import { CLASSES, UNCLASSIFIED_COLOR } from '../classes.js'

export class ClassesPanel {
  /** @param {import('../slideview.js').SlideView} view */
  constructor (view, el) {
    this.view = view
    this.el = el
  }

  render () {
    const view = this.view
    if (!view.canEdit) return
    const box = clear(this.el)
    const cur = view.currentClass ? view.currentClass.name : null
    const chip = (cls) => h('button.class-chip', {
      'data-testid': `class-${cls ? cls.name : 'none'}`,
      'aria-pressed': String((cls ? cls.name : null) === cur),
      class: (cls ? cls.name : null) === cur ? 'active' : '',
      title: cls ? `${cls.name}: for new shapes and the selected one` : 'No classification',
      on: { click: () => view.setClass(cls) },
    }, h('span.swatch', { style: { background: rgb(cls ? cls.color : UNCLASSIFIED_COLOR), borderStyle: cls ? 'solid' : 'dashed' } }), cls ? cls.name : 'Unclassified')
    box.append(chip(null), ...CLASSES.map(chip))
    box.append(h('p.hint', null, 'Applies to new shapes and to the selected one.'))
  }
}
