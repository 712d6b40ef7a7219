import type { Ref } from 'vue'
import type { ConnectionState, EventHandler, RealtimeClient, SubscribeOptions } from './realtime.js'

export declare function provideRealtimeClient<RT>(client: RealtimeClient<RT>): RealtimeClient<RT>
export declare function useRealtimeClient<RT = Record<string, any>>(): RealtimeClient<RT>
export declare function useRealtime<RT = Record<string, any>, K extends keyof RT & string = keyof RT & string>(
  channel: K,
  handler: EventHandler<RT, K>,
  options?: SubscribeOptions & { client?: RealtimeClient<RT> },
): void
export declare function useConnectionState(client?: RealtimeClient<any>): Readonly<Ref<ConnectionState>>
