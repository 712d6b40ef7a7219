"""An app whose authorization hooks fail as buggy app code does: with the token they were
asked about in the exception's text. No log may show it."""

from flask import Flask

from flask_impulse import Impulse, PublishRequest, SubscribeRequest

app = Flask(__name__)
app.config["IMPULSE_SECRET"] = "hooked-secret"
impulse = Impulse(app)
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")

BROKEN_CHANNEL = "hook:boom"


@impulse.authorize
def look_up_subscriber(subscription: SubscribeRequest) -> bool:
    if subscription.channel == BROKEN_CHANNEL:
        raise LookupError(f"no user holds the token {subscription.token} (lookup of {subscription.token!r} failed)")
    return True


@impulse.authorize_push
def look_up_audience(push: PublishRequest) -> bool:
    if push.channel == BROKEN_CHANNEL:
        secret = push.request.headers.get("Authorization", "").removeprefix("Bearer ")
        raise LookupError(f"cannot resolve {push.tokens} for publisher {secret}")
    return True
