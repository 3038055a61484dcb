#!/usr/bin/env node
// The status page in a headless Chromium: every number it shows against
// the JSON it serves, and whatever went wrong while it loaded.
//
//   node t/browser/status.js URL SCREENSHOT.png [--wait-refresh]
//
// Launches $CHROMIUM (default /usr/bin/chromium, Debian's) through
// playwright-core, loads URL at 1280 px width, with --wait-refresh waits
// (15 s at most) until the page has completed a fetch of a URL with
// format=json in it, then fetches URL with format=json itself and checks
// each element carrying data-json="<dotted path>" (array indices as
// numbers): the text is the value at that path times data-scale (default
// 1) with data-d decimals (default 0), within half a unit of the last
// decimal; a JSON null is shown as "–" (U+2013) or "-".  A missing path,
// a value that is not a number or null, or a text that is not a number or
// a dash is a mismatch.  Live counters may move between the page's
// rendering and the harness's fetch, so a check with mismatches is done
// again, up to three times in all, 300 ms apart, and the last one is
// reported.
//
// The page must be self-contained: a request to any other host than the
// page's own is recorded and aborted, never sent.  Then a full-page
// screenshot.  It prints one JSON object on stdout:
//
//   {"checked": N, "mismatches": [{"path", "text", "value", "reason"}...],
//    "console_errors": [...], "page_errors": [...],
//    "external_requests": [...], "failed_requests": [...],
//    "sparklines": N, "sparkline_errors": [{"series", "reason"}...],
//    "refreshed": bool, "attempts": N, "screenshot": "path", "title": "..."}
//
// failed_requests: requests to the page's own host that failed or were
// answered with a status of 400 or more (the aborted external ones are in
// external_requests only).  sparklines: the number of <svg class="spark">;
// sparkline_errors: those whose data-series does not name an array of
// numbers (or nulls) in the JSON.  refreshed: whether a format=json fetch
// of the page's own completed (always checked, waited for only with
// --wait-refresh).
//
// It exits 0 whatever it found (the caller judges); 2 on bad usage, 3 if
// the browser could not start, 4 if the page could not load (no answer,
// or a status other than 2xx), then with {"error": "..."} on stdout.
'use strict';

const { chromium } = require('playwright-core');

const REFRESH_TIMEOUT_MS = 15000;
const LOAD_TIMEOUT_MS = 30000;
const ATTEMPTS = 3;

function usage() {
    process.stderr.write('usage: node t/browser/status.js URL SCREENSHOT.png [--wait-refresh]\n');
    process.exit(2);
}

const opts = process.argv.slice(2).filter((a) => a.startsWith('--'));
const pos = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (pos.length !== 2 || opts.some((o) => o !== '--wait-refresh')) usage();
const [pageUrl, shotPath] = pos;
const waitRefresh = opts.includes('--wait-refresh');

let page_url;
try {
    page_url = new URL(pageUrl);
} catch (e) {
    process.stderr.write(`status.js: not a URL: ${pageUrl}\n`);
    process.exit(2);
}
const jsonUrl = new URL(page_url.href);
jsonUrl.searchParams.set('format', 'json');

function fail(code, msg) {
    process.stdout.write(JSON.stringify({ error: msg }) + '\n');
    process.stderr.write(`status.js: ${msg}\n`);
    process.exit(code);
}

// the value at a dotted path; {found: false} when any step is missing
function resolve(doc, path) {
    let cur = doc;
    for (const seg of String(path).split('.')) {
        if (Array.isArray(cur)) {
            if (!/^\d+$/.test(seg) || Number(seg) >= cur.length) return { found: false };
            cur = cur[Number(seg)];
        } else if (cur !== null && typeof cur === 'object') {
            if (!Object.prototype.hasOwnProperty.call(cur, seg)) return { found: false };
            cur = cur[seg];
        } else {
            return { found: false };
        }
    }
    return { found: true, value: cur };
}

const DASHES = new Set(['\u2013', '-']);

// the number a text shows: null for a dash, NaN for no number; grouping
// spaces and commas and a Unicode minus are taken
function parseShown(text) {
    const t = text.replace(/[\s\u00a0\u2009\u202f]+/g, '');
    if (DASHES.has(t)) return null;
    const n = t.replace(/\u2212/g, '-').replace(/,(?=\d{3}(\D|$))/g, '');
    if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(n)) return NaN;
    return Number(n);
}

// one element against the document: null if it matches, else the reason
function judge(doc, el) {
    const r = resolve(doc, el.path);
    if (!r.found) return { value: null, reason: 'no such path in the JSON' };
    const v = r.value;
    const shown = parseShown(el.text);
    if (v === null) {
        return shown === null ? null : { value: null, reason: 'null in the JSON, not shown as a dash' };
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) {
        return { value: v, reason: 'not a number in the JSON' };
    }
    const scale = el.scale === null ? 1 : Number(el.scale);
    const d = el.d === null ? 0 : Number(el.d);
    if (!Number.isFinite(scale) || !Number.isInteger(d) || d < 0 || d > 20) {
        return { value: v, reason: `bad data-scale "${el.scale}" or data-d "${el.d}"` };
    }
    if (shown === null) return { value: v, reason: 'a number in the JSON, shown as a dash' };
    if (Number.isNaN(shown)) return { value: v, reason: 'the text is not a number' };
    const want = v * scale;
    const tol = 0.5 * Math.pow(10, -d);
    // a little more than half a unit, for the binary fractions either side
    if (Math.abs(shown - want) > tol * (1 + 1e-9) + Math.abs(want) * 1e-12) {
        return { value: v, reason: `expected ${want.toFixed(d)}` };
    }
    return null;
}

async function fetchJson() {
    const res = await fetch(jsonUrl.href, { headers: { accept: 'application/json' } });
    const body = await res.text();
    if (!res.ok) throw new Error(`${jsonUrl.href}: HTTP ${res.status}`);
    try {
        return JSON.parse(body);
    } catch (e) {
        throw new Error(`${jsonUrl.href}: not JSON: ${e.message}`);
    }
}

// what the page shows, read in one go
function readPage(page) {
    return page.evaluate(() => ({
        numbers: Array.from(document.querySelectorAll('[data-json]'), (e) => ({
            path: e.getAttribute('data-json'),
            text: e.textContent.trim(),
            scale: e.getAttribute('data-scale'),
            d: e.getAttribute('data-d'),
        })),
        sparks: Array.from(document.querySelectorAll('svg.spark'), (e) => e.getAttribute('data-series')),
    }));
}

function checkSparks(doc, series) {
    const errors = [];
    for (const s of series) {
        if (s === null) { errors.push({ series: null, reason: 'no data-series' }); continue; }
        const r = resolve(doc, s);
        if (!r.found) errors.push({ series: s, reason: 'no such path in the JSON' });
        else if (!Array.isArray(r.value)) errors.push({ series: s, reason: 'not an array in the JSON' });
        else if (r.value.some((x) => x !== null && typeof x !== 'number')) {
            errors.push({ series: s, reason: 'not all numbers in the JSON' });
        }
    }
    return errors;
}

async function main() {
    const out = {
        checked: 0, mismatches: [], console_errors: [], page_errors: [],
        external_requests: [], failed_requests: [], sparklines: 0,
        sparkline_errors: [], refreshed: false, attempts: 0,
        screenshot: shotPath, title: '',
    };

    let browser;
    try {
        browser = await chromium.launch({
            executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
            args: ['--no-sandbox'],
        });
    } catch (e) {
        fail(3, `the browser did not start: ${e.message.split('\n')[0]}`);
    }

    try {
        const context = await browser.newContext({
            viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1,
            serviceWorkers: 'block',
        });
        const page = await context.newPage();
        const own = page_url.host;
        const isOwn = (u) => {
            try {
                const x = new URL(u);
                if (x.protocol === 'data:' || x.protocol === 'blob:' || x.protocol === 'about:') return true;
                return x.host === own && (x.protocol === 'http:' || x.protocol === 'https:');
            } catch (e) {
                return false;
            }
        };
        const aborted = new Set();
        await context.route('**/*', (route) => {
            const req = route.request();
            if (isOwn(req.url())) return route.continue();
            out.external_requests.push(req.url());
            aborted.add(req);
            return route.abort('blockedbyclient');
        });
        // WebSockets are not routed above
        page.on('websocket', (ws) => { if (!isOwn(ws.url().replace(/^ws/, 'http'))) out.external_requests.push(ws.url()); });

        page.on('console', (msg) => {
            if (msg.type() !== 'error') return;
            const loc = msg.location();
            out.console_errors.push(msg.text() + (loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''));
        });
        page.on('pageerror', (err) => {
            out.page_errors.push(`${err.name || 'Error'}: ${err.message}`);
        });
        page.on('requestfailed', (req) => {
            if (aborted.has(req)) return;
            const f = req.failure();
            out.failed_requests.push(`${req.method()} ${req.url()}: ${f ? f.errorText : 'failed'}`);
        });
        let refreshWaiters = [];
        page.on('requestfinished', async (req) => {
            if (!isOwn(req.url())) return;
            const res = await req.response().catch(() => null);
            if (res && res.status() >= 400) {
                out.failed_requests.push(`${req.method()} ${req.url()}: HTTP ${res.status()}`);
            }
            if (req.url().includes('format=json') && req.resourceType() !== 'document') {
                out.refreshed = true;
                refreshWaiters.forEach((f) => f());
                refreshWaiters = [];
            }
        });

        let res;
        try {
            res = await page.goto(page_url.href, { waitUntil: 'load', timeout: LOAD_TIMEOUT_MS });
        } catch (e) {
            fail(4, `the page did not load: ${e.message.split('\n')[0]}`);
        }
        if (!res) fail(4, 'the page did not load: no response');
        if (res.status() < 200 || res.status() > 299) {
            fail(4, `the page did not load: HTTP ${res.status()}`);
        }

        if (waitRefresh && !out.refreshed) {
            let timer;
            await Promise.race([
                new Promise((r) => refreshWaiters.push(r)),
                new Promise((r) => { timer = setTimeout(r, REFRESH_TIMEOUT_MS); }),
            ]);
            clearTimeout(timer);
        }
        // the fetch is complete; give its handler time to rewrite the page
        await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 100))));

        for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
            out.attempts = attempt;
            const shown = await readPage(page);
            let doc = null;
            try {
                doc = await fetchJson();
                delete out.json_error;
            } catch (e) {
                out.json_error = e.message;
            }
            out.checked = shown.numbers.length;
            out.sparklines = shown.sparks.length;
            out.mismatches = [];
            for (const el of shown.numbers) {
                const bad = doc === null ? { value: null, reason: 'no JSON document' } : judge(doc, el);
                if (bad) out.mismatches.push({ path: el.path, text: el.text, value: bad.value, reason: bad.reason });
            }
            out.sparkline_errors = doc === null ? [] : checkSparks(doc, shown.sparks);
            if (out.mismatches.length === 0 || attempt === ATTEMPTS) break;
            await new Promise((r) => setTimeout(r, 300));
        }

        out.title = await page.title();
        await page.screenshot({ path: shotPath, fullPage: true });
        await context.close();
    } finally {
        await browser.close().catch(() => {});
    }
    process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => fail(1, e.stack || String(e)));
