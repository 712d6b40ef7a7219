"""An app embedding flask-impulse under /realtime, with faults to inject for the reliability
tests: a backplane that raises on one channel, and a route that ends every stream the way
the server does on its own (a graceful close with a ``retry:`` hint).

IMPULSE_* settings come from the environment, as for the standalone service.
"""

from flask import Flask, jsonify, request

from flask_impulse import Impulse
from flask_impulse.broker import Draft, MemoryBackplane, Published
from flask_impulse.config import Settings
from flask_impulse.server.service import config_from_environment

SECRET = "faults-secret"
OTHER_SECRET = "faults-other-secret"  # a second publisher, for the rate limit
EXPLODING_CHANNEL = "explode"


class ExplodingBackplane(MemoryBackplane):
    """Fails as a broken backplane would, on one channel only."""

    def publish(self, draft: Draft) -> Published:
        if draft.channel == EXPLODING_CHANNEL:
            raise RuntimeError("the backplane broke")
        return super().publish(draft)


class FaultyImpulse(Impulse):
    def create_backplane(self, settings: Settings) -> MemoryBackplane:
        return ExplodingBackplane(settings.history_size, settings.history_ttl)


app = Flask(__name__)
app.config.update(config_from_environment())
app.config.setdefault("IMPULSE_SECRET", [SECRET, OTHER_SECRET])
impulse = FaultyImpulse(app)
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")


@app.post("/test/close-streams")
def close_streams():
    """End every open stream as a drain does, without shutting the service down."""
    connections = list(impulse.state.broker.connections)
    for connection in connections:
        connection.close("closed by the test", retry_ms=int(request.args.get("retry", "200")))
    return jsonify(closed=len(connections))
