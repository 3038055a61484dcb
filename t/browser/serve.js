#!/usr/bin/env node
// A static server for t/408-browser-harness.t: the status page's stand-in.
//
//   node t/browser/serve.js --port P --dir DIR
//
// GET /NAME answers DIR/NAME.html (text/html), GET /NAME?format=json
// DIR/NAME.json (application/json), whatever else the query holds; any
// other request a 404.  Files are read at each request, so a test can
// change them while the server runs.  Each request is logged on stderr.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');

let port = 0;
let dir = '.';
for (let i = 2; i < process.argv.length; i++) {
    if (process.argv[i] === '--port') port = Number(process.argv[++i]);
    else if (process.argv[i] === '--dir') dir = process.argv[++i];
}

const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://127.0.0.1');
    const name = u.pathname.slice(1);
    const json = u.searchParams.get('format') === 'json';
    process.stderr.write(`${req.method} ${req.url}\n`);
    if (req.method !== 'GET' || !/^[A-Za-z0-9_-]+$/.test(name)) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        return res.end('not found\n');
    }
    fs.readFile(path.join(dir, name + (json ? '.json' : '.html')), (err, body) => {
        if (err) {
            res.writeHead(404, { 'content-type': 'text/plain' });
            return res.end('not found\n');
        }
        res.writeHead(200, {
            'content-type': json ? 'application/json' : 'text/html; charset=utf-8',
            'cache-control': 'no-store',
        });
        res.end(body);
    });
});
server.listen(port, '127.0.0.1');
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
