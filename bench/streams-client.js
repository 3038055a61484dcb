// The client of bench/streams.sh: WAVES waves of N concurrent streamed chat
// completions through the gateway, the worker's memory read from /proc at
// the start, when all of a wave's streams are open, and after each wave.
// Usage: node streams-client.js URL N WAVES WORKER_PID
// Prints one tab-separated line per sample:
//   wave phase open ok failed VmRSS_kB RssAnon_kB RssShmem_kB
'use strict';
const http = require('http');
const fs = require('fs');

const [url, nArg, wavesArg, pidArg] = process.argv.slice(2);
const N = Number(nArg), WAVES = Number(wavesArg);
const u = new URL(url);
const body = JSON.stringify({
    model: 'bench-streams', stream: true, max_tokens: 64,
    messages: [{ role: 'user', content: 'Count slowly, please.' }],
});
const BATCH = 250;   // connections opened per turn of the ramp

function mem() {
    const s = fs.readFileSync('/proc/' + pidArg + '/status', 'utf8');
    const f = (k) => Number((s.match(new RegExp('^' + k + ':\\s+(\\d+)', 'm'))
                             || [0, 0])[1]);
    return [f('VmRSS'), f('RssAnon'), f('RssShmem')];
}

function sample(wave, phase, open, ok, failed) {
    console.log([wave, phase, open, ok, failed].concat(mem()).join('\t'));
}

function one(state) {
    return new Promise((resolve) => {
        let first = false, text = '';
        const req = http.request({
            host: u.hostname, port: u.port, path: u.pathname, method: 'POST',
            agent: false,
            headers: { 'content-type': 'application/json',
                       'content-length': Buffer.byteLength(body) },
        }, (res) => {
            res.setEncoding('utf8');
            res.on('data', (d) => {
                if (!first) { first = true; state.open++; state.check(); }
                // keep only the tail: [DONE] is all that is looked for
                text = (text + d).slice(-64);
            });
            res.on('end', () => {
                const ok = res.statusCode === 200
                           && text.includes('data: [DONE]');
                resolve(ok);
            });
            res.on('error', () => resolve(false));
        });
        req.on('error', () => {
            if (!first) { state.open++; state.check(); }
            resolve(false);
        });
        req.end(body);
    });
}

async function wave(w) {
    const state = { open: 0 };
    let peakTaken;
    const peak = new Promise((r) => { peakTaken = r; });
    state.check = () => { if (state.open === N) peakTaken(); };
    const all = [];
    for (let i = 0; i < N; i += BATCH) {
        for (let j = i; j < Math.min(N, i + BATCH); j++) all.push(one(state));
        await new Promise((r) => setTimeout(r, 20));
    }
    await peak;
    const results = Promise.all(all);
    // all N have their first bytes: this is the wave's peak
    sample(w, 'peak', state.open, 0, 0);
    const r = await results;
    const ok = r.filter(Boolean).length;
    await new Promise((res) => setTimeout(res, 2000));
    sample(w, 'after', 0, ok, N - ok);
}

(async () => {
    sample(0, 'baseline', 0, 0, 0);
    for (let w = 1; w <= WAVES; w++) await wave(w);
})();
