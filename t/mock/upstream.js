#!/usr/bin/env node
// A fault-injecting OpenAI-compatible upstream for the tests.
//
//   node t/mock/upstream.js --port P
//
// POST <prefix>/v1/chat/completions answers like OpenAI, plain or streamed.
// Behaviour comes from the URL prefix (/s503, /s429, /slow, /stall, ...)
// and, per request, from a last user message "MOCK:{json}" with the knobs:
//   status, retry_after, latency_ms, tokens, pace_ms, size, chunk,
//   disconnect_after, stall_after, echo, content_type,
//   texts (the streamed contents, as given), spaced (JSON written with
//   Python's ", " and ": " separators),
//   fail_first (a name: the first request naming it gets a 500),
//   no_usage (a plain answer without "usage"), completion_tokens (the
//   usage's count, instead of the number of texts), error_message (of a
//   non-200 answer), pieces (the body, written as given, gap_ms apart,
//   with the status and content_type; then the connection is cut if cut
//   is set), raw (the whole response, head included, written as given);
//   "{KEY}" in error_message, pieces and raw is the bearer key received
// GET /_stats returns counters; POST /_reset zeroes them.
'use strict';

const http = require('http');

let port = 0;
for (let i = 2; i < process.argv.length; i++) {
    if (process.argv[i] === '--port') port = Number(process.argv[++i]);
}

const stats = {};
const failed = new Set();
let resetGen = 0;
function resetStats() {
    resetGen++;
    Object.assign(stats, {
        requests: 0, connections: 0, api_connections: 0, aborted: 0, completed: 0,
        bytes_sent: 0, paths: {}, last_body: null, last_headers: null,
        open_connections: 0,
    });
}
resetStats();

function knobs(url, body) {
    const k = { status: 200, tokens: 5, pace_ms: 0, latency_ms: 0 };
    const m = url.match(/^\/(s(\d{3})|slow|stall|disconnect|echo)(?=\/)/);
    if (m) {
        if (m[2]) k.status = Number(m[2]);
        if (m[1] === 's429') k.retry_after = 7;
        if (m[1] === 'slow') k.latency_ms = 3000;
        if (m[1] === 'stall') k.stall_after = 2;
        if (m[1] === 'disconnect') k.disconnect_after = 2;
        if (m[1] === 'echo') k.echo = true;
    }
    const msgs = body && Array.isArray(body.messages) ? body.messages : [];
    const last = msgs.length ? msgs[msgs.length - 1] : null;
    if (last && typeof last.content === 'string' && last.content.startsWith('MOCK:')) {
        try { Object.assign(k, JSON.parse(last.content.slice(5))); } catch (e) { /* plain text */ }
    }
    if (k.fail_first !== undefined && !failed.has(k.fail_first)) {
        failed.add(k.fail_first);
        k.status = 500;
    }
    if (typeof body?.max_tokens === 'number' && k.tokens > body.max_tokens) {
        k.tokens = body.max_tokens;
    }
    return k;
}

// deterministic content: token i is "t<i> "; a sized body is a pattern
function tokenText(i) { return `t${i} `; }
function patternText(size) {
    const unit = 'abcdefghijklmnopqrstuvwxyz0123456789';
    return unit.repeat(Math.ceil(size / unit.length)).slice(0, size);
}

// JSON as Python's json.dumps writes it by default
function spaced(v) {
    if (Array.isArray(v)) return '[' + v.map(spaced).join(', ') + ']';
    if (v && typeof v === 'object') {
        return '{' + Object.keys(v).map((key) => JSON.stringify(key) + ': ' + spaced(v[key])).join(', ') + '}';
    }
    return JSON.stringify(v);
}

function chunk(id, model, delta, finish) {
    return {
        id, object: 'chat.completion.chunk', created: 1700000000, model,
        choices: [{ index: 0, delta, finish_reason: finish || null }],
    };
}

const server = http.createServer((req, res) => {
    let raw = '';
    req.setEncoding('utf8');
    req.on('data', (d) => { raw += d; });
    req.on('end', () => handle(req, res, raw));
});

server.on('connection', (sock) => {
    stats.connections++;
    stats.open_connections++;
    sock.on('close', () => { stats.open_connections--; });
});

server.keepAliveTimeout = 60000;

function handle(req, res, raw) {
    const url = req.url;

    if (req.method === 'GET' && url === '/_stats') {
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify(stats));
        return;
    }
    if (req.method === 'POST' && url === '/_reset') {
        resetStats();
        res.end('{}');
        return;
    }

    stats.requests++;
    stats.paths[url] = (stats.paths[url] || 0) + 1;
    // connections that carried API requests (the stats calls do not count)
    if (req.socket.llmResetGen !== resetGen) {
        req.socket.llmResetGen = resetGen;
        stats.api_connections++;
    }

    let body = null;
    try { body = JSON.parse(raw); } catch (e) { body = null; }
    stats.last_body = body;
    stats.last_headers = req.headers;
    stats.last_raw_headers = req.rawHeaders;

    const k = knobs(url, body);
    const model = (body && body.model) || 'mock';
    const id = 'chatcmpl-mock' + stats.requests;
    let finished = false;

    res.on('close', () => {
        if (!finished) stats.aborted++;
    });

    const send = (s) => {
        stats.bytes_sent += Buffer.byteLength(s);
        return res.write(s);
    };

    const key = (req.headers.authorization || '').replace(/^Bearer /, '');
    const withKey = (t) => String(t).split('{KEY}').join(key);

    setTimeout(() => {
        if (k.raw !== undefined) {
            finished = true;
            stats.completed++;
            req.socket.end(Buffer.from(withKey(k.raw), 'latin1'));
            return;
        }
        if (Array.isArray(k.pieces)) {
            res.writeHead(k.status, { 'Content-Type': k.content_type
                || (body && body.stream ? 'text/event-stream' : 'application/json') });
            const pieces = k.pieces.map(withKey);
            const gap = k.gap_ms === undefined ? 50 : k.gap_ms;
            const write = (i) => {
                if (i < pieces.length) {
                    send(pieces[i]);
                    setTimeout(() => write(i + 1), gap);
                    return;
                }
                if (k.cut) {
                    res.socket && res.socket.destroy();
                    return;
                }
                finished = true;
                stats.completed++;
                res.end();
            };
            write(0);
            return;
        }
        if (k.status !== 200) {
            const h = { 'Content-Type': 'application/json' };
            if (k.retry_after !== undefined) h['Retry-After'] = String(k.retry_after);
            res.writeHead(k.status, h);
            finished = true;
            stats.completed++;
            res.end(JSON.stringify({ error: { message: k.error_message !== undefined
                ? withKey(k.error_message) : `mock status ${k.status}`,
                type: 'mock_error', param: null, code: null } }));
            return;
        }

        let content = [];
        if (k.echo) {
            content = [JSON.stringify({ body, headers: req.headers })];
        } else if (Array.isArray(k.texts)) {
            content = k.texts;
        } else if (k.size) {
            const text = patternText(k.size);
            const step = k.chunk || 16384;
            for (let i = 0; i < text.length; i += step) content.push(text.slice(i, i + step));
        } else {
            for (let i = 0; i < k.tokens; i++) content.push(tokenText(i));
        }
        const ctok = k.completion_tokens !== undefined ? k.completion_tokens : content.length;
        const usage = {
            prompt_tokens: 11, completion_tokens: ctok, total_tokens: 11 + ctok,
        };

        if (!(body && body.stream)) {
            res.writeHead(200, { 'Content-Type': k.content_type || 'application/json' });
            const answer = {
                id, object: 'chat.completion', created: 1700000000, model,
                choices: [{ index: 0, message: { role: 'assistant', content: content.join('') },
                    finish_reason: 'stop' }],
                usage,
            };
            if (k.no_usage) delete answer.usage;
            const out = JSON.stringify(answer);
            if (k.disconnect_after !== undefined) {
                send(out.slice(0, Math.floor(out.length / 2)));
                setTimeout(() => res.socket && res.socket.destroy(), 20);
                return;
            }
            if (k.stall_after !== undefined) {
                send(out.slice(0, Math.floor(out.length / 2)));
                return;
            }
            send(out);
            finished = true;
            stats.completed++;
            res.end();
            return;
        }

        res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
        send(`data: ${JSON.stringify(chunk(id, model, { role: 'assistant', content: '' }))}\n\n`);

        let i = 0;
        const next = () => {
            if (k.disconnect_after !== undefined && i >= k.disconnect_after) {
                res.socket && res.socket.destroy();
                return;
            }
            if (k.stall_after !== undefined && i >= k.stall_after) {
                return; // hang, the gateway's idle timeout must act
            }
            if (i < content.length) {
                const c = chunk(id, model, { content: content[i] });
                const ok = send(`data: ${k.spaced ? spaced(c) : JSON.stringify(c)}\n\n`);
                i++;
                if (k.pace_ms) setTimeout(next, k.pace_ms);
                else if (ok) setImmediate(next);
                else res.once('drain', next);
                return;
            }
            send(`data: ${JSON.stringify(chunk(id, model, {}, 'stop'))}\n\n`);
            if (body.stream_options && body.stream_options.include_usage) {
                const u = chunk(id, model, {}, null);
                u.choices = [];
                u.usage = usage;
                send(`data: ${JSON.stringify(u)}\n\n`);
            }
            send('data: [DONE]\n\n');
            finished = true;
            stats.completed++;
            res.end();
        };
        if (k.pace_ms) setTimeout(next, k.pace_ms);
        else next();
    }, k.latency_ms);
}

server.listen(port, '127.0.0.1', () => {
    process.stdout.write(`READY ${server.address().port}\n`);
});

process.on('SIGTERM', () => process.exit(0));
