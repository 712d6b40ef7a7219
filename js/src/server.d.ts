// Types of createServerClient. RT is the channel map, e.g. the RealtimeTypes that
// `flask-impulse typescript` generates: a payload of the wrong type fails tsc.

export interface ServerClientOptions {
  /** BASE: where the service is mounted, e.g. 'http://localhost:8080/'. */
  serviceUrl: string
  /** The push secret (sent as a Bearer token). */
  token?: string
  /** Per-attempt timeout in ms (default 10000). */
  timeout?: number
  /** Attempts in all for a push whose outcome is unknown (default 5). */
  maxAttempts?: number
  /** No attempt starts later than this many ms after the first (default 30000). */
  retryDeadline?: number
  /** First wait between attempts in ms, doubled per attempt, with jitter (default 200). */
  backoff?: number
  /** Longest wait between attempts in ms, Retry-After included (default 5000). */
  maxBackoff?: number
}

export interface PushOptions {
  /** Only the connections subscribed with one of these tokens receive it. */
  tokens?: string | string[]
  /** Only the connections subscribed with this topic receive it. */
  topic?: string
  /** The audience object as the official client takes it (merged with tokens and topic). */
  audience?: { tokens?: string | string[]; topic?: string }
  /** A repeat within the service's window delivers nothing (default: a fresh UUID). */
  idempotencyKey?: string
}

export type PushEvent<RT> = {
  [K in keyof RT & string]: { channel: K; payload: RT[K] } & PushOptions
}[keyof RT & string]

export interface PushResult {
  /** The message id (empty from a server that issues none). */
  id: string
  /** The connections the message was written to; for a duplicate, as counted the first time. */
  sent: number
  /** True when the service had already accepted this idempotency key: nothing was delivered now. */
  duplicate: boolean
}

export interface ServerClient<RT> {
  push<K extends keyof RT & string>(channel: K, payload: RT[K], options?: PushOptions): Promise<number>
  publish<K extends keyof RT & string>(channel: K, payload: RT[K], options?: PushOptions): Promise<PushResult>
  /** Several messages in one request. */
  pushMany(events: Iterable<PushEvent<RT>>): Promise<number[]>
  publishMany(events: Iterable<PushEvent<RT>>): Promise<PushResult[]>
  /** Attempts made after a first one failed, since this client was created. */
  readonly retries: number
}

export declare class ServerClientError extends Error {
  /** The HTTP status, or 0 when the service could not be reached. */
  status: number
  details?: unknown
}

export declare const RETRIED_STATUSES: ReadonlySet<number>

export declare function createServerClient<RT = Record<string, any>>(options: ServerClientOptions): ServerClient<RT>
