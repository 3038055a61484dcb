# The response cache: hits and misses, canonical keys, stream and JSON
# sharing an entry, tenant isolation, what is never stored, TTL, the
# bypass headers, entries over 1 MiB, and what a hit is charged.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=0.60/1.80; }",
    server => "
        location /v1/ { llm_gateway; llm_auth on; llm_cache on;
                        llm_cache_max_entry 4m; llm_max_response_body 8m; }
        location /any/v1/ { llm_gateway; llm_auth on; llm_cache on;
                            llm_cache_policy any; }
        location /shared/v1/ { llm_gateway; llm_auth on; llm_cache on;
                               llm_cache_scope shared; }
        location /short/v1/ { llm_gateway; llm_auth on; llm_cache on;
                              llm_cache_ttl 1s; }
        location /quota/v1/ { llm_gateway; llm_auth on; llm_quota on;
                              llm_cache on; llm_default_max_tokens 100; }
        location /half/v1/ { llm_gateway; llm_auth on; llm_quota on;
                             llm_cache on; llm_cache_charge 50;
                             llm_default_max_tokens 100; }
        location /off/v1/ { llm_gateway; llm_auth on; }",
);

$t->add_tenant($rp, 'a', 'sk-a');
$t->add_tenant($rp, 'b', 'sk-b');

my $n = 0;
sub uniq { 'q' . ++$n . '-' . $$ }

# a chat request: path is the location's prefix (/v1), key sk-a unless
# given
sub ask {
    my ($body, %o) = @_;
    return post($gw, ($o{path} // '/v1') . '/chat/completions', $body,
        key => $o{key} // 'sk-a', headers => $o{headers});
}

sub req {
    my ($text, %o) = @_;
    return { model => 'mixtral-8x7b', temperature => 0,
             messages => [{ role => 'user', content => $text }], %o };
}

sub upstream { $t->mock_stats($up)->{requests} }

# ---------------------------------------------------------------- hit, miss

my $q = uniq();
my $before = upstream();
my ($st, $h, $b) = ask(req($q));
is($st, 200, 'miss: 200');
is($h->{'x-llm-cache'}, 'MISS', 'miss: x-llm-cache MISS');
my $first = json_of($b);
($st, $h, $b) = ask(req($q));
is($st, 200, 'hit: 200');
is($h->{'x-llm-cache'}, 'HIT', 'hit: x-llm-cache HIT');
is(upstream() - $before, 1, 'one upstream call for a miss and a hit');
my $hit = json_of($b);
ok($hit, 'hit: JSON body');
is($hit->{object}, 'chat.completion', 'hit: object');
is($hit->{choices}[0]{message}{content}, $first->{choices}[0]{message}{content},
   'hit: same content');
is($hit->{choices}[0]{finish_reason}, 'stop', 'hit: finish_reason');
like($hit->{id}, qr/^chatcmpl-[0-9a-f]{24}$/, 'hit: an id of its own');
isnt($hit->{id}, $first->{id}, 'hit: not the first answer\'s id');
cmp_ok(abs($hit->{created} - time), '<=', 5, 'hit: created is now');
is_deeply($hit->{usage}, $first->{usage}, 'hit: usage reported');
is($h->{'content-length'}, length($b), 'hit: exact Content-Length');

# ------------------------------------------------------------ canonical keys

$q = uniq();
$before = upstream();
ask(qq({"model":"mixtral-8x7b","temperature":0,"max_tokens":7,
         "messages":[{"role":"user","content":"$q"}]}));
($st, $h) = ask(qq({  "messages" : [ { "content":"$q", "role" : "user" } ],
    "max_tokens":7.0, "temperature" : 0.0,
    "model":"mixtral-8x7b", "user":"someone", "stream":false }));
is($h->{'x-llm-cache'}, 'HIT', 'reordered keys, whitespace, 0.0 and user: HIT');
($st, $h) = ask(qq({"model":"mixtral-8x7b","temperature":0,"max_tokens":8,
         "messages":[{"role":"user","content":"$q"}]}));
is($h->{'x-llm-cache'}, 'MISS', 'another max_tokens: MISS');
($st, $h) = ask(qq({"model":"mixtral-8x7b","temperature":0,"max_tokens":7,
         "messages":[{"role":"user","content":"$q "}]}));
is($h->{'x-llm-cache'}, 'MISS', 'other message text: MISS');
is(upstream() - $before, 3, 'three distinct requests, three upstream calls');

# the canonical form is of values, not of their spelling: escapes, nested
# key order and number spelling do not matter; types and boundaries do
$q = uniq();
$before = upstream();
ask(qq({"model":"mixtral-8x7b","temperature":0,"top_p":0.5,"stop":["x","y"],
         "tools":[{"type":"function","function":{"name":"f","parameters":{"a":1,"b":[true,null]}}}],
         "messages":[{"role":"user","content":"$q \xc3\xa9/"}]}));
($st, $h) = ask(qq({"messages":[{"content":"$q \\u00e9\\/","role":"user"}],
         "tools":[{"function":{"parameters":{"b":[true,null],"a":1e0},"name":"f"},"type":"function"}],
         "stop":["x","y"],"top_p":5e-1,"temperature":0,"model":"mixtral-8x7b"}));
is($h->{'x-llm-cache'}, 'HIT', 'escapes, nested key order, 1e0 and 5e-1: HIT');
($st, $h) = ask(qq({"model":"mixtral-8x7b","temperature":0,"top_p":0.5,"stop":["x\\",\\"y"],
         "tools":[{"type":"function","function":{"name":"f","parameters":{"a":1,"b":[true,null]}}}],
         "messages":[{"role":"user","content":"$q \xc3\xa9/"}]}));
is($h->{'x-llm-cache'}, 'MISS', 'one stop string that spells two when joined: MISS');
($st, $h) = ask(qq({"model":"mixtral-8x7b","temperature":0,"top_p":0.5,"stop":["x","y"],
         "tools":[{"type":"function","function":{"name":"f","parameters":{"a":"1","b":[true,null]}}}],
         "messages":[{"role":"user","content":"$q \xc3\xa9/"}]}));
is($h->{'x-llm-cache'}, 'MISS', 'a number turned string: MISS');
($st, $h) = ask(qq({"model":"mixtral-8x7b","temperature":0,"top_p":0.50000000000000011,"stop":["x","y"],
         "tools":[{"type":"function","function":{"name":"f","parameters":{"a":1,"b":[true,null]}}}],
         "messages":[{"role":"user","content":"$q \xc3\xa9/"}]}));
is($h->{'x-llm-cache'}, 'MISS', 'the next double after 0.5: MISS');
is(upstream() - $before, 4, 'four distinct requests, four upstream calls');

# ------------------------------------------- stream and JSON share an entry

$q = uniq();
$before = upstream();
($st, $h, $b) = ask(req($q));
my $want = content_of($b, $h);
($st, $h, $b) = ask(req($q, stream => JSON::PP::true()));
is($h->{'x-llm-cache'}, 'HIT', 'stream after JSON: HIT');
like($h->{'content-type'}, qr{^text/event-stream}, 'replay: event stream');
my @ev = sse_events($b);
is($ev[-1], '[DONE]', 'replay ends in [DONE]');
my @chunks = map { json_of($_) } grep { $_ ne '[DONE]' } @ev;
is(scalar(grep { !$_ } @chunks), 0, 'every replayed event is JSON');
is($chunks[0]{choices}[0]{delta}{role}, 'assistant', 'role chunk first');
is($chunks[-1]{choices}[0]{finish_reason}, 'stop', 'finish chunk last');
is($chunks[0]{object}, 'chat.completion.chunk', 'chunk object');
is(scalar(grep { $_->{usage} } @chunks), 0, 'no usage chunk unasked');
is(content_of($b, $h), $want, 'replayed content equals the answer');
my %ids = map { $_->{id} => 1 } @chunks;
is(scalar(keys %ids), 1, 'one id across the replay');
ok(!$ids{$first->{id}}, 'a fresh id');

($st, $h, $b) = ask(req($q, stream => JSON::PP::true(),
                         stream_options => { include_usage => JSON::PP::true() }));
@chunks = map { json_of($_) } grep { $_ ne '[DONE]' } sse_events($b);
ok($chunks[-1]{usage} && !@{ $chunks[-1]{choices} },
   'include_usage: a usage chunk with no choices, last');
is($chunks[-1]{usage}{prompt_tokens}, 11, 'replayed usage');
is(upstream() - $before, 1, 'stream replays took no upstream call');

# later replays of an entry come from the worker's rendered copy: the same
# events, with their own id and time, the usage event only when asked
my @again;
for my $usage (0, 1, 0) {
    ($st, $h, $b) = ask(req($q, stream => JSON::PP::true(),
        $usage ? (stream_options => { include_usage => JSON::PP::true() }) : ()));
    my @c = map { json_of($_) } grep { $_ ne '[DONE]' } sse_events($b);
    is(scalar(grep { $_->{usage} } @c), $usage, "replay again, include_usage=$usage");
    is(content_of($b, $h), $want, "replay again, include_usage=$usage: content");
    is((sse_events($b))[-1], '[DONE]', "replay again, include_usage=$usage: [DONE]");
    is($h->{'content-length'}, length($b), "replay again, include_usage=$usage: exact Content-Length");
    cmp_ok(abs($c[0]{created} - time), '<=', 5, 'its own created time');
    is(scalar(keys %{{ map { $_->{id} => 1 } @c }}), 1, 'one id across it');
    push @again, $c[0]{id};
}
is(scalar(keys %{{ map { $_ => 1 } @again }}), 3, 'a fresh id each time');

# entries of the same size, other content: each replay is its own
my @qs = (uniq(), uniq());
my %text = ($qs[0] => 'alpha beta', $qs[1] => 'gamma delt');
for my $x (@qs) {
    ask(req("MOCK:{\"texts\":[\"$text{$x}\"],\"x\":\"$x\"}",
             stream => JSON::PP::true()));
}
for my $round (1 .. 2) {
    for my $x (@qs) {
        ($st, $h, $b) = ask(req("MOCK:{\"texts\":[\"$text{$x}\"],\"x\":\"$x\"}",
                                 stream => JSON::PP::true()));
        is($h->{'x-llm-cache'}, 'HIT', "same-size entry $round: HIT");
        is(content_of($b, $h), $text{$x}, "same-size entry $round: its own content");
    }
}

# a stream stored, then asked for as JSON
$q = uniq();
$before = upstream();
($st, $h, $b) = ask(req("MOCK:{\"tokens\":9,\"x\":\"$q\"}", stream => JSON::PP::true()));
is($h->{'x-llm-cache'}, 'MISS', 'stream: MISS');
$want = content_of($b, $h);
is($want, join('', map { "t$_ " } 0 .. 8), 'streamed content');
($st, $h, $b) = ask(req("MOCK:{\"tokens\":9,\"x\":\"$q\"}"));
is($h->{'x-llm-cache'}, 'HIT', 'JSON after a stream: HIT');
my $j = json_of($b);
is($j->{choices}[0]{message}{content}, $want, 'assembled stream as JSON');
is($j->{usage}{completion_tokens}, 9, 'assembled usage');
is($j->{choices}[0]{finish_reason}, 'stop', 'assembled finish_reason');
is(upstream() - $before, 1, 'stream, then JSON: one upstream call');

# ------------------------------------------------ what is cacheable at all

$q = uniq();
($st, $h) = ask({ model => 'mixtral-8x7b', messages => [{ role => 'user', content => $q }] });
is($h->{'x-llm-cache'}, 'BYPASS', 'no temperature: BYPASS');
($st, $h) = ask(req($q, temperature => 0.7));
is($h->{'x-llm-cache'}, 'BYPASS', 'temperature 0.7: BYPASS');
ask(req($q, temperature => 0.7, seed => 42));
($st, $h) = ask(req($q, temperature => 0.7, seed => 42));
is($h->{'x-llm-cache'}, 'HIT', 'a fixed seed is deterministic: HIT');
($st, $h) = ask({ model => 'mixtral-8x7b', messages => [{ role => 'user', content => $q }] },
                 path => '/any/v1');
is($h->{'x-llm-cache'}, 'MISS', 'llm_cache_policy any: looked up');
($st, $h) = ask({ model => 'mixtral-8x7b', messages => [{ role => 'user', content => $q }] },
                 path => '/any/v1');
is($h->{'x-llm-cache'}, 'HIT', 'llm_cache_policy any: HIT');
($st, $h) = ask(req($q), path => '/off/v1');
ok(!exists $h->{'x-llm-cache'}, 'llm_cache off: no header');
($st, $h) = ask(req($q, logprobs => JSON::PP::true()));
is($h->{'x-llm-cache'}, 'BYPASS', 'logprobs: BYPASS');

# per tenant: "cache" in its hash overrides the location
$t->add_tenant($rp, 'c', 'sk-c', cache => 'off');
($st, $h) = ask(req($q), key => 'sk-c');
is($h->{'x-llm-cache'}, 'BYPASS', 'tenant cache=off: BYPASS');
$t->add_tenant($rp, 'd', 'sk-d', cache => 'any');
ask({ model => 'mixtral-8x7b', messages => [{ role => 'user', content => $q }] }, key => 'sk-d');
($st, $h) = ask({ model => 'mixtral-8x7b', messages => [{ role => 'user', content => $q }] },
                 key => 'sk-d');
is($h->{'x-llm-cache'}, 'HIT', 'tenant cache=any: HIT');

# ------------------------------------------------------------------ isolation

$q = uniq();
($st, $h, $b) = ask(req($q), key => 'sk-a');
is($h->{'x-llm-cache'}, 'MISS', 'tenant a: MISS');
($st, $h) = ask(req($q), key => 'sk-b');
is($h->{'x-llm-cache'}, 'MISS', 'tenant b never sees a\'s entry');
($st, $h) = ask(req($q), key => 'sk-a');
is($h->{'x-llm-cache'}, 'HIT', 'tenant a: HIT');
my @keys = grep { /\S/ } split /\n/, $t->redis_cli($rp, '--scan', '--pattern', key_prefix(KEY_CACHE) . '*');
my $entry = key_re(KEY_CACHE, 'a', qr/[0-9a-f]{64}/);
ok((grep { /^$entry$/ } @keys), 'entries live under the tenant');
ok(!(grep { /:lock$/ } @keys), 'no lock left behind');

ask(req($q), key => 'sk-a', path => '/shared/v1');
($st, $h) = ask(req($q), key => 'sk-b', path => '/shared/v1');
is($h->{'x-llm-cache'}, 'HIT', 'llm_cache_scope shared: b sees a\'s entry');

# llm-admin cache purge: a tenant's entries go, the shared scope's stay
my $admin = "$LLMTest::ROOT/redis/llm-admin -p $rp cache purge";
like(`$admin --tenant a`, qr/^[1-9]\d* cached answers purged$/m, 'purge tenant a');
($st, $h) = ask(req($q), key => 'sk-a');
is($h->{'x-llm-cache'}, 'MISS', 'after the purge: MISS');
($st, $h) = ask(req($q), key => 'sk-b', path => '/shared/v1');
is($h->{'x-llm-cache'}, 'HIT', 'the shared scope was not purged');
like(`$admin --shared`, qr/^[1-9]\d* cached answers purged$/m, 'purge the shared scope');
($st, $h) = ask(req($q), key => 'sk-b', path => '/shared/v1');
is($h->{'x-llm-cache'}, 'MISS', 'shared: MISS after its purge');

# ---------------------------------------------------- never stored

$q = uniq();
$before = upstream();
($st, $h) = ask(req("MOCK:{\"status\":500,\"x\":\"$q\"}"));
is($st, 502, 'upstream error: 502');
($st, $h) = ask(req("MOCK:{\"status\":500,\"x\":\"$q\"}"));
is($h->{'x-llm-cache'}, 'MISS', 'an error is not stored');
($st, $h) = ask(req("MOCK:{\"status\":400,\"x\":\"$q\"}"));
ask(req("MOCK:{\"status\":400,\"x\":\"$q\"}"));
is(upstream() - $before, 4, 'errors went upstream every time');

$q = uniq();
($st, $h, $b) = ask(req("MOCK:{\"disconnect_after\":3,\"x\":\"$q\"}",
                         stream => JSON::PP::true()));
like($b, qr/"error"/, 'truncated stream ends in an error event');
($st, $h) = ask(req("MOCK:{\"disconnect_after\":3,\"x\":\"$q\"}",
                     stream => JSON::PP::true()));
is($h->{'x-llm-cache'}, 'MISS', 'a truncated stream is not stored');

$q = uniq();
($st, $h) = ask(req("MOCK:{\"disconnect_after\":1,\"x\":\"$q\"}"));
($st, $h) = ask(req("MOCK:{\"disconnect_after\":1,\"x\":\"$q\"}"));
is($h->{'x-llm-cache'}, 'MISS', 'a truncated JSON body is not stored');

# a client that leaves mid-stream
$q = uniq();
{
    my $body = encode_json(req("MOCK:{\"tokens\":20,\"pace_ms\":50,\"x\":\"$q\"}",
                               stream => JSON::PP::true()));
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw) or die;
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        . "Authorization: Bearer sk-a\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
    my $got = '';
    while ($got !~ /t2 /) { sysread($s, my $buf, 4096) or last; $got .= $buf }
    close $s;
}
select(undef, undef, undef, 1.5);
($st, $h) = ask(req("MOCK:{\"tokens\":20,\"pace_ms\":50,\"x\":\"$q\"}",
                     stream => JSON::PP::true()));
is($h->{'x-llm-cache'}, 'MISS', 'an aborted request is not stored');
($st, $h) = ask(req("MOCK:{\"tokens\":20,\"pace_ms\":50,\"x\":\"$q\"}"));
is($h->{'x-llm-cache'}, 'HIT', 'the complete one after it is');

# -------------------------------------------------------------- lifecycle

$q = uniq();
ask(req($q), path => '/short/v1');
($st, $h) = ask(req($q), path => '/short/v1');
is($h->{'x-llm-cache'}, 'HIT', 'ttl 1s: HIT at once');
select(undef, undef, undef, 1.3);
($st, $h) = ask(req($q), path => '/short/v1');
is($h->{'x-llm-cache'}, 'MISS', 'ttl 1s: MISS after 1.3 s');

$q = uniq();
$before = upstream();
ask(req($q));
($st, $h) = ask(req($q), headers => { 'Cache-Control' => 'no-cache' });
is($h->{'x-llm-cache'}, 'BYPASS', 'no-cache: BYPASS');
is(upstream() - $before, 2, 'no-cache went upstream');
($st, $h) = ask(req($q), headers => { 'Cache-Control' => 'max-age=0, no-cache' });
is($h->{'x-llm-cache'}, 'BYPASS', 'no-cache among other directives');

$q = uniq();
($st, $h) = ask(req($q), headers => { 'Cache-Control' => 'no-store' });
is($h->{'x-llm-cache'}, 'MISS', 'no-store: looked up');
($st, $h) = ask(req($q));
is($h->{'x-llm-cache'}, 'MISS', 'no-store: nothing stored');
($st, $h) = ask(req($q), headers => { 'Cache-Control' => 'no-store' });
is($h->{'x-llm-cache'}, 'HIT', 'no-store still reads a stored entry');

# ------------------------------------------------------------- big entries

$q = uniq();
my $size = 1536 * 1024;
$before = upstream();
($st, $h, $b) = ask(req("MOCK:{\"size\":$size,\"x\":\"$q\"}"));
is($st, 200, '1.5 MiB answer');
$want = content_of($b, $h);
is(length($want), $size, '1.5 MiB of content');
($st, $h, $b) = ask(req("MOCK:{\"size\":$size,\"x\":\"$q\"}"));
is($h->{'x-llm-cache'}, 'HIT', '1.5 MiB entry: HIT');
ok(content_of($b, $h) eq $want, '1.5 MiB entry: same content');
($st, $h, $b) = ask(req("MOCK:{\"size\":$size,\"x\":\"$q\"}", stream => JSON::PP::true()));
is($h->{'x-llm-cache'}, 'HIT', '1.5 MiB entry replayed as a stream');
ok(content_of($b, $h) eq $want, '1.5 MiB replay: same content');
is(upstream() - $before, 1, '1.5 MiB: one upstream call');

$q = uniq();
($st, $h, $b) = ask(req("MOCK:{\"size\":$size,\"chunk\":4096,\"x\":\"$q\"}",
                         stream => JSON::PP::true()));
($st, $h, $b) = ask(req("MOCK:{\"size\":$size,\"chunk\":4096,\"x\":\"$q\"}"));
is($h->{'x-llm-cache'}, 'HIT', '1.5 MiB stream assembled and stored');
is(length(content_of($b, $h) // ''), $size, 'assembled 1.5 MiB');

$q = uniq();
($st, $h, $b) = ask(req("MOCK:{\"size\":5000000,\"x\":\"$q\"}"));
is($st, 200, 'answer over llm_cache_max_entry served');
($st, $h) = ask(req("MOCK:{\"size\":5000000,\"x\":\"$q\"}"));
is($h->{'x-llm-cache'}, 'MISS', 'answer over llm_cache_max_entry not stored');

# ------------------------------------------------------------- accounting

my $day = strftime('%Y%m%d', gmtime);
$t->add_tenant($rp, 'qa', 'sk-qa', rpm => 1000);
$q = uniq();
ask(req($q), path => '/quota/v1', key => 'sk-qa');
($st, $h) = ask(req($q), path => '/quota/v1', key => 'sk-qa');
is($h->{'x-llm-cache'}, 'HIT', 'quota location: HIT');
ok(defined $h->{'x-ratelimit-remaining-requests'}, 'a hit is admitted like any request');
ok(wait_until(sub {
    ($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'qa', $day), 'mixtral-8x7b|cache|cached') // '') eq '1'
}, 3), 'usage record counts the hit');
is($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'qa', $day), 'mixtral-8x7b|cache|cost_micro_usd'), 0,
   'a hit costs nothing by default');
is($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'qa', $day), 'mixtral-8x7b|cache|prompt_tokens'), 11,
   'a hit records its tokens');
my $miss_cost = $t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'qa', $day),
                              "mixtral-8x7b|127.0.0.1:$up|cost_micro_usd");
is($miss_cost, 16, 'the miss cost 11 x 0.60 + 5 x 1.80 micro-dollars, rounded up');
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'qa', $day), 'settled'), 16,
   'spend: the miss only');

$t->add_tenant($rp, 'qh', 'sk-qh', rpm => 1000);
$q = uniq();
ask(req($q), path => '/half/v1', key => 'sk-qh');
ask(req($q), path => '/half/v1', key => 'sk-qh');
ok(wait_until(sub {
    ($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'qh', $day), 'mixtral-8x7b|cache|cost_micro_usd') // '') eq '8'
}, 3), 'llm_cache_charge 50: half of 16 micro-dollars');
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'qh', $day), 'settled'), 24, 'spend: 16 + 8');

# a hit refused by the rate limit is refused before the cache
$t->add_tenant($rp, 'qr', 'sk-qr', rpm => 1);
$q = uniq();
ask(req($q), path => '/quota/v1', key => 'sk-qr');
($st) = ask(req($q), path => '/quota/v1', key => 'sk-qr');
is($st, 429, 'over rpm: 429 even with an entry');

like($t->access_log($gw), qr/cache=HIT/, '$llm_cache_status in the log');

$t->cleanup;
done_testing;
