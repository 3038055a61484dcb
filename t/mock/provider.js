#!/usr/bin/env node
// Fake hosted providers over TLS (HTTP/2 with HTTP/1.1 fallback), one per
// path prefix.  Each checks the exact request its real provider expects:
// URL, key, model id, stream_options, attribution headers; a request that
// differs gets a 400 saying how.  GET /_last/<provider> shows the last
// request each one saw.
//
//   node t/mock/provider.js --port P --cert F --key F --expect JSON
//
// --expect: {"<provider>": {"key": "...", "model": "...", "referer": "..."}}
'use strict';

const fs = require('fs');
const http2 = require('http2');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];

const expect = JSON.parse(args.expect);
const last = {};

// the real providers' paths under their base URLs, and their habits
const providers = {
    together: { base: '/together/v1', streamOptions: true },
    fireworks: { base: '/fireworks/inference/v1', streamOptions: true },
    deepinfra: { base: '/deepinfra/v1/openai', streamOptions: true },
    openrouter: { base: '/openrouter/api/v1', streamOptions: false, attribution: true },
    mistral: { base: '/mistral/v1', streamOptions: false, usageInLast: true },
    groq: { base: '/groq/openai/v1', streamOptions: false, xGroq: true },
};

function check(name, p, req, body) {
    const e = expect[name] || {};
    const h = req.headers;
    if (req.method !== 'POST') return `method ${req.method}`;
    if (h.authorization !== `Bearer ${e.key}`) return `authorization "${h.authorization}"`;
    if (!body) return 'body is not JSON';
    if (body.model !== e.model) return `model "${body.model}", want "${e.model}"`;
    if (body.stream) {
        if (p.streamOptions && !(body.stream_options && body.stream_options.include_usage === true)) {
            return 'stream_options.include_usage missing';
        }
        if (!p.streamOptions && body.stream_options !== undefined) {
            return `stream_options sent to ${name}, which refuses it`;
        }
    }
    if (p.attribution) {
        if (h['x-title'] !== 'nginx-llm-gateway') return `X-Title "${h['x-title']}"`;
        if (h['http-referer'] !== e.referer) return `HTTP-Referer "${h['http-referer']}"`;
        if (!(body.usage && body.usage.include === true)) return 'usage.include missing';
    } else if (body.usage !== undefined) {
        return `usage sent to ${name}`;
    }
    return null;
}

function chunk(model, delta, finish) {
    return { id: 'chatcmpl-fake', object: 'chat.completion.chunk', created: 1700000000, model,
        choices: [{ index: 0, delta, finish_reason: finish || null }] };
}

function handle(req, res, raw) {
    const m = req.url.match(/^\/_last\/(\w+)$/);
    if (m) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(last[m[1]] || null));
        return;
    }
    let name = null;
    for (const [n, p] of Object.entries(providers)) {
        if (req.url === `${p.base}/chat/completions`) name = n;
    }
    if (!name) {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `no such path ${req.url}` } }));
        return;
    }
    const p = providers[name];
    let body = null;
    try { body = JSON.parse(raw); } catch (e) { /* checked below */ }
    last[name] = { url: req.url, httpVersion: req.httpVersion, headers: req.headers, body };
    const msgs = body && Array.isArray(body.messages) ? body.messages : [];
    if (msgs.length && msgs[msgs.length - 1].content === 'ECHO_KEY') {
        // a careless provider quoting the credentials in its error
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `bad request with ${req.headers.authorization}` } }));
        return;
    }
    if (msgs.length && msgs[msgs.length - 1].content === 'ECHO_KEY_SPLIT') {
        // the same, the key cut in two writes 50 ms apart
        const text = JSON.stringify({ error: { message: `bad request with ${req.headers.authorization}` } });
        const cut = text.indexOf(req.headers.authorization) + 'Bearer '.length + 5;
        res.writeHead(400, { 'content-type': 'application/json' });
        res.write(text.slice(0, cut));
        setTimeout(() => res.end(text.slice(cut)), 50);
        return;
    }
    const bad = check(name, p, req, body);
    if (bad) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `${name}: ${bad}`, type: 'invalid_request_error' } }));
        return;
    }
    const usage = { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 };
    const model = body.model;
    if (!body.stream) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: 'chatcmpl-fake', object: 'chat.completion', created: 1700000000,
            model, choices: [{ index: 0, message: { role: 'assistant', content: `hello from ${name}` },
                finish_reason: 'stop' }], usage }));
        return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const out = [chunk(model, { role: 'assistant', content: '' }),
        chunk(model, { content: `hello from ${name}` })];
    const fin = chunk(model, {}, 'stop');
    if (p.usageInLast) fin.usage = usage;
    if (p.xGroq) fin.x_groq = { id: 'req_fake', usage };
    out.push(fin);
    if (body.stream_options && body.stream_options.include_usage) {
        const u = chunk(model, {}, null);
        u.choices = [];
        u.usage = usage;
        out.push(u);
    }
    if (p.attribution) {
        // OpenRouter sends usage in a final chunk when asked with "usage"
        const u = chunk(model, {}, null);
        u.choices = [];
        u.usage = usage;
        out.push(u);
    }
    res.end(out.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n');
}

const server = http2.createSecureServer({
    key: fs.readFileSync(args.key), cert: fs.readFileSync(args.cert), allowHTTP1: true,
}, (req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { raw += d; });
    req.on('end', () => handle(req, res, raw));
});

server.listen(Number(args.port), '127.0.0.1', () => process.stdout.write('READY\n'));
process.on('SIGTERM', () => process.exit(0));
