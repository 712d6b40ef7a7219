// flask-impulse/react: a provider for one realtime client, and hooks on it.
import { createContext, createElement, useContext, useEffect, useRef, useState, useSyncExternalStore } from 'react'
import { createRealtimeClient } from './realtime.js'

const RealtimeContext = createContext(null)

/** Gives its children one client: the one passed, or one made from `options` (closed on unmount). */
export function RealtimeProvider({ client, options, children }) {
  const [owned] = useState(() => (client ? null : createRealtimeClient(options)))
  useEffect(() => (owned ? () => owned.close() : undefined), [owned])
  return createElement(RealtimeContext.Provider, { value: client ?? owned }, children)
}

export function useRealtimeClient() {
  const client = useContext(RealtimeContext)
  if (!client) throw new Error('useRealtimeClient must be used inside a <RealtimeProvider>')
  return client
}

/** Subscribes on mount and unsubscribes on unmount; a new handler each render does not resubscribe. */
export function useRealtime(channel, handler, options = {}) {
  const client = useRealtimeClient()
  const latest = useRef(handler)
  useEffect(() => {
    latest.current = handler
  })
  const { token, topic } = options
  useEffect(() => client.subscribe(channel, (event) => latest.current(event), { token, topic }), [client, channel, token, topic])
}

/** The client's connection state, re-rendering when it changes. */
export function useConnectionState() {
  const client = useRealtimeClient()
  return useSyncExternalStore(
    (onChange) => {
      const off = client.onConnectionState(onChange)
      return () => {
        off()
      }
    },
    () => client.getStats().state,
    () => 'disconnected',
  )
}
