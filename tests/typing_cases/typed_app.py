"""An app whose Impulse extension declares the typed channels, for `flask impulse typescript`."""

from flask import Flask

from flask_impulse import Impulse

from .chat_types import chat_message, notification, shapes

app = Flask(__name__)
impulse = Impulse(app, channels=[chat_message, notification])
impulse.channel(shapes)
app.register_blueprint(impulse.blueprint, url_prefix="/realtime")
