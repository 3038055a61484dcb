#!/usr/bin/env node
// An OpenAI-compatible upstream that keeps the raw request bodies, for
// t/020-strict-input.t: what reaches a backend, byte for byte.
//
//   node t/mock/input.js --port P
//
// POST .../chat/completions answers 5 tokens, plain or streamed (with a
// usage chunk); GET /_bodies returns {"bodies":[raw, ...]}; POST /_reset
// forgets them.
'use strict';

const http = require('http');

let port = 0;
for (let i = 2; i < process.argv.length; i++) {
    if (process.argv[i] === '--port') port = Number(process.argv[++i]);
}

let bodies = [];

http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { raw += d; });
    req.on('end', () => {
        if (req.method === 'GET' && req.url === '/_bodies') {
            res.setHeader('Content-Type', 'application/json');
            res.end(JSON.stringify({ bodies }));
            return;
        }
        if (req.method === 'POST' && req.url === '/_reset') {
            bodies = [];
            res.end('{}');
            return;
        }
        bodies.push(raw);
        let body = {};
        try { body = JSON.parse(raw); } catch (e) { /* answered anyway */ }
        const usage = { prompt_tokens: 11, completion_tokens: 5, total_tokens: 16 };
        const base = { id: 'chatcmpl-input', created: 1700000000, model: body.model || 'mock' };
        if (!body.stream) {
            res.writeHead(200, { 'Content-Type': 'application/json' });
            res.end(JSON.stringify({ ...base, object: 'chat.completion',
                choices: [{ index: 0, message: { role: 'assistant', content: 't0 t1 t2 t3 t4' },
                    finish_reason: 'stop' }], usage }));
            return;
        }
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        const ev = (o) => res.write('data: ' + JSON.stringify(o) + '\n\n');
        ev({ ...base, object: 'chat.completion.chunk',
            choices: [{ index: 0, delta: { role: 'assistant', content: 't0 t1 t2 t3 t4' },
                finish_reason: null }] });
        ev({ ...base, object: 'chat.completion.chunk',
            choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
        ev({ ...base, object: 'chat.completion.chunk', choices: [], usage });
        res.end('data: [DONE]\n\n');
    });
}).listen(port, '127.0.0.1');
