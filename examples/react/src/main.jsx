// Live notifications with flask-impulse/react: one client for the page, a hook per channel.
import { useState } from 'react'
import { createRoot } from 'react-dom/client'
import { RealtimeProvider, useConnectionState, useRealtime } from 'flask-impulse/react'

const serviceUrl = new URL('/realtime/', location.href).href

function ConnectionState() {
  const state = useConnectionState()
  return (
    <p className={`state ${state}`}>
      Connection: <strong id="state">{state}</strong>
    </p>
  )
}

function Notifications() {
  const [items, setItems] = useState([])
  // Subscribes on mount; the handler of each render is used without resubscribing.
  useRealtime('notification:new', (event) => setItems((shown) => [{ ...event.payload, key: event.id }, ...shown].slice(0, 20)))
  if (items.length === 0) return <p className="empty">No notifications yet.</p>
  return (
    <ul id="notifications">
      {items.map((item) => (
        <li key={item.key} className={item.type}>
          <strong>{item.title}</strong> {item.message}
        </li>
      ))}
    </ul>
  )
}

createRoot(document.getElementById('root')).render(
  <RealtimeProvider options={{ serviceUrl }}>
    <h1>Notifications</h1>
    <ConnectionState />
    <Notifications />
  </RealtimeProvider>,
)
