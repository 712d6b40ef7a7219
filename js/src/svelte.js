// flask-impulse/svelte: stores on a realtime client. Each subscribes to the client while the
// store has subscribers (a component using `$store`), and unsubscribes when the last one leaves.
import { readable } from 'svelte/store'

/** The latest `limit` events of a channel, oldest first. */
export function realtimeEvents(client, channel, { token, topic, limit = 50 } = {}) {
  return readable([], (set) => {
    let events = []
    return client.subscribe(
      channel,
      (event) => {
        events = [...events, event].slice(-limit)
        set(events)
      },
      { token, topic },
    )
  })
}

/** The client's connection state. */
export function connectionState(client) {
  return readable(client.getStats().state, (set) => {
    set(client.getStats().state)
    const off = client.onConnectionState(set)
    return () => {
      off()
    }
  })
}
