// flask-impulse browser client: the Impulse Realtime client API of the documentation
// (createRealtimeClient with connection state, errors, retries, heartbeat and stats).
// The source of the npm package's `createRealtimeClient` and of the served BASE/client.js.
//
//   import { createRealtimeClient } from 'flask-impulse'   // or from 'https://realtime.example.com/client.js'
//   const client = createRealtimeClient({ serviceUrl: 'https://realtime.example.com/' })
//   const off = client.subscribe('chat:message', (event) => show(event.payload), { topic: 'room-1' })
//   client.onPresence('room:1', ({ member, action }) => showMember(member, action))   // join / leave
//
// Every subscription that shares a token and a topic shares ONE stream (`?channel=a&channel=b`),
// so a page is not held to the browser's six connections per origin over HTTP/1.1. When that
// set of channels changes, the new stream is opened before the old one is closed and messages
// that arrive on both are dropped by id, so nothing is lost on the switch. A dropped stream
// reconnects with exponential backoff and jitter and resumes after the last message it received.
//
// The stream is read with fetch() rather than EventSource: an EventSource hides the server's
// `: heartbeat` comments (so a silent, dead connection cannot be told from a quiet channel), the
// HTTP status of a refused stream, and the reconnect timing. Both speak the same wire protocol.

const STATE_ORDER = { disconnected: 0, connecting: 1, connected: 2 }
// How long a replaced stream is still read after its successor opened (duplicates are dropped by id).
const SWITCH_GRACE_MS = 1000
const RECENT_IDS = 2048

export class RealtimeError extends Error {
  constructor(message, { status, final = false, missedMessages = false } = {}) {
    super(message)
    this.name = 'RealtimeError'
    this.status = status
    this.final = final
    this.missedMessages = missedMessages
  }
}

export function createRealtimeClient(options) {
  if (!options || !options.serviceUrl) {
    throw new Error('serviceUrl is required')
  }
  const config = {
    retryAttempts: 5,
    retryDelay: 1000,
    heartbeatInterval: 30000,
    maxRetryDelay: 30000,
    debug: false,
    credentials: 'same-origin',
    ...options,
  }
  const groups = new Map()
  const stateCallbacks = new Set()
  const errorCallbacks = new Set()
  const counters = { messages: 0, reconnects: 0 }
  let state = 'disconnected'

  const log = (...args) => {
    if (config.debug) console.debug('[realtime]', ...args)
  }

  // -- subscriptions -------------------------------------------------------------------------
  function subscribe(channel, handler, subscribeOptions) {
    if (!channel || typeof channel !== 'string') {
      throw new Error('channel is required and must be a string')
    }
    if (typeof handler !== 'function') {
      throw new Error('handler must be a function')
    }
    const group = groupFor(subscribeOptions)
    let handlers = group.handlers.get(channel)
    if (!handlers) {
      handlers = new Set()
      group.handlers.set(channel, handlers)
      schedule(group)
    }
    // A handler subscribed twice is two subscriptions, each with its own unsubscribe.
    const entry = { handler }
    handlers.add(entry)
    let subscribed = true
    return () => {
      if (!subscribed) return
      subscribed = false
      const current = group.handlers.get(channel)
      if (current && current.delete(entry) && current.size === 0) {
        group.handlers.delete(channel)
        schedule(group)
      }
    }
  }

  // Join and leave on a presence channel (IMPULSE_PRESENCE_CHANNELS): the stream of this
  // token and topic then asks for them with ?presence=1. Messages still go to subscribe's
  // handlers only; presence handlers get { channel, member, action: 'join' | 'leave' }.
  function onPresence(channel, handler, subscribeOptions) {
    if (!channel || typeof channel !== 'string') {
      throw new Error('channel is required and must be a string')
    }
    if (typeof handler !== 'function') {
      throw new Error('handler must be a function')
    }
    const group = groupFor(subscribeOptions)
    const watched = group.presence.size > 0
    let handlers = group.presence.get(channel)
    if (!handlers) {
      handlers = new Set()
      group.presence.set(channel, handlers)
    }
    const entry = { handler }
    handlers.add(entry)
    if (!watched || !group.handlers.has(channel)) schedule(group)
    let subscribed = true
    return () => {
      if (!subscribed) return
      subscribed = false
      const current = group.presence.get(channel)
      if (current && current.delete(entry) && current.size === 0) {
        group.presence.delete(channel)
        schedule(group)
      }
    }
  }

  function groupFor(subscribeOptions) {
    const token = subscribeOptions?.token || null
    const topic = subscribeOptions?.topic || null
    const key = JSON.stringify([token, topic])
    let group = groups.get(key)
    if (!group) {
      group = newGroup(key, token, topic)
      groups.set(key, group)
    }
    return group
  }

  function unsubscribeAll(channel) {
    for (const group of groups.values()) {
      const removed = group.handlers.delete(channel)
      if (group.presence.delete(channel) || removed) schedule(group)
    }
  }

  function unsubscribeAllChannels() {
    for (const group of [...groups.values()]) {
      group.handlers.clear()
      group.presence.clear()
      closeGroup(group)
    }
  }

  function onConnectionState(callback) {
    stateCallbacks.add(callback)
    return () => stateCallbacks.delete(callback)
  }

  function onError(callback) {
    errorCallbacks.add(callback)
    return () => errorCallbacks.delete(callback)
  }

  function getStats() {
    let subscriptions = 0
    let channels = 0
    let connections = 0
    let lastEventId = null
    for (const group of groups.values()) {
      channels += group.handlers.size
      for (const handlers of group.handlers.values()) subscriptions += handlers.size
      for (const stream of group.streams) if (stream.open) connections += 1
      if (group.lastEventId) lastEventId = group.lastEventId
    }
    return { state, subscriptions, channels, connections, ...counters, lastEventId }
  }

  // -- groups: the subscriptions of one token and topic, and their one stream ---------------
  function newGroup(key, token, topic) {
    return {
      key,
      token,
      topic,
      handlers: new Map(),
      presence: new Map(),
      streams: new Set(),
      current: null,
      state: 'connecting',
      lastEventId: '',
      recent: new Set(),
      retries: 0,
      timer: null,
      scheduled: false,
      closed: false,
    }
  }

  // Changes made in one task (eight subscribe calls in a row) open one stream, not eight.
  function schedule(group) {
    if (group.scheduled) return
    group.scheduled = true
    queueMicrotask(() => {
      group.scheduled = false
      sync(group)
    })
  }

  // Every channel the group's stream must carry: those with message or presence handlers.
  function groupChannels(group) {
    return [...new Set([...group.handlers.keys(), ...group.presence.keys()])].sort()
  }

  function sync(group) {
    if (group.closed) return
    const channels = groupChannels(group)
    if (channels.length === 0) {
      closeGroup(group)
      return
    }
    const current = group.current
    if (current && sameChannels(current.channels, channels) && current.presence === group.presence.size > 0) return
    if (group.timer) return // a reconnect is pending: it will open the current set
    if (current && current.open) {
      log('switching stream to', channels)
      openStream(group, channels, '', current)
    } else if (current && current.previous && !current.previous.retired) {
      // The set changed again while a replacement was opening: replace the replacement.
      retire(current, 0)
      openStream(group, channels, '', current.previous)
    } else {
      if (current) retire(current, 0)
      openStream(group, channels, group.lastEventId, null)
    }
  }

  function closeGroup(group) {
    group.closed = true
    clearTimeout(group.timer)
    group.timer = null
    for (const stream of group.streams) retire(stream, 0)
    group.current = null
    groups.delete(group.key)
    updateState()
  }

  function openStream(group, channels, lastEventId, previous) {
    const url = new URL(config.serviceUrl, globalThis.location?.href)
    for (const channel of channels) url.searchParams.append('channel', channel)
    if (group.token) url.searchParams.set('token', group.token)
    if (group.topic) url.searchParams.set('topic', group.topic)
    const presence = group.presence.size > 0
    if (presence) url.searchParams.set('presence', '1')
    if (lastEventId) url.searchParams.set('lastEventId', lastEventId)
    const stream = {
      channels,
      presence,
      previous,
      controller: new AbortController(),
      open: false,
      retired: false,
      watchdog: null,
      watchdogFired: false,
      retryMs: null,
    }
    group.streams.add(stream)
    group.current = stream
    if (!previous) setGroupState(group, 'connecting')
    log('opening', url.toString())
    read(group, stream, url)
  }

  async function read(group, stream, url) {
    try {
      const response = await fetch(url, {
        headers: { Accept: 'text/event-stream' },
        cache: 'no-store',
        credentials: config.credentials,
        signal: stream.controller.signal,
      })
      if (!response.ok) throw await refused(response)
      const contentType = response.headers.get('Content-Type') || ''
      if (!contentType.startsWith('text/event-stream')) {
        throw new RealtimeError(`not an event stream: Content-Type ${contentType}`, { final: true })
      }
      stream.open = true
      if (group.current === stream) {
        group.retries = 0
        setGroupState(group, 'connected')
      }
      if (stream.previous) retire(stream.previous, SWITCH_GRACE_MS)
      stream.previous = null
      const reader = response.body.getReader()
      const decoder = new TextDecoder()
      const parser = new EventParser((event) => dispatch(group, event, stream), (retry) => (stream.retryMs = retry))
      armWatchdog(stream)
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        armWatchdog(stream)
        parser.feed(decoder.decode(value, { stream: true }))
      }
      throw new RealtimeError('the server closed the stream')
    } catch (error) {
      clearTimeout(stream.watchdog)
      group.streams.delete(stream)
      if (stream.retired) return // closed on purpose: a switch, an unsubscribe, close()
      stream.retired = true
      const failure = error instanceof RealtimeError ? error : new RealtimeError(describe(error, stream))
      if (group.current !== stream) {
        report(failure)
        return
      }
      // A replacement that never opened takes the stream it was replacing down with it: the
      // reconnect below resumes both from the last message received.
      if (stream.previous) retire(stream.previous, 0)
      group.current = null
      streamFailed(group, stream, failure)
    } finally {
      updateState()
    }
  }

  function describe(error, stream) {
    if (stream.watchdogFired) {
      return `no data for ${(2 * config.heartbeatInterval) / 1000} s (two heartbeat intervals): reconnecting`
    }
    return `cannot reach ${config.serviceUrl}: ${error?.message || error}`
  }

  async function refused(response) {
    let message = response.statusText
    try {
      const body = await response.json()
      if (body && body.error) message = body.error
    } catch {
      // not JSON: keep the status text
    }
    const status = response.status
    const retryAfter = Number(response.headers.get('Retry-After'))
    // Overload and rate limits pass; a bad request, a refused token or a wrong URL do not.
    const final = status >= 400 && status < 500 && status !== 408 && status !== 429
    const error = new RealtimeError(`HTTP ${status}: ${message}`, { status, final })
    if (retryAfter > 0) error.retryAfterMs = retryAfter * 1000
    return error
  }

  function armWatchdog(stream) {
    clearTimeout(stream.watchdog)
    // A live stream carries a heartbeat every interval: two silent intervals mean a dead one.
    stream.watchdog = setTimeout(() => {
      stream.watchdogFired = true
      stream.controller.abort()
    }, 2 * config.heartbeatInterval)
  }

  function retire(stream, delayMs) {
    if (stream.retired) return
    stream.retired = true
    const stop = () => {
      clearTimeout(stream.watchdog)
      stream.controller.abort()
    }
    if (delayMs > 0) setTimeout(stop, delayMs)
    else stop()
  }

  // Each error is reported once: a final one by giveUp, a passing one here before the retry.
  function streamFailed(group, stream, error) {
    if (error.final) return giveUp(group, error)
    if (group.retries >= config.retryAttempts) {
      return giveUp(
        group,
        new RealtimeError(`gave up after ${group.retries} reconnect attempts: ${error.message}`, {
          status: error.status,
          final: true,
        }),
      )
    }
    report(error)
    group.retries += 1
    setGroupState(group, 'disconnected')
    const delay = error.retryAfterMs ?? stream.retryMs ?? backoff(group.retries)
    log(`reconnecting in ${Math.round(delay)} ms (attempt ${group.retries} of ${config.retryAttempts})`)
    group.timer = setTimeout(() => {
      group.timer = null
      if (group.closed) return
      counters.reconnects += 1
      const channels = groupChannels(group)
      if (channels.length === 0) closeGroup(group)
      else openStream(group, channels, group.lastEventId, null)
    }, delay)
  }

  function backoff(attempt) {
    const base = Math.min(config.maxRetryDelay, config.retryDelay * 2 ** (attempt - 1))
    return base / 2 + Math.random() * (base / 2)
  }

  function giveUp(group, error) {
    report(error)
    setGroupState(group, 'disconnected')
  }

  // -- messages ------------------------------------------------------------------------------
  function dispatch(group, event, stream) {
    if (event.event === 'gap') {
      report(new RealtimeError("missed messages: the server's history no longer holds them", { missedMessages: true }))
      return
    }
    if (event.event === 'presence') {
      // No id to drop a copy by: while a replaced stream is still read, only its open successor is heard.
      const current = group.current
      if (!current || current === stream || !current.open) dispatchPresence(group, event)
      return
    }
    if (event.event !== 'message') return
    if (event.id) {
      if (group.recent.has(event.id)) return
      group.recent.add(event.id)
      if (group.recent.size > RECENT_IDS) group.recent.delete(group.recent.values().next().value)
      group.lastEventId = event.id
    }
    let data
    try {
      data = JSON.parse(event.data)
    } catch (error) {
      report(new RealtimeError(`unreadable message: ${error.message}`))
      return
    }
    const handlers = group.handlers.get(data?.channel)
    counters.messages += 1
    if (!handlers) return
    const delivered = { channel: data.channel, payload: data.payload, id: event.id || undefined, topic: group.topic || undefined }
    for (const { handler } of [...handlers]) {
      try {
        handler(delivered)
      } catch (error) {
        report(error instanceof Error ? error : new Error(String(error)))
      }
    }
  }

  function dispatchPresence(group, event) {
    let data
    try {
      data = JSON.parse(event.data)
    } catch (error) {
      report(new RealtimeError(`unreadable presence event: ${error.message}`))
      return
    }
    const handlers = group.presence.get(data?.channel)
    if (!handlers) return
    const delivered = { channel: data.channel, member: data.member, action: data.action }
    for (const { handler } of [...handlers]) {
      try {
        handler(delivered)
      } catch (error) {
        report(error instanceof Error ? error : new Error(String(error)))
      }
    }
  }

  // -- state and errors -----------------------------------------------------------------------
  function setGroupState(group, groupState) {
    group.state = groupState
    updateState()
  }

  function updateState() {
    let next = null
    for (const group of groups.values()) {
      if (next === null || STATE_ORDER[group.state] < STATE_ORDER[next]) next = group.state
    }
    next = next ?? 'disconnected'
    if (next === state) return
    state = next
    log('connection state:', state)
    for (const callback of [...stateCallbacks]) {
      try {
        callback(state)
      } catch (error) {
        console.error('Error in onConnectionState callback:', error)
      }
    }
  }

  function report(error) {
    log('error:', error.message)
    if (errorCallbacks.size === 0) {
      if (error.final) console.error('Realtime:', error.message)
      return
    }
    for (const callback of [...errorCallbacks]) {
      try {
        callback(error)
      } catch (callbackError) {
        console.error('Error in onError callback:', callbackError)
      }
    }
  }

  return {
    subscribe,
    onPresence,
    unsubscribe: unsubscribeAll,
    unsubscribeAll,
    unsubscribeAllChannels,
    onConnectionState,
    onError,
    getStats,
    close: unsubscribeAllChannels,
  }
}

function sameChannels(a, b) {
  return a.length === b.length && a.every((channel, index) => channel === b[index])
}

// The event-stream parsing rules of the HTML standard, fed text in chunks of any size.
class EventParser {
  constructor(onEvent, onRetry) {
    this.onEvent = onEvent
    this.onRetry = onRetry
    this.buffer = ''
    this.data = []
    this.event = ''
    this.id = ''
    this.started = false
  }

  feed(text) {
    this.buffer += text
    if (!this.started && this.buffer.length > 0) {
      this.started = true
      if (this.buffer.charCodeAt(0) === 0xfeff) this.buffer = this.buffer.slice(1)
    }
    let start = 0
    for (;;) {
      const match = /\r\n|\r|\n/g
      match.lastIndex = start
      const found = match.exec(this.buffer)
      if (!found) break
      // A CR at the very end may be the first half of a CRLF: wait for the next chunk.
      if (found[0] === '\r' && found.index === this.buffer.length - 1) break
      this.line(this.buffer.slice(start, found.index))
      start = found.index + found[0].length
    }
    this.buffer = this.buffer.slice(start)
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0) {
        this.onEvent({ event: this.event || 'message', data: this.data.join('\n'), id: this.id })
      }
      this.data = []
      this.event = ''
      return
    }
    if (line.startsWith(':')) return
    const colon = line.indexOf(':')
    const name = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (name === 'data') this.data.push(value)
    else if (name === 'event') this.event = value
    else if (name === 'id' && !value.includes('\0')) this.id = value
    else if (name === 'retry' && /^\d+$/.test(value)) this.onRetry(Number(value))
  }
}
