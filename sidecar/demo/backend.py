"""A small mock payments backend: the thing the sidecar protects in the demo and compose.

It trusts the identity headers the sidecar sets (``X-Auth-Client-Id`` ...) and echoes them
so a user can see what the backend learns about the caller. Data lives in memory.

Run alone: ``python -m sidecar.demo.backend --port 8080``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from aiohttp import web

PAYMENTS: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("payments", dict)
NEXT_ID: web.AppKey[list[int]] = web.AppKey("next_id", list)


def _caller(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower().startswith("x-auth-")}


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def list_payments(request: web.Request) -> web.Response:
    merchant = request.match_info["merchant_id"]
    items = [p for p in request.app[PAYMENTS].values() if p["merchant_id"] == merchant]
    return web.json_response({"items": items, "caller": _caller(request)})


async def create_payment(request: web.Request) -> web.Response:
    merchant = request.match_info["merchant_id"]
    try:
        body = await request.json()
        amount = int(body["amount"])
        currency = str(body.get("currency", "USD"))[:3]
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "amount required"}, status=422)
    counter = request.app[NEXT_ID]
    counter[0] += 1
    payment_id = f"p-{counter[0]}"
    payment = {"id": payment_id, "merchant_id": merchant, "amount": amount,
               "currency": currency, "status": "captured", "created": int(time.time())}
    request.app[PAYMENTS][payment_id] = payment
    return web.json_response({**payment, "caller": _caller(request)}, status=201)


async def get_payment(request: web.Request) -> web.Response:
    payment = request.app[PAYMENTS].get(request.match_info["payment_id"])
    if payment is None or payment["merchant_id"] != request.match_info["merchant_id"]:
        return web.json_response({"error": "not found"}, status=404)
    return web.json_response({**payment, "caller": _caller(request)})


async def refund(request: web.Request) -> web.Response:
    payment = request.app[PAYMENTS].get(request.match_info["payment_id"])
    if payment is None:
        return web.json_response({"error": "not found"}, status=404)
    body = await request.read()
    payment["status"] = "refunded"
    return web.json_response({"payment_id": payment["id"], "status": "refunded",
                              "request_bytes": len(body), "caller": _caller(request)},
                             status=201)


def build_backend() -> web.Application:
    app = web.Application()
    app[PAYMENTS] = {
        "p-1": {"id": "p-1", "merchant_id": "m-1", "amount": 4200, "currency": "USD",
                "status": "captured", "created": 1795000000},
        "p-2": {"id": "p-2", "merchant_id": "m-2", "amount": 990, "currency": "EUR",
                "status": "captured", "created": 1795000100},
    }
    app[NEXT_ID] = [2]
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/merchants/{merchant_id}/payments", list_payments)
    app.router.add_post("/v1/merchants/{merchant_id}/payments", create_payment)
    app.router.add_get("/v1/merchants/{merchant_id}/payments/{payment_id}", get_payment)
    app.router.add_post("/v1/payments/{payment_id}/refunds", refund)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Mock payments backend")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    web.run_app(build_backend(), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
