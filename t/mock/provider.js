#!/usr/bin/env node
// Fake hosted providers over TLS (HTTP/2 with HTTP/1.1 fallback), one per
// path prefix.  Each checks the exact request its real provider expects:
// URL, key, model id, stream_options, attribution headers; a request that
// differs gets a 400 saying how.  Then each refuses what its real API
// refuses, in that API's own shape (Mistral's 422 "extra_forbidden",
// Groq's n > 1, Fireworks' long unstreamed answers, DeepInfra's
// tool_choice).  GET /_last/<provider> shows the last request each saw.
//
//   node t/mock/provider.js --port P --cert F --key F --expect JSON
//
// --expect: {"<provider>": {"key": "...", "model": "...", "referer": "...",
//            "title": "..."}} (no referer: no attribution headers at all)
'use strict';

const fs = require('fs');
const http2 = require('http2');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];

const expect = JSON.parse(args.expect);
const last = {};

// the real providers' paths under their base URLs, and their habits, as
// the review of 2026-12-01 (shared/reviews, sections 3, 4, 6) documents
// them: who takes stream_options, where a stream's usage comes, what each
// API refuses and how it says so
const providers = {
    together: { base: '/together/v1', streamOptions: true },
    fireworks: { base: '/fireworks/inference/v1', streamOptions: true, maxUnstreamed: 4096 },
    deepinfra: { base: '/deepinfra/v1/openai', streamOptions: true, toolChoice: ['auto', 'none'] },
    openrouter: { base: '/openrouter/api/v1', streamOptions: true, attribution: true,
        usageAlways: true, comments: true },
    mistral: { base: '/mistral/v1', streamOptions: false, usageInLast: true, strict: true },
    groq: { base: '/groq/openai/v1', streamOptions: true, xGroq: true, oneChoice: true,
        refuses: ['logprobs', 'logit_bias', 'top_logprobs'], noNames: true },
};

// Mistral's ChatCompletionRequest: additionalProperties false
const mistralKnown = new Set(['model', 'messages', 'temperature', 'top_p', 'max_tokens', 'stream',
    'stop', 'random_seed', 'response_format', 'tools', 'tool_choice', 'presence_penalty',
    'frequency_penalty', 'n', 'prediction', 'parallel_tool_calls', 'prompt_mode', 'safe_prompt',
    'metadata']);

// an answer other than a 400 of the fake's own: [status, body]
function mistral422(type, loc, msg, input) {
    return [422, { object: 'error', message: { detail: [{ type, loc, msg, input }] },
        type: 'invalid_request_error', param: null, code: null }];
}

function refuse(name, p, body) {
    if (p.strict) {
        for (const [k, v] of Object.entries(body)) {
            if (!mistralKnown.has(k)) return mistral422('extra_forbidden', ['body', k], 'Extra inputs are not permitted', v);
            if (v === null) return mistral422('null_forbidden', ['body', k], 'Input should not be null', v);
        }
        // a name is allowed on a tool's message only
        const i = (body.messages || []).findIndex((m) => m && typeof m === 'object' && 'name' in m
            && m.role !== 'tool');
        if (i >= 0) return mistral422('extra_forbidden', ['body', 'messages', i, 'user', 'name'], 'Extra inputs are not permitted', body.messages[i].name);
        if (typeof body.temperature === 'number' && body.temperature > 1.5) {
            return mistral422('less_than_equal', ['body', 'temperature'], 'Input should be less than or equal to 1.5', body.temperature);
        }
    }
    const groq400 = (param, message) => [400, { error: { message, type: 'invalid_request_error', param } }];
    if (p.oneChoice && body.n !== undefined && body.n !== 1) return groq400('n', "'n' : number must be at most 1");
    for (const k of p.refuses || []) {
        if (body[k] !== undefined) return groq400(k, `'${k}' : not supported by the model`);
    }
    if (p.noNames && (body.messages || []).some((m) => m && typeof m === 'object' && 'name' in m)) {
        return groq400('messages', "'messages.0' : for 'role:user' the following must be satisfied"
            + "[('messages.0.name' : property 'name' is unsupported)]");
    }
    if (p.maxUnstreamed && !body.stream && (body.max_tokens > p.maxUnstreamed || body.max_completion_tokens > p.maxUnstreamed)) {
        return [400, { error: { object: 'error', type: 'invalid_request_error',
            message: `Requests with max_tokens > ${p.maxUnstreamed} must have stream=true` } }];
    }
    if (p.toolChoice && body.tool_choice !== undefined && !p.toolChoice.includes(body.tool_choice)) {
        return [400, { error: { message: 'tool_choice must be one of auto, none', type: 'invalid_request_error' } }];
    }
    return null;
}

function check(name, p, req, body) {
    const e = expect[name] || {};
    const h = req.headers;
    if (req.method !== 'POST') return `method ${req.method}`;
    if (h.authorization !== `Bearer ${e.key}`) return `authorization "${h.authorization}"`;
    if (!body) return 'body is not JSON';
    if (body.model !== e.model) return `model "${body.model}", want "${e.model}"`;
    if (body.stream && p.streamOptions && !(body.stream_options && body.stream_options.include_usage === true)) {
        return 'stream_options.include_usage missing';
    }
    if (p.attribution) {
        // attribution needs the referer; a title alone attributes nothing
        if (e.referer) {
            if (h['http-referer'] !== e.referer) return `HTTP-Referer "${h['http-referer']}"`;
            if (h['x-openrouter-title'] !== e.title) return `X-OpenRouter-Title "${h['x-openrouter-title']}"`;
            if (h['x-title'] !== e.title) return `X-Title "${h['x-title']}"`;
        } else {
            for (const k of ['http-referer', 'x-openrouter-title', 'x-title']) {
                if (h[k] !== undefined) return `${k} "${h[k]}" without llm_app_url`;
            }
        }
    }
    // OpenRouter's "usage":{"include":true} is a deprecated no-op
    if (body.usage !== undefined && !p.attribution) return `usage sent to ${name}`;
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
    if (fault(name, body, res)) return;
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
    const no = refuse(name, p, body);
    if (no) {
        res.writeHead(no[0], { 'content-type': 'application/json' });
        res.end(JSON.stringify(no[1]));
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
    const asked = body.stream_options && body.stream_options.include_usage;
    if (p.usageAlways || (p.streamOptions && asked)) {
        // usage in a chunk of its own, as OpenAI sends it; OpenRouter
        // always, whatever was asked
        const u = chunk(model, {}, null);
        u.choices = [];
        u.usage = usage;
        // some of Groq's usage frames carry no "choices" at all
        if (msgs.length && msgs[msgs.length - 1].content === 'USAGE_NO_CHOICES') delete u.choices;
        out.push(u);
    }
    const text = out.map((c) => `data: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n';
    res.end((p.comments ? ': OPENROUTER PROCESSING\n\n' : '') + text);
}

// provider errors as the real ones send them (t/505-provider-errors.t),
// chosen by a marker in the last user message; true: answered
function fault(name, body, res) {
    const msgs = body && Array.isArray(body.messages) ? body.messages : [];
    const text = msgs.length ? String(msgs[msgs.length - 1].content) : '';
    const mark = (text.match(/__(\w+?)__/) || [])[1];
    if (!mark) return false;
    const json = (status, obj, headers) => {
        res.writeHead(status, Object.assign({ 'content-type': 'application/json' }, headers || {}));
        res.end(JSON.stringify(obj));
        return true;
    };
    const sse = (events) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('') + 'data: [DONE]\n\n');
        return true;
    };
    const model = body.model;
    switch (mark) {
    case 'retired':
        // Groq's answer for a decommissioned model; Fireworks' 404 for others
        if (name === 'groq') {
            return json(400, { error: { message: `The model \`${model}\` has been decommissioned and is no longer supported.`,
                type: 'invalid_request_error', code: 'model_decommissioned' } });
        }
        if (name === 'fireworks') {
            return json(404, { error: { message: 'Model not found, inaccessible, and/or not deployed',
                code: 'NOT_FOUND' } });
        }
        if (name === 'mistral') {
            return json(400, { object: 'error', message: `Invalid model: ${model}`, type: 'invalid_model',
                param: null, code: '1500' });
        }
        return false;
    case 'ctx403':
        // Together: prompt + max_tokens over the context window
        if (name !== 'together') return false;
        return json(403, { error: { message: 'Input validation error: `inputs` tokens + `max_new_tokens` must be <= 32769. Given: 40000 `inputs` tokens and 4096 `max_new_tokens`',
            type: 'invalid_request_error', param: null, code: null } });
    case 'moderation403':
        if (name !== 'openrouter') return false;
        return json(403, { error: { code: 403, message: 'mistralai/mixtral-8x22b-instruct requires moderation on Mistral. Your input was flagged for "violence".',
            metadata: { reasons: ['violence'], flagged_input: 'an api key auth credential...', provider_name: 'Mistral' } } });
    case 'auth403':
        if (name !== 'fireworks') return false;
        return json(403, { error: { message: 'Invalid API key or insufficient permissions', type: 'authentication_error' } });
    case '429frac':
        if (name !== 'together') return false;
        return json(429, { error: { message: 'Rate limit reached', type: 'rate_limit_error', code: 'rate_limit_exceeded' } },
            { 'retry-after': '1.5' });
    case '429none':
        if (name !== 'mistral') return false;
        return json(429, { object: 'error', message: 'Service tier capacity exceeded for this model.',
            type: 'service_tier_capacity_exceeded', param: null, code: '3505' });
    case '429groq':
        if (name !== 'groq') return false;
        return json(429, { error: { message: 'Rate limit reached for model', type: 'tokens', code: 'rate_limit_exceeded' } },
            { 'x-ratelimit-reset-requests': '2m59.56s', 'x-ratelimit-reset-tokens': '1.66s' });
    case '503retry':
        if (name !== 'openrouter') return false;
        return json(503, { error: { code: 503, message: 'No instances available', metadata: {} } }, { 'retry-after': '2' });
    case 'midstream_error':
        if (name !== 'openrouter') return false;
        return sse([chunk(model, { role: 'assistant', content: '' }), chunk(model, { content: 'partial' }),
            { id: 'gen-fake', object: 'chat.completion.chunk', created: 1700000000, model,
                error: { code: 502, message: 'Provider disconnected' },
                choices: [{ index: 0, delta: { content: '' }, finish_reason: 'error' }] }]);
    case 'xgroq_error':
        if (name !== 'groq') return false;
        return sse([chunk(model, { role: 'assistant', content: '' }), chunk(model, { content: 'partial' }),
            Object.assign(chunk(model, {}, 'stop'), { x_groq: { id: 'req_fake', error: 'over capacity' } })]);
    case 'echo400':
        // Groq quotes a member it refuses; the member's name is the client's
        if (name !== 'groq') return false;
        return json(400, { error: { message: "property 'model does not exist' is unsupported, did you mean 'model'?",
            type: 'invalid_request_error' } });
    case 'tool_use_failed':
        // Groq: a tool call the model got wrong, reported inside the stream
        if (name !== 'groq') return false;
        return sse([chunk(model, { role: 'assistant', content: '' }), chunk(model, { content: 'partial' }),
            Object.assign(chunk(model, {}, 'stop'), { x_groq: { id: 'req_fake',
                error: { message: 'Failed to call a function.', type: 'invalid_request_error', code: 'tool_use_failed' } } })]);
    case 'redirect_model':
        if (name !== 'together') return false;
        return json(200, { id: 'chatcmpl-fake', object: 'chat.completion', created: 1700000000,
            model: 'mistralai/Mistral-Small-24B-Instruct-2501',
            choices: [{ index: 0, message: { role: 'assistant', content: 'redirected' }, finish_reason: 'stop' }],
            usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 } });
    case 'mistral422':
        if (name !== 'mistral') return false;
        return json(422, { object: 'error', message: { detail: [{ type: 'extra_forbidden', loc: ['body', 'stream_options'],
            msg: 'Extra inputs are not permitted', input: { include_usage: true } }] },
            type: 'invalid_request_message_error', param: null, code: null });
    case 'mistral400':
        if (name !== 'mistral') return false;
        return json(400, { object: 'error', message: 'Invalid temperature', type: 'invalid_request_error',
            param: 'temperature', code: null });
    case '429ms':
        if (name !== 'together') return false;
        return json(429, { error: { message: 'Rate limited', type: 'rate_limit_error' } }, { 'retry-after-ms': '1200' });
    case 'flex498':
        // Groq's flex tier out of capacity
        if (name !== 'groq') return false;
        return json(498, { error: { message: 'Flex tier capacity exceeded', type: 'capacity_exceeded', code: 'flex_tier_capacity_exceeded' } });
    case 'credits402':
        if (name !== 'openrouter') return false;
        return json(402, { error: { code: 402, message: 'Insufficient credits' } });
    case 'html400':
        if (name !== 'mistral') return false;
        res.writeHead(400, { 'content-type': 'text/html' });
        res.end('<html><body><h1>400 Bad Request</h1>\u0001</body></html>');
        return true;
    case 'meta400':
        if (name !== 'openrouter') return false;
        return json(400, { error: { code: 400, message: 'Provider returned error', metadata: { provider_name: 'X' } } });
    default:
        return false;
    }
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
