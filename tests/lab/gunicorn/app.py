# The haproxy-gunicorn scenario's upstream: a WSGI app run by gunicorn's gthread worker,
# whose keep-alive connections expire after `--keep-alive` seconds but are closed only when
# the worker's poll loop wakes (on the next event, or its 1 s poll timeout).
#
# TICK_MS (environment, > 0) holds every response until the next multiple of TICK_MS on the
# wall clock. With TICK_MS longer than a client's pause, every client answered on one tick
# comes back before the next one and is answered on it: the requests of a burst overlap (the
# proxy needs one upstream connection per request), their keep-alive deadlines are the same,
# and a client's pause after its answer is the idle time of an upstream connection.
import os
import time

TICK = int(os.environ.get("TICK_MS", "0")) / 1000.0


def application(env, start_response):
    length = int(env.get("CONTENT_LENGTH") or 0)
    body = env["wsgi.input"].read(length)
    if TICK > 0:
        time.sleep(TICK - (time.time() % TICK))
    out = b'{"ok":true,"received":%d}' % len(body)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
