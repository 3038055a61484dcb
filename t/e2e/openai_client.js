// The official OpenAI SDK against the gateway, non-stream and stream.
// Prints one JSON line with what it saw; the .t file checks it.
'use strict';

const OpenAI = require('openai');

async function main() {
    const [baseURL, apiKey, model] = process.argv.slice(2);
    const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
    const out = {};

    const r = await client.chat.completions.create({
        model, messages: [{ role: 'user', content: 'Say something.' }], max_tokens: 8,
    });
    out.plain = {
        content: r.choices[0].message.content,
        finish: r.choices[0].finish_reason,
        usage: r.usage,
    };

    const stream = await client.chat.completions.create({
        model, messages: [{ role: 'user', content: 'Say more.' }], max_tokens: 8,
        stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let chunks = 0;
    let usage = null;
    let finish = null;
    for await (const c of stream) {
        chunks++;
        if (c.choices.length && c.choices[0].delta.content) text += c.choices[0].delta.content;
        if (c.choices.length && c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
        if (c.usage) usage = c.usage;
    }
    out.stream = { content: text, chunks, usage, finish };

    try {
        await client.chat.completions.create({ model: 'no-such-model',
            messages: [{ role: 'user', content: 'x' }] });
        out.error = null;
    } catch (e) {
        out.error = { status: e.status, code: e.code, type: e.type };
    }

    process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
    process.stdout.write(JSON.stringify({ fatal: String(e) }) + '\n');
    process.exit(1);
});
