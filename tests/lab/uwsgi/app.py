# The seed scenario's upstream: a WSGI app behind uwsgi's own HTTP router, as in the field.
# It answers with Content-Length and no `Connection: close`.
def application(env, start_response):
    length = int(env.get("CONTENT_LENGTH") or 0)
    body = env["wsgi.input"].read(length)
    out = b'{"ok":true,"received":%d}' % len(body)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
