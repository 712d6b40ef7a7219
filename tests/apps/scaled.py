"""An app embedding flask-impulse with the Redis backplane (IMPULSE_REDIS_URL from the
environment), whose /send route pushes through impulse.publish() and says which worker did."""

import os

from flask import Flask, jsonify, request

from flask_impulse import Impulse

app = Flask(__name__)
app.config["IMPULSE_SECRET"] = "scaled-secret"
app.config["IMPULSE_REDIS_URL"] = os.environ["IMPULSE_REDIS_URL"]
# A generous wait for delivery counts: the tests assert exact "sent" on a noisy machine.
app.config["IMPULSE_REDIS_SENT_TIMEOUT"] = 5.0
impulse = Impulse(app)
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")


@app.post("/send")
def send():
    body = request.get_json()
    published = impulse.publish(body["channel"], body["payload"])
    return jsonify(sent=published.sent, id=published.id, pid=os.getpid())
