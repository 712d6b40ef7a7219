// flask-impulse/vue: provide one realtime client to a component tree, and composables on it.
import { inject, onMounted, onUnmounted, provide, ref } from 'vue'

const CLIENT = Symbol('flask-impulse realtime client')

export function provideRealtimeClient(client) {
  provide(CLIENT, client)
  return client
}

export function useRealtimeClient() {
  const client = inject(CLIENT, null)
  if (!client) throw new Error('useRealtimeClient needs provideRealtimeClient(client) in an ancestor')
  return client
}

/** Subscribes on mount, unsubscribes on unmount; `client` in the options overrides the provided one. */
export function useRealtime(channel, handler, options = {}) {
  const { client: given, token, topic } = options
  const client = given ?? useRealtimeClient()
  let off = null
  onMounted(() => {
    off = client.subscribe(channel, (event) => handler(event), { token, topic })
  })
  onUnmounted(() => off?.())
}

/** The client's connection state as a ref. */
export function useConnectionState(client = useRealtimeClient()) {
  const state = ref(client.getStats().state)
  let off = null
  onMounted(() => {
    state.value = client.getStats().state
    off = client.onConnectionState((next) => (state.value = next))
  })
  onUnmounted(() => off?.())
  return state
}
