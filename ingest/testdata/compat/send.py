"""Sends events with the real Python SDKs, pointed at Pulse.

Usage: send.py amplitude|posthog|segment URL KEY N BASE_MS

Each sends what the Node scripts beside it send (amplitude.mjs, posthog.mjs),
with ids prefixed py-; segment sends i%2 == 0 a track, else an identify,
message id py-seg-i. Every client is flushed before exit; a refusal is exit 1.
"""
import datetime
import os
import sys

kind, url, key, n, base = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
failed = []


def at(i):
    return datetime.datetime.fromtimestamp((base + i * 60000) / 1000, tz=datetime.timezone.utc)


if kind == "amplitude":
    from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify

    delivered = []

    def callback(event, code, message=None):
        if code != 200:
            failed.append((code, message))
        else:
            delivered.append(event.insert_id)

    client = Amplitude(key, Config(server_url=url, flush_queue_size=1000, flush_interval_millis=600000, callback=callback))
    for i in range(n):
        opts = dict(device_id=f"py-amp-device-{i}", insert_id=f"py-amp-{i}", time=base + i * 60000)
        if i % 3 != 1:
            opts["user_id"] = f"py-amp-user-{i % 5}"
        if i % 3 == 2:
            ident = Identify()
            ident.set("plan", "pro")
            ident.set_once("first_seen", "2026-01-01")
            client.identify(ident, EventOptions(**opts))
        else:
            client.track(BaseEvent(event_type="Order Completed", event_properties={"revenue": i, "order_id": f"o-{i}"}, **opts))
    client.flush()
    client.shutdown()
    if len(delivered) != n:
        failed.append(f"{len(delivered)} of {n} events confirmed")
elif kind == "posthog":
    from posthog import Posthog

    client = Posthog(key, host=url, flush_at=1000, flush_interval=600, gzip=True, max_retries=0,
                     on_error=lambda e, batch: failed.append(repr(e)), enable_local_evaluation=False)
    for i in range(n):
        uid = f"00000000-0000-4000-8000-{i:012d}"
        if i % 3 == 2:
            client.capture("$identify", distinct_id=f"py-ph-id-{i}", uuid=uid, timestamp=at(i),
                           properties={"$set": {"plan": "pro"}, "$anon_distinct_id": f"py-ph-anon-{i}"})
        else:
            client.capture("Order Completed", distinct_id=f"py-ph-user-{i % 5}", uuid=uid, timestamp=at(i),
                           properties={"revenue": i, "order_id": f"o-{i}"})
    client.flush()
    client.shutdown()
elif kind == "segment":
    from segment import analytics

    analytics.write_key = key
    analytics.host = url
    analytics.gzip = True
    analytics.max_retries = 0
    analytics.upload_size = 1000
    analytics.on_error = lambda e, batch: failed.append(repr(e))
    for i in range(n):
        if i % 2 == 0:
            analytics.track(f"py-seg-user-{i % 5}", "Order Completed", {"revenue": i, "order_id": f"o-{i}"},
                            timestamp=at(i), message_id=f"py-seg-{i}")
        else:
            analytics.identify(f"py-seg-user-{i % 5}", {"plan": "pro"}, timestamp=at(i), message_id=f"py-seg-{i}")
    analytics.flush()
    analytics.shutdown()
else:
    sys.exit(f"unknown client {kind}")

if failed:
    print("refused:", failed, file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)
print(n)
sys.stdout.flush()
# Some clients leave worker threads behind: everything is sent.
os._exit(0)
