"""An app that embeds flask-impulse under /realtime and serves a page using BASE/client.js.

The page subscribes to the channels named in its query string (``?channels=a,b``), all with
the same token and topic, and records what it receives in ``window.received``, the
connection states in ``window.states`` and the errors in ``window.errors``.
"""

from flask import Flask

from flask_impulse import Impulse

app = Flask(__name__)
app.config["IMPULSE_SECRET"] = "browser-secret"
impulse = Impulse(app)
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>client.js</title></head>
<body data-ready="0">
<script type="module">
import { createRealtimeClient } from './realtime/client.js'

const params = new URLSearchParams(location.search)
const client = createRealtimeClient({
  serviceUrl: new URL('./realtime', location.href).href,
  retryAttempts: 200,
  retryDelay: 100,
  maxRetryDelay: 500,
  debug: true,
})
window.received = []
window.states = []
window.errors = []
client.onConnectionState((state) => window.states.push(state))
client.onError((error) => window.errors.push(error.message))
for (const channel of (params.get('channels') || '').split(',').filter(Boolean)) {
  client.subscribe(channel, (event) => window.received.push([event.channel, event.payload, event.id]))
}
window.client = client
document.body.dataset.ready = '1'
</script>
</body></html>
"""


@app.get("/")
def page() -> str:
    return PAGE
