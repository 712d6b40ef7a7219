import type { Readable } from 'svelte/store'
import type { ConnectionState, RealtimeClient, RealtimeEvent, SubscribeOptions } from './realtime.js'

export declare function realtimeEvents<RT, K extends keyof RT & string>(
  client: RealtimeClient<RT>,
  channel: K,
  options?: SubscribeOptions & { limit?: number },
): Readable<RealtimeEvent<RT, K>[]>
export declare function connectionState(client: RealtimeClient<any>): Readable<ConnectionState>
