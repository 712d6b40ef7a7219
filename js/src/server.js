// createServerClient: push from a Node backend (or any runtime with fetch), the twin of the
// Python ServerClient. Every push carries an idempotency key, a fresh UUID unless the caller
// gives one, so a push whose outcome is unknown (a network error, a timeout, a 502, 503 or
// 504) is retried under the same key and delivered at most once: up to `maxAttempts` attempts,
// none started later than `retryDeadline` ms after the first, waiting backoff * 2**(n-1) ms (at
// most `maxBackoff`, jittered between half of it and all of it, or the answer's Retry-After up
// to `maxBackoff`) in between. A 4xx is never retried.
//
//   const server = createServerClient({ serviceUrl: 'http://localhost:8080/', token: process.env.REALTIME_SECRET })
//   await server.push('chat:message', { text: 'hi' }, { topic: 'room-42' })

// A proxy that lost the upstream (502, 504) or the service's "retry later" (503): the push may
// or may not have run, so the same key is sent again.
export const RETRIED_STATUSES = new Set([502, 503, 504])

export class ServerClientError extends Error {
  constructor(status, message, details) {
    super(status ? `HTTP ${status}: ${message}` : message)
    this.name = 'ServerClientError'
    this.status = status
    this.details = details
  }
}

export function createServerClient(options) {
  if (!options || !options.serviceUrl) {
    throw new Error('serviceUrl is required')
  }
  const config = {
    timeout: 10000,
    maxAttempts: 5,
    retryDeadline: 30000,
    backoff: 200,
    maxBackoff: 5000,
    ...options,
  }
  if (config.maxAttempts < 1 || config.retryDeadline < 0 || config.backoff < 0 || config.maxBackoff < 0) {
    throw new Error('maxAttempts must be at least 1; retryDeadline, backoff and maxBackoff not negative')
  }
  const headers = { 'Content-Type': 'application/json' }
  if (config.token) headers.Authorization = `Bearer ${config.token}`
  const stats = { retries: 0 }

  async function publish(channel, payload, pushOptions = {}) {
    const key = checkKey(pushOptions.idempotencyKey) ?? crypto.randomUUID()
    const body = pushBody({ channel, payload, ...pushOptions })
    return result(await post(body, { 'Idempotency-Key': quoted(key) }))
  }

  async function publishMany(events) {
    const batch = [...events].map((event) => ({
      ...pushBody(event),
      idempotencyKey: checkKey(event.idempotencyKey) ?? crypto.randomUUID(),
    }))
    if (batch.length === 0) return []
    const answer = await post(batch, {})
    return answer.results.map(result)
  }

  async function post(body, extraHeaders) {
    const data = JSON.stringify(body)
    const started = Date.now()
    for (let attempt = 1; ; attempt += 1) {
      let failure
      let retryAfterMs = null
      try {
        const response = await fetch(config.serviceUrl, {
          method: 'POST',
          headers: { ...headers, ...extraHeaders },
          body: data,
          signal: AbortSignal.timeout(config.timeout),
        })
        if (!RETRIED_STATUSES.has(response.status)) return await answer(response)
        failure = await refusal(response)
        retryAfterMs = retryAfter(response.headers.get('Retry-After'))
      } catch (error) {
        if (error instanceof ServerClientError) throw error
        if (error instanceof TypeError && error.cause === undefined) throw error // a bad URL: retrying cannot help
        failure = new ServerClientError(0, `cannot reach ${config.serviceUrl}: ${error.cause?.message || error.message}`)
        failure.cause = error
      }
      const wait = delay(attempt, retryAfterMs)
      if (attempt >= config.maxAttempts || Date.now() + wait - started > config.retryDeadline) throw failure
      stats.retries += 1
      await new Promise((resolve) => setTimeout(resolve, wait))
    }
  }

  // Exponential backoff with jitter, so that publishers who failed together come back apart.
  function delay(attempt, retryAfterMs) {
    const backoff = Math.min(config.maxBackoff, config.backoff * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2)
    if (retryAfterMs === null) return backoff
    return Math.max(backoff, Math.min(retryAfterMs, config.maxBackoff))
  }

  return {
    /** Publish one message; resolve to how many connections it was written to. */
    push: async (channel, payload, pushOptions) => (await publish(channel, payload, pushOptions)).sent,
    publish,
    /** Publish several messages in ONE request; resolve to what each was written to. */
    pushMany: async (events) => (await publishMany(events)).map((each) => each.sent),
    publishMany,
    get retries() {
      return stats.retries
    },
  }
}

function pushBody({ channel, payload, tokens, topic, audience }) {
  if (!channel || typeof channel !== 'string') throw new Error('channel is required and must be a string')
  const body = { channel, payload: payload === undefined ? null : payload }
  const target = audience ? { ...audience } : {}
  if (tokens !== undefined && tokens !== null) target.tokens = typeof tokens === 'string' ? tokens : [...tokens]
  if (topic !== undefined && topic !== null) target.topic = topic
  if (Object.keys(target).length > 0) body.audience = target
  return body
}

function checkKey(key) {
  if (key === undefined || key === null) return undefined
  // The service's rule, checked here so that a bad key fails with it rather than as a 400.
  if (typeof key !== 'string' || !/^[\x20-\x7e]{1,255}$/.test(key)) {
    throw new Error('idempotencyKey must be 1 to 255 printable ASCII characters')
  }
  return key
}

// The key as the structured-field string of the IETF draft's header: a comma or a quote stays whole.
function quoted(key) {
  return `"${key.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`
}

function result(answer) {
  return { id: String(answer.id ?? ''), sent: Number(answer.sent), duplicate: answer.duplicate === true }
}

async function answer(response) {
  if (!response.ok) throw await refusal(response)
  try {
    return await response.json()
  } catch {
    return {}
  }
}

async function refusal(response) {
  let body = {}
  try {
    body = await response.json()
  } catch {
    // not JSON: the status text says it
  }
  const error = body && typeof body === 'object' ? body.error : undefined
  return new ServerClientError(response.status, error || response.statusText || 'error', body?.details)
}

// Milliseconds a Retry-After header asks for: a number of seconds or an HTTP date.
function retryAfter(value) {
  if (!value) return null
  const seconds = Number(value)
  if (Number.isFinite(seconds)) return Math.max(seconds * 1000, 0)
  const when = Date.parse(value)
  return Number.isNaN(when) ? null : Math.max(when - Date.now(), 0)
}
