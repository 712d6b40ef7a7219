// Built from js/src/realtime.js by `npm run build` in js/: edit that file, not this one.
// Types of the flask-impulse browser client (the npm package's createRealtimeClient, and
// client.js served at BASE/client.js). RT is the channel map, e.g. the RealtimeTypes that
// `flask-impulse typescript` generates.

export type ConnectionState = 'connecting' | 'connected' | 'disconnected'

export interface RealtimeClientOptions {
  /** BASE: where the stream endpoint is mounted, e.g. 'http://localhost:8080/'. */
  serviceUrl: string
  /** Reconnect attempts after a stream drops, before giving up (default 5). */
  retryAttempts?: number
  /** First reconnect delay in ms, doubled per attempt, with jitter (default 1000). */
  retryDelay?: number
  /** Longest reconnect delay in ms (default 30000). */
  maxRetryDelay?: number
  /** The server's heartbeat interval in ms: two of them without a byte mean a dead stream (default 30000). */
  heartbeatInterval?: number
  /** Log what the client does with console.debug. */
  debug?: boolean
  /** fetch() credentials mode for the stream (default 'same-origin'). */
  credentials?: RequestCredentials
}

export interface RealtimeEvent<RT, K extends keyof RT> {
  channel: K
  payload: RT[K]
  /** The message id (what a resume starts after). */
  id?: string
  /** The topic the subscription was made with. */
  topic?: string
}

export interface EventHandler<RT, K extends keyof RT> {
  (event: RealtimeEvent<RT, K>): void
}

/** A member's first stream opened (join) or its last one ended (leave) on a presence channel. */
export interface PresenceEvent<K = string> {
  channel: K
  /** The member's identity: a token's subject, an authorize hook's subject, or a clientId. */
  member: string
  action: 'join' | 'leave'
}

export interface SubscribeOptions {
  token?: string
  topic?: string
}

export interface RealtimeStats {
  state: ConnectionState
  /** Handlers subscribed. */
  subscriptions: number
  /** Distinct channels subscribed (per token and topic). */
  channels: number
  /** Streams open: one per token and topic in use. */
  connections: number
  messages: number
  reconnects: number
  lastEventId: string | null
}

export declare class RealtimeError extends Error {
  /** The HTTP status when the server refused the stream. */
  status?: number
  /** True when the client gave up on a stream: no more reconnects. */
  final: boolean
  /** True when the server could not replay every message missed while disconnected. */
  missedMessages: boolean
}

export interface RealtimeClient<RT> {
  subscribe<K extends keyof RT & string>(channel: K, handler: EventHandler<RT, K>, options?: SubscribeOptions): () => void
  /** Join and leave events of a presence channel; the stream asks for them with ?presence=1. */
  onPresence<K extends keyof RT & string>(channel: K, handler: (event: PresenceEvent<K>) => void, options?: SubscribeOptions): () => void
  unsubscribe(channel: keyof RT & string): void
  unsubscribeAll(channel: keyof RT & string): void
  unsubscribeAllChannels(): void
  onConnectionState(callback: (state: ConnectionState) => void): () => void
  onError(callback: (error: RealtimeError) => void): () => void
  getStats(): RealtimeStats
  close(): void
}

export declare function createRealtimeClient<RT = Record<string, any>>(options: RealtimeClientOptions): RealtimeClient<RT>
