// The contrast scenarios' upstream: one Node HTTP server that fails on purpose, by path.
//
//   /crash        writes the first bytes of a response head, then resets the connection
//                 (SO_LINGER 0 close): partial bytes, then RST on the wire
//   /slow/MS      answers 200 after MS milliseconds
//   /status/CODE  answers CODE itself (500, 502, …)
//   anything else answers 200
//
// Usage: node contrast.js HOST PORT
'use strict';
const http = require('http');

const [host, port] = process.argv.slice(2);

function answer(res, code) {
  const body = JSON.stringify({ code });
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  req.on('error', () => {});
  req.resume();
  req.on('end', () => {
    const path = (req.url || '/').split('?')[0];
    const parts = path.split('/').filter(Boolean);
    if (parts[0] === 'crash') {
      const socket = req.socket;
      socket.on('error', () => {});
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: applic', () => {
        // Let the partial head reach the proxy before the reset.
        setTimeout(() => socket.resetAndDestroy(), 20);
      });
    } else if (parts[0] === 'slow') {
      const timer = setTimeout(() => answer(res, 200), Number(parts[1] || 3000));
      res.on('close', () => clearTimeout(timer));
    } else if (parts[0] === 'status') {
      answer(res, Number(parts[1]) || 500);
    } else {
      answer(res, 200);
    }
  });
});
server.keepAliveTimeout = 30000;
server.listen(Number(port), host, () => console.log(`listening on ${host}:${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)).closeAllConnections());
