// The "Participants" panel: who is in the slide room, whom they follow, and a Follow button each.
import { h, clear } from '../dom.js'

export class ParticipantsPanel {
  /** @param {import('../slideview.js').SlideView} view */
  constructor (view, { list, count }) {
    this.view = view
    this.el = list
    this.countEl = count
  }

  render () {
    const view = this.view
    const presence = view.presence
    const list = presence.participants()
    const ul = clear(this.el)
    this.countEl.textContent = String(list.length)
    const me = view.awareness.clientID
    const followers = new Map()
    for (const p of list) if (p.following != null) followers.set(p.following, (followers.get(p.following) || []).concat(p.user.name))
    for (const p of list) {
      const u = p.user
      const isFollowed = view.follow.following === p.clientId
      const followingName = p.following != null ? (p.following === me ? 'you' : presence.nameOf(p.following)) : null
      ul.append(h('li.participant', {
        'data-testid': 'participant',
        'data-client-id': String(p.clientId),
        'data-user-id': u.id,
        'data-name': u.name,
        'data-site': u.site,
        'data-role': u.role,
        'data-following': p.following != null ? String(p.following) : '',
        class: p.isMe ? 'is-me' : '',
      },
      h('span.dot', { style: { background: u.color || '#888' }, title: u.color }),
      h('div.p-main', null,
        h('div.p-name', null, u.name, p.isMe && h('span.muted', null, ' (you)')),
        h('div.p-meta', null, h('span', null, u.site || '—'), ' · ', h('span.role', { 'data-testid': 'participant-role' }, u.role),
          followingName && h('span.following', { 'data-testid': 'participant-following' }, ` · following ${followingName}`),
          followers.get(p.clientId) && h('span.followed', null, ` · followed by ${followers.get(p.clientId).join(', ')}`))),
      !p.isMe && h('button.follow-btn', {
        'data-testid': 'follow-button',
        'aria-pressed': String(isFollowed),
        class: isFollowed ? 'active' : '',
        title: isFollowed ? `Stop following ${u.name}` : `Follow ${u.name}'s view`,
        on: { click: () => (isFollowed ? view.follow.stop() : view.follow.start(p.clientId)) },
      }, isFollowed ? 'Following' : 'Follow')))
    }
    view.follow.renderBanner()
  }
}
