// A live feed with flask-impulse/vue: one client provided to the app, a composable per channel.
// Components are written as setup functions returning JSX (Vue's own jsx-runtime, bundled by
// esbuild), so the example needs no compiler beyond esbuild.
import { createApp, defineComponent, ref } from 'vue'
import { createRealtimeClient } from 'flask-impulse'
import { provideRealtimeClient, useConnectionState, useRealtime } from 'flask-impulse/vue'

const serviceUrl = new URL('/realtime/', location.href).href

const ConnectionState = defineComponent(() => {
  const state = useConnectionState()
  return () => (
    <p class={['state', state.value]}>
      Connection: <strong id="state">{state.value}</strong>
    </p>
  )
})

const Feed = defineComponent(() => {
  const posts = ref([])
  // Subscribes when the feed is mounted, unsubscribes when it is unmounted (paused).
  useRealtime('feed:post', (event) => {
    posts.value = [{ ...event.payload, key: event.id }, ...posts.value].slice(0, 20)
  })
  return () =>
    posts.value.length === 0 ? (
      <p class="empty">No posts yet.</p>
    ) : (
      <ul id="feed">
        {posts.value.map((post) => (
          <li key={post.key}>
            <strong>{post.author}</strong> {post.text}
          </li>
        ))}
      </ul>
    )
})

const App = defineComponent(() => {
  provideRealtimeClient(createRealtimeClient({ serviceUrl }))
  const live = ref(true)
  return () => (
    <>
      <h1>Live feed</h1>
      <ConnectionState />
      <button id="toggle" type="button" onClick={() => (live.value = !live.value)}>
        {live.value ? 'Pause the feed' : 'Resume the feed'}
      </button>
      {live.value ? <Feed /> : <p class="paused">Paused: the feed is unmounted and its stream is closed.</p>}
    </>
  )
})

createApp(App).mount('#app')
