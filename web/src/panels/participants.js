// The "Participants" panel: one row per person (several tabs of one user are one row), whom they
// follow, and a Follow button each (not in sessions, where the page has one follow control).
import { h, clear } from '../dom.js'

export class ParticipantsPanel {
  /** @param {import('../slideview.js').SlideView} view */
  constructor (view, { list, count }) {
    this.view = view
    this.el = list
    this.countEl = count
  }

  /** Participants grouped by user id, me first; `clientIds` lists every connection of the person. */
  people () {
    const byUser = new Map()
    for (const p of this.view.presence.participants()) {
      const key = p.user.id || `client:${p.clientId}`
      const g = byUser.get(key)
      if (!g) byUser.set(key, { ...p, clientIds: [p.clientId] })
      else {
        g.clientIds.push(p.clientId)
        if (p.isMe) Object.assign(g, { ...p, clientIds: g.clientIds })
        if (g.following == null && p.following != null) g.following = p.following
      }
    }
    return [...byUser.values()]
  }

  render () {
    const view = this.view
    const presence = view.presence
    const people = this.people()
    const ul = clear(this.el)
    this.countEl.textContent = String(people.length)
    const me = view.awareness.clientID
    const userOf = new Map()
    for (const g of people) for (const c of g.clientIds) userOf.set(c, g)
    const followers = new Map()
    for (const g of people) {
      const t = g.following != null && userOf.get(g.following)
      if (t) followers.set(t.user.id, (followers.get(t.user.id) || []).concat(g.user.name))
    }
    const presenterId = view.presenterId ? view.presenterId() : null
    for (const g of people) {
      const u = g.user
      const isFollowed = view.follow.isFollowing(u.id)
      const followed = g.following != null ? userOf.get(g.following) : null
      const followingName = g.following != null ? (g.following === me || (followed && followed.isMe) ? 'you' : (followed ? followed.user.name : presence.nameOf(g.following))) : null
      const isPresenter = presenterId != null && u.id === presenterId
      const tabs = g.clientIds.length
      ul.append(h('li.participant', {
        'data-testid': 'participant',
        'data-client-id': String(g.clientId),
        'data-client-ids': g.clientIds.join(' '),
        'data-user-id': u.id,
        'data-name': u.name,
        'data-site': u.site,
        'data-role': u.role,
        'data-presenter': String(isPresenter),
        'data-following': g.following != null ? String(g.following) : '',
        class: g.isMe ? 'is-me' : '',
      },
      h('span.dot', { style: { background: u.color || '#888' }, title: u.color }),
      h('div.p-main', null,
        h('div.p-name', { title: `${u.name}${u.site ? ` (${u.site})` : ''}` }, u.name, g.isMe && h('span.muted', null, ' (you)'),
          // Only the current presenter (the session's `state.presenter`) is labelled so, whatever
          // the roles of the others who may present.
          isPresenter && h('span.badge.presenter-badge', { 'data-testid': 'participant-presenter' }, 'Presenter'),
          tabs > 1 && h('span.muted.tabs', { title: `${tabs} tabs or windows` }, ` · ${tabs} tabs`)),
        h('div.p-meta', null, h('span', { title: u.site || '' }, u.site || '—'), ' · ', h('span.role', { 'data-testid': 'participant-role' }, roleText(u.role, presenterId != null)),
          followingName && h('span.following', { 'data-testid': 'participant-following' }, ` · following ${followingName}`),
          followers.get(u.id) && h('span.followed', null, ` · followed by ${followers.get(u.id).join(', ')}`))),
      !g.isMe && view.followButtons && h('button.follow-btn', {
        'data-testid': 'follow-button',
        'aria-pressed': String(isFollowed),
        class: isFollowed ? 'active' : '',
        title: isFollowed ? `Stop following ${u.name}` : `Follow ${u.name}'s view`,
        on: { click: () => (isFollowed ? view.follow.stop() : view.follow.start(g.clientId)) },
      }, isFollowed ? 'Following' : 'Follow')))
    }
    view.follow.renderBanner()
  }
}

/** In a session the role "presenter" means "may take over": the one presenting has the badge. */
function roleText (role, inSession) {
  return inSession && role === 'presenter' ? 'can present' : role
}
