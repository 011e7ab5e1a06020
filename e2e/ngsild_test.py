"""ngsildclient (PyPI, 0.5.2) drives the running demo's NGSI-LD API.

Run by scripts/test against the demo (BASE_URL). The owner makes an open
stream and a shared one, each with a write credential; ngsildclient, given
the open stream's credential, connects, creates and batch-upserts entities,
queries them by type, q and area, reads their temporal values, and
subscribes — its notifications reach an HTTP listener of this test. An
anonymous read of the shared stream is refused. Prints what it did.
"""

import json
import os
import random
import sys
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse

import requests
from ngsildclient import Client, Entity
from requests.auth import AuthBase

BASE = os.environ.get("BASE_URL", "http://127.0.0.1:8080").rstrip("/")
PASSWORD = os.environ.get("DEMO_PASSWORD", "demo-password")


class Bearer(AuthBase):
    def __init__(self, token):
        self.token = token

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


def api_token(username):
    r = requests.post(f"{BASE}/api/v1/auth/token", json={"username": username, "password": PASSWORD}, timeout=30)
    r.raise_for_status()
    return r.json()["token"]


def make_stream(owner, suffix, spectrum, entity_type):
    body = {
        "id": f"interop-{suffix}",
        "title": f"Interop sensors {suffix}",
        "description": "Sensors written by ngsildclient in the interop test.",
        "owner_organization_id": "city-data-office",
        "spectrum": spectrum,
        "structure": "real_time",
        "stream": {"entity_types": [entity_type], "retention_days": 30},
    }
    h = {"Authorization": f"Bearer {owner}"}
    r = requests.post(f"{BASE}/api/v1/datasets", json=body, headers=h, timeout=30)
    assert r.status_code == 201, r.text
    r = requests.post(
        f"{BASE}/api/v1/datasets/interop-{suffix}/stream-credentials",
        json={"label": "ngsildclient"},
        headers=h,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()["token"]


class Listener:
    """A local HTTP endpoint collecting notifications."""

    def __init__(self):
        self.received = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                outer.received.append((dict(self.headers), json.loads(self.rfile.read(n))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/notify"

    def wait(self, count, seconds=30):
        deadline = time.time() + seconds
        while len(self.received) < count and time.time() < deadline:
            time.sleep(0.2)
        return self.received


class NgsildClientAgainstTheDemo(unittest.TestCase):
    def test_ngsildclient_writes_queries_reads_history_and_subscribes(self):
        owner = api_token("owner")
        suffix = f"{random.randrange(1 << 30):x}"
        kind = f"InteropSensor{suffix}"
        open_token = make_stream(owner, suffix, "open", kind)
        shared_token = make_stream(owner, suffix + "-shared", "shared_specific", kind + "Shared")
        url = urlparse(BASE)
        client = Client(hostname=url.hostname, port=url.port, custom_auth=Bearer(open_token), verbose=False)
        self.assertTrue(client.is_connected())

        def sensor(n, temperature, lon):
            e = Entity(kind, f"sensor-{n}")
            e.prop("temperature", temperature, unitcode="CEL", observedat="2026-12-01T10:00:00Z")
            e.gprop("location", (41.39, lon))
            return e

        # Create one, then batch-upsert two more (and the first again).
        self.assertTrue(client.create(sensor(1, 21.5, 2.15)))
        result = client.upsert(sensor(1, 22.5, 2.15), sensor(2, 18.0, 2.16), sensor(3, 25.0, 2.90))
        self.assertTrue(result, result)

        # Queries by type, q and area.
        everything = client.query(type=kind)
        self.assertEqual(len(everything), 3)
        warm = client.query(type=kind, q="temperature>20")
        self.assertEqual(sorted(e.id for e in warm), [f"urn:ngsi-ld:{kind}:sensor-1", f"urn:ngsi-ld:{kind}:sensor-3"])
        near = client.query(type=kind, gq="georel=near;maxDistance==5000&geometry=Point&coordinates=[2.155,41.39]")
        self.assertEqual(sorted(e.id for e in near), [f"urn:ngsi-ld:{kind}:sensor-1", f"urn:ngsi-ld:{kind}:sensor-2"])
        self.assertEqual(client.count(type=kind, q="temperature<20"), 1)

        # Temporal values: the two readings of sensor-1.
        troe = client.temporal.get(f"urn:ngsi-ld:{kind}:sensor-1", attrs=["temperature"])
        history = troe["temperature"]["values"]
        self.assertEqual(sorted(v[0] for v in history), [21.5, 22.5], troe)

        # A subscription, its notification received here.
        listener = Listener()
        subscription = {
            "type": "Subscription",
            "entities": [{"type": kind}],
            "watchedAttributes": ["temperature"],
            "notification": {"endpoint": {"uri": listener.url, "accept": "application/json"}, "format": "keyValues"},
            "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        }
        sid = client.subscriptions.create(subscription)
        self.assertTrue(str(sid).startswith("urn:ngsi-ld:Subscription:"), sid)
        client.upsert(sensor(2, 30.0, 2.16))
        received = listener.wait(1)
        self.assertTrue(received, "no notification arrived")
        headers, body = received[0]
        self.assertEqual(body["subscriptionId"], sid)
        self.assertEqual(body["data"][0]["temperature"], 30.0)
        self.assertIn("Citytrust-Log-Entry".lower(), {k.lower() for k in headers})

        # Into the shared stream goes a reading anyone may not read.
        shared = Client(hostname=url.hostname, port=url.port, custom_auth=Bearer(shared_token), verbose=False)
        self.assertTrue(shared.create(Entity(kind + "Shared", "secret-1").prop("temperature", 99.0)))
        r = requests.get(f"{BASE}/ngsi-ld/v1/entities/urn:ngsi-ld:{kind}Shared:secret-1", timeout=30)
        self.assertEqual(r.status_code, 401, r.text)
        self.assertNotIn("99", r.text)
        r = requests.get(f"{BASE}/ngsi-ld/v1/entities", params={"type": kind + "Shared"}, timeout=30)
        self.assertEqual(r.status_code, 401, r.text)
        # ... nor its own write credential.
        r = requests.get(
            f"{BASE}/ngsi-ld/v1/entities/urn:ngsi-ld:{kind}Shared:secret-1",
            headers={"Authorization": f"Bearer {shared_token}"},
            timeout=30,
        )
        self.assertEqual(r.status_code, 403, r.text)
        client.subscriptions.delete(sid)
        print(f"ngsildclient: 3 entities written, queried by type/q/geo, {len(history)} temporal values, "
              f"{len(received)} notification(s) received; anonymous read of the shared stream refused")


if __name__ == "__main__":
    sys.exit(unittest.main())
