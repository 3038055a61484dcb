// A slow SSE upstream for bench/streams.sh: every chat completion is a
// stream that sends a chunk a second for HOLD seconds, then its usage and
// [DONE].  Usage: node streams-mock.js PORT HOLD_SECONDS
'use strict';
const http = require('http');

const port = Number(process.argv[2]);
const hold = Number(process.argv[3]) * 1000;

function chunk(delta, extra) {
    return 'data: ' + JSON.stringify(Object.assign({
        id: 'chatcmpl-streams', object: 'chat.completion.chunk',
        created: 1700000000, model: 'bench',
        choices: [{ index: 0, delta: delta, finish_reason: null }],
    }, extra || {})) + '\n\n';
}

const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk({ role: 'assistant', content: 'Hello' }));
        let n = 1;
        const tick = setInterval(() => {
            res.write(chunk({ content: ' tick' }));
            n++;
        }, 1000);
        const done = setTimeout(() => {
            clearInterval(tick);
            res.write(chunk({}, { choices: [{ index: 0, delta: {},
                                               finish_reason: 'stop' }] }));
            res.write(chunk({}, { choices: [], usage: { prompt_tokens: 8,
                completion_tokens: n, total_tokens: 8 + n } }));
            res.end('data: [DONE]\n\n');
        }, hold);
        res.on('close', () => { clearInterval(tick); clearTimeout(done); });
    });
});
server.keepAliveTimeout = 60000;
server.headersTimeout = 0;
server.requestTimeout = 0;
server.listen({ port: port, host: '127.0.0.1', backlog: 16384 });
