"""An app that embeds flask-impulse with signed tokens and authorization hooks, as a user
would: it issues tokens itself and decides who may join which room."""

import os

from flask import Flask, jsonify, request

from flask_impulse import AccessDenied, Impulse, PublishRequest, SubscribeRequest

app = Flask(__name__)
app.config["IMPULSE_SECRET"] = os.environ["SECURED_PUSH_SECRET"]
app.config["IMPULSE_JWT_SECRET"] = os.environ["SECURED_JWT_SECRET"]
app.config["IMPULSE_JWT_LEEWAY"] = 0
impulse = Impulse(app)
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")

#: Who is in which room; a real app would ask its database.
ROOM_MEMBERS = {"room:ops": {"alice"}, "room:lobby": {"alice", "bob"}}


@impulse.authorize
def member_of_room(subscription: SubscribeRequest) -> bool:
    if not subscription.channel.startswith("room:"):
        return True
    if subscription.subject in ROOM_MEMBERS.get(subscription.channel, set()):
        return True
    raise AccessDenied(f"{subscription.subject} is not a member of {subscription.channel}")


@impulse.authorize_push
def nobody_pushes_to_system(push: PublishRequest) -> bool:
    return not push.channel.startswith("system:")


@app.post("/token")
def token():
    """Stands for a logged-in user asking for a realtime token."""
    body = request.get_json()
    return jsonify(token=impulse.issue_token(body["subject"], channels=body["channels"], ttl=body.get("ttl", 600)))
