"""A serverless-style publisher: a function that runs per request, pushes with ServerClient
over HTTP and keeps no connection to any subscriber (AWS Lambda's handler signature; the same
body fits Cloud Functions, Vercel or a cron job).

Run it locally with one command, the event as JSON::

    REALTIME_URL=http://127.0.0.1:8080/ REALTIME_SECRET=dev-secret \\
        python examples/serverless/handler.py '{"orderId": "A-1001", "total": 42.5, "customerToken": "c-7"}'
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, TypedDict

from flask_impulse import Channel, Push, ServerClient, ServerClientError


class OrderCreated(TypedDict):
    orderId: str
    total: float
    createdAt: str


class OrderNotice(TypedDict):
    orderId: str
    message: str


order_created = Channel("order:created", OrderCreated)
order_notice = Channel("order:notice", OrderNotice)

# Created once per container and reused by warm invocations: one pooled HTTP connection.
client = ServerClient(os.environ.get("REALTIME_URL", "http://127.0.0.1:8080/"), token=os.environ.get("REALTIME_SECRET"))


def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    """An order was placed: tell the dashboards, and the customer's own pages."""
    try:
        order_id, total = str(event["orderId"]), float(event["total"])
    except (KeyError, TypeError, ValueError):
        return {"statusCode": 400, "body": {"error": "orderId and total are required"}}
    created: OrderCreated = {
        "orderId": order_id,
        "total": total,
        "createdAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    pushes: list[Push[Any]] = [order_created(created)]
    if event.get("customerToken"):
        notice: OrderNotice = {"orderId": order_id, "message": f"Order {order_id} confirmed"}
        pushes.append(order_notice(notice, tokens=str(event["customerToken"])))
    try:
        sent = client.push_many(pushes)  # one request for both
    except ServerClientError as exc:
        return {"statusCode": 502, "body": {"error": f"realtime service: {exc}"}}
    return {"statusCode": 200, "body": {"sent": dict(zip([push.channel for push in pushes], sent, strict=True))}}


if __name__ == "__main__":
    result = handler(json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()))
    print(json.dumps(result))
    sys.exit(0 if result["statusCode"] == 200 else 1)
