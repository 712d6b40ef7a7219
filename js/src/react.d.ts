import type { ReactNode, ReactElement } from 'react'
import type { ConnectionState, EventHandler, RealtimeClient, RealtimeClientOptions, SubscribeOptions } from './realtime.js'

export type RealtimeProviderProps<RT> =
  | { client: RealtimeClient<RT>; options?: never; children?: ReactNode }
  | { client?: never; options: RealtimeClientOptions; children?: ReactNode }

export declare function RealtimeProvider<RT = Record<string, any>>(props: RealtimeProviderProps<RT>): ReactElement
export declare function useRealtimeClient<RT = Record<string, any>>(): RealtimeClient<RT>
export declare function useRealtime<RT = Record<string, any>, K extends keyof RT & string = keyof RT & string>(
  channel: K,
  handler: EventHandler<RT, K>,
  options?: SubscribeOptions,
): void
export declare function useConnectionState(): ConnectionState
