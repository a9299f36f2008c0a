// The nginx-node scenario's upstream: a plain Node 20 HTTP server with a short
// `server.keepAliveTimeout`. Node 20 closes an idle keep-alive socket about 1 s after
// `keepAliveTimeout` (measured: 2.001 s for 1000 ms, 1.001 s for 1 ms).
//
// Usage: node server.js HOST PORT KEEPALIVE_MS [TICK_MS]
//
// TICK_MS > 0 holds every response until the next multiple of TICK_MS on the wall clock.
// With TICK_MS longer than a client's pause, every client answered on one tick comes back
// before the next one and is answered on it: the requests of a burst overlap (the proxy
// needs one upstream connection per request instead of reusing its most recent one), all
// their keep-alive timers start in the same event-loop turn, and a client's pause after its
// answer is exactly the idle time of an upstream connection. A pause near the close time
// then lands the next request on the close.
'use strict';
const http = require('http');

const [host, port, keepAliveMs, tickMs] = process.argv.slice(2);
const tick = Number(tickMs || 0);

function untilNextTick() {
  return tick > 0 ? tick - (Date.now() % tick) : 0;
}

const server = http.createServer((req, res) => {
  let received = 0;
  req.on('data', (chunk) => { received += chunk.length; });
  req.on('error', () => {});
  req.on('end', () => setTimeout(() => {
    const body = JSON.stringify({ ok: true, received });
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  }, untilNextTick()));
});
server.keepAliveTimeout = Number(keepAliveMs || 1000);
server.headersTimeout = server.keepAliveTimeout + 5000;
server.requestTimeout = server.headersTimeout + 5000;
server.listen(Number(port), host, () => {
  console.log(`listening on ${host}:${port} keepAliveTimeout=${server.keepAliveTimeout}ms tick=${tick}ms`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)).closeAllConnections());
