// A real Node.js origin for tests/stale_backend.rs: `http.createServer`, the
// server behind the "504 on a PUT after the backend closed an idle pooled
// connection" report.
//
//   node tests/data/node-origin.js
//
// Listens on 127.0.0.1, port 0 (OS-assigned), and prints the port and a
// newline on stdout once listening. Exits when stdin reaches EOF, so it does
// not outlive a test process that died without killing it.
//
// Every request's body is read whole, then answered with JSON:
//   {"method":"PUT","url":"/x","length":N,"fnv":"<16 hex>","seq":K}
// status 201 for PUT and POST, 200 otherwise. `length` is the body length in
// bytes, `fnv` its 64-bit FNV-1a (as the Rust tests' support::fnv1a_hex),
// `seq` the number of requests answered so far, this one included.
// `GET /count` answers 200 with that number (decimal, no newline) and is not
// counted itself.

'use strict';

const http = require('http');

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK = 0xffffffffffffffffn;

let answered = 0;

const server = http.createServer((req, res) => {
  let length = 0;
  let hash = FNV_OFFSET;
  req.on('data', (chunk) => {
    length += chunk.length;
    for (const b of chunk) {
      hash = ((hash ^ BigInt(b)) * FNV_PRIME) & MASK;
    }
  });
  req.on('end', () => {
    if (req.method === 'GET' && req.url === '/count') {
      const text = String(answered);
      res.writeHead(200, {
        'content-type': 'text/plain',
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
      return;
    }
    answered += 1;
    const status = req.method === 'PUT' || req.method === 'POST' ? 201 : 200;
    const body = JSON.stringify({
      method: req.method,
      url: req.url,
      length,
      fnv: hash.toString(16).padStart(16, '0'),
      seq: answered,
    });
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  });
});

// Node closes (destroys: FIN) a keep-alive connection that has been idle
// after its last response. The default keepAliveTimeout is 5000 ms, and Node
// adds a 1000 ms buffer to it (HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER in
// Node 20; `server.keepAliveTimeoutBuffer` from v24.6), so a default server
// closes an idle connection after ~6 s. The tests only need that close to
// happen while the gateway holds the connection in its pool, so a short
// 300 ms timeout (~1.3 s with the buffer) keeps them from waiting ~6 s per
// case. The buffer is left at its default: this is the stock behaviour.
server.keepAliveTimeout = 300;

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
