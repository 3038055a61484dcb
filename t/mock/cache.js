#!/usr/bin/env node
// An upstream for t/210-cache-hostile.t: streams one tool call whose
// arguments come in many small deltas.
//
//   node t/mock/cache.js --port P
//
// The last user message "MOCK:{json}" sets args (bytes of arguments) and
// delta (bytes per delta).  GET /_stats returns {requests}.
'use strict';

const http = require('http');

let port = 0;
for (let i = 2; i < process.argv.length; i++) {
    if (process.argv[i] === '--port') port = Number(process.argv[++i]);
}

let requests = 0;

// the arguments: a JSON object whose text is exactly size bytes
function argsText(size) {
    const head = '{"data":"';
    const tail = '"}';
    const unit = 'abcdefghijklmnopqrstuvwxyz0123456789';
    const n = Math.max(0, size - head.length - tail.length);
    return head + unit.repeat(Math.ceil(n / unit.length)).slice(0, n) + tail;
}

function chunk(id, model, delta, finish) {
    return {
        id, object: 'chat.completion.chunk', created: 1700000000, model,
        choices: [{ index: 0, delta, finish_reason: finish || null }],
    };
}

http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { raw += d; });
    req.on('end', () => {
        if (req.method === 'GET' && req.url === '/_stats') {
            res.setHeader('Content-Type', 'application/json');
            res.end(JSON.stringify({ requests }));
            return;
        }
        requests++;
        let body = {};
        try { body = JSON.parse(raw); } catch (e) { /* empty */ }
        const msgs = Array.isArray(body.messages) ? body.messages : [];
        const last = msgs.length ? msgs[msgs.length - 1] : {};
        const k = { args: 1000, delta: 4 };
        if (typeof last.content === 'string' && last.content.startsWith('MOCK:')) {
            try { Object.assign(k, JSON.parse(last.content.slice(5))); } catch (e) { /* plain */ }
        }
        const id = 'chatcmpl-tools' + requests;
        const model = body.model || 'mock';
        const args = argsText(k.args);
        const out = [];
        out.push(chunk(id, model, { role: 'assistant', content: null }));
        out.push(chunk(id, model, { tool_calls: [{ index: 0, id: 'call_1', type: 'function',
            function: { name: 'lookup', arguments: '' } }] }));
        for (let i = 0; i < args.length; i += k.delta) {
            out.push(chunk(id, model, { tool_calls: [{ index: 0,
                function: { arguments: args.slice(i, i + k.delta) } }] }));
        }
        out.push(chunk(id, model, {}, 'tool_calls'));
        const u = chunk(id, model, {}, null);
        u.choices = [];
        u.usage = { prompt_tokens: 11, completion_tokens: out.length,
            total_tokens: 11 + out.length };
        if (body.stream_options && body.stream_options.include_usage) out.push(u);
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        res.end(out.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n');
    });
}).listen(port, '127.0.0.1', () => {
    process.stdout.write(`READY ${port}\n`);
});

process.on('SIGTERM', () => process.exit(0));
