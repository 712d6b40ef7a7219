"""An app that embeds flask-impulse under /realtime, as a user would."""

from flask import Flask, jsonify, request

from flask_impulse import Impulse

app = Flask(__name__)
app.config["IMPULSE_SECRET"] = "embedded-secret"
impulse = Impulse(app)
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")


@app.post("/send")
def send():
    body = request.get_json()
    sent = impulse.push(
        body["channel"],
        body["payload"],
        tokens=body.get("tokens"),
        topic=body.get("topic"),
        idempotency_key=body.get("idempotencyKey"),
    )
    return jsonify(sent=sent)
