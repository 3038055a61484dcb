# The upstream reply side (issue 11): usage from the end of answers too
# large to keep, a generation timeout for non-streamed requests that
# neither fails over nor trips the breaker, stream token estimates, the SSE
# relay's multi-line data, bare CRs and comments, key masking across reads,
# control bytes in upstream headers, failing backends' bodies in the log.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);
use POSIX ();
use LLMTest;

my $KEY = 'sk-relay-0123456789abcdef-secret';
local $ENV{LLMT_RELAY_KEY} = $KEY;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $gw = $t->start_nginx(
    http => "llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }
             llm_model keyed { backend http://127.0.0.1:$up/k/v1 api_key_env=LLMT_RELAY_KEY; }
             llm_model logged { backend http://127.0.0.1:$up/l/v1 api_key_env=LLMT_RELAY_KEY; }
             llm_model priced { backend http://127.0.0.1:$up/v1 price=1/2; }
             llm_model gen { backend http://127.0.0.1:$up/g1/v1; backend http://127.0.0.1:$up/g2/v1; }
             llm_breaker failures=1 cooldown=60s;",
    server => 'location /v1/ {
                   llm_gateway;
                   llm_max_response_body 64k;
                   llm_first_byte_timeout 500ms;
                   llm_generation_timeout 2s;
               }
               location /cost/v1/ {
                   llm_gateway;
                   llm_cost_header on;
                   llm_max_response_body 64k;
               }',
);

my $requests = 0;

# a request to model with the mock's knobs, counted for last_log()
sub ask {
    my ($model, $knobs, %o) = @_;
    $requests++;
    return chat($gw, model => $model, knobs => $knobs, %o);
}

sub stream {
    return ask(@_, stream => JSON::PP::true);
}

# the response exactly as it came, head included
sub raw_chat {
    my ($model, $knobs, $path) = @_;
    my $body = LLMTest::chat_body(model => $model, knobs => $knobs);
    $path //= '/v1/chat/completions';
    $requests++;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw) or die;
    print $s "POST $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTE: trailers\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($body)
        . "\r\n\r\n$body";
    my $raw = '';
    my $sel = IO::Select->new($s);
    my $end = time + 10;
    while (time < $end && $sel->can_read($end - time)) {
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
    }
    close $s;
    return $raw;
}

# what a request logs at its end may come after its response
sub logged {
    my ($re, $n) = @_;
    wait_until(sub { (() = $t->error_log($gw) =~ /$re/g) >= ($n // 1) }, 3);
    return scalar(() = $t->error_log($gw) =~ /$re/g);
}

# the access log line of the last request, once it is written
sub last_log {
    my @l;
    wait_until(sub { @l = split /\n/, $t->access_log($gw); @l >= $requests }, 3);
    return $l[-1] // '';
}

sub delta {
    my ($d) = @_;
    return 'data: ' . encode_json({ id => 'c', object => 'chat.completion.chunk',
        choices => [{ index => 0, delta => $d, finish_reason => undef }] }) . "\n\n";
}

# ---------------------------------------------------------------- H3

my $size = 200 * 1024;
my ($st, $h, $b) = ask('mixtral-8x7b', { size => $size, completion_tokens => 4242 });
is($st, 200, 'H3: an answer over llm_max_response_body is served');
is(length((json_of($b) // {})->{choices}[0]{message}{content} // ''), $size, 'H3: and arrives whole');
like(last_log(), qr/ctok=4242 /, 'H3: its usage is read from the end of the body');

($st, $h, $b) = ask('mixtral-8x7b', { size => $size, completion_tokens => 4343 },
    path => '/cost/v1/chat/completions');
is($st, 200, 'H3: an answer over the limit, held for the cost header, is served');
like(last_log(), qr/ctok=4343 /, 'H3: its usage is read from the end too');

my $raw = raw_chat('priced', { size => $size, completion_tokens => 4343 },
    '/cost/v1/chat/completions');
like($raw, qr/\r\n0\r\nx-llm-cost-usd: 0\.008697\r\n\r\n\z/i,
    'H3: an answer too large to hold has its cost, from the usage at its end, as a trailer');

# a text that looks like usage near the end is inside a string: escaped
my $decoy = ('x' x $size) . '"usage":{"prompt_tokens":1,"completion_tokens":1}}';
($st, $h, $b) = ask('mixtral-8x7b', { texts => [$decoy], completion_tokens => 777 });
is($st, 200, 'H3: an answer ending in a text that looks like usage');
like(last_log(), qr/ctok=777 /, 'H3: the top-level usage is read, not the text');

($st, $h, $b) = ask('mixtral-8x7b', { size => $size, no_usage => JSON::PP::true });
is($st, 200, 'H3: an answer over the limit without usage is served');
my $lost = qr/the usage of backend "[^"]+"'s answer could not be read/;
is(logged($lost), 1, 'H3: an answer over the limit without usage is marked as unreadable');

($st, $h, $b) = ask('mixtral-8x7b', { pieces => ['{"id":"x","choices":[{"message":'] });
is($st, 200, 'H3: a broken JSON answer passes as it came');
is(logged($lost, 2), 2, 'H3: a 200 answer that does not parse is marked as unreadable');

# ---------------------------------------------------------------- H4

$t->mock_reset($up);
($st, $h, $b) = ask('gen', { latency_ms => 1000 });
is($st, 200, 'H4: a non-streamed generation longer than llm_first_byte_timeout is served');
is($t->mock_stats($up)->{requests}, 1, 'H4: by the first backend, no failover');

# the backend is busy, not hung: it answers others meanwhile (one of the
# two short requests goes to it, the other to the idle second backend)
$t->mock_reset($up);
my $busy = fork // die "fork: $!";
if ($busy == 0) {
    select(undef, undef, undef, 0.3);
    parallel_requests([map { chat_request($gw, model => 'gen',
                              knobs => { latency_ms => 200 }) } 1 .. 2]);
    POSIX::_exit(0);
}
($st, $h, $b) = ask('gen', { latency_ms => 4000 });
waitpid($busy, 0);
$requests += 2;    # the child's, in the access log too
is($st, 504, 'H4: a generation over llm_generation_timeout gets 504');
is((json_of($b) // {})->{error}{code}, 'gateway_timeout', 'H4: in OpenAI\'s error format');
is($t->mock_stats($up)->{requests}, 3, 'H4: a generation that timed out does not fail over');
unlike($t->error_log($gw), qr/circuit open/,
    'H4: a generation that timed out does not count toward the breaker');

$t->mock_reset($up);
($st) = ask('gen', {});
is($st, 200, 'H4: the backend still serves after the timeout');
is($t->mock_stats($up)->{paths}{'/g1/v1/chat/completions'}, 1,
    'H4: its circuit is closed: the first backend serves');

# ---------------------------------------------------------------- M5

my @think = (
    delta({ role => 'assistant', content => '' }),
    delta({ reasoning_content => 'Let me think about it.' }),             # 22 B: 6
    delta({ reasoning => 'ok' }),                                          # 2 B: 1
    delta({ tool_calls => [{ index => 0, id => 'c1', type => 'function',
        function => { name => 'get', arguments => '{"city":"Paris"}' } }] }),  # 20 B: 5
    delta({ content => 'Hello world, this is one delta of many tokens' }),  # 45 B: 12
);
($st, $h, $b) = stream('mixtral-8x7b', { pieces => \@think, cut => JSON::PP::true });
is($st, 200, 'M5: a stream cut without usage');
my @ev = sse_events($b);
like($ev[-1], qr/"bad_gateway"/, 'M5: ends in an error event');
ok(logged(qr/without usage, 24 completion tokens estimated/),
    'M5: reasoning, tool-call arguments and content are counted, as tokens, not events');

# ---------------------------------------------------------------- L3

($st, $h, $b) = stream('mixtral-8x7b', { pieces => [
    qq(data: {"choices":[{"index":0,\ndata: "delta":{"content":"ab"}}]}\n\n),
    "data: [DONE]\n\n" ] });
is($st, 200, 'L3: a multi-line data event');
ok(!grep({ length && !/^(data: |:)/ } split /\n/, $b),
    'L3: each line of a multi-line data field keeps its prefix')
    or diag($b);
@ev = sse_events($b);
is(content_of($ev[0]), 'ab', 'L3: the event is whole');

($st, $h, $b) = stream('mixtral-8x7b', { pieces => [
    qq(data: {"choices":[{"index":0,"delta":{"content":"cr"}}]}\r\r),
    "data: [DONE]\r\r" ] });
@ev = sse_events($b);
is(scalar(@ev), 2, 'L3: bare-CR line ends end events');
is(content_of($ev[0]), 'cr', 'L3: bare CR: the content');
is($ev[-1], '[DONE]', 'L3: bare CR: the stream completes');

($st, $h, $b) = stream('mixtral-8x7b', { pieces => [
    qq(data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\r),
    "\n\r\n",
    qq(data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\r\n\r\n),
    "data: [DONE]\r\n\r\n" ] });
@ev = sse_events($b);
is(join(',', map { json_of($_) ? content_of($_) : $_ } @ev),
    'a,b,[DONE]', 'L3: a CRLF split across reads is one line end');

($st, $h, $b) = stream('mixtral-8x7b', { pieces => [
    ": keep-alive\n\n",
    qq(data: {"choices":[{"index":0,\n: inside an event\ndata: "delta":{"content":"x"}}]}\n\n),
    ": ping\n\n",
    qq(data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n),
    "data: [DONE]\n\n" ] });
like($b, qr/^: keep-alive$/m, 'L3: upstream comments are forwarded');
like($b, qr/^: ping$/m, 'L3: keep-alives between events are forwarded');
like($b, qr/^: inside an event$/m, 'L3: a comment inside an event too');
@ev = sse_events($b);
is(content_of($ev[0]), 'x', 'L3: the events around comments are intact');
unlike($b, qr/usage/, 'L3: usage is still stripped with comments around');
like(last_log(), qr/ctok=2 /, 'L3: and still read');

# ---------------------------------------------------------------- L4

my ($k1, $k2) = (substr($KEY, 0, 13), substr($KEY, 13));
my $stars = '*' x length $KEY;

($st, $h, $b) = ask('keyed', { status => 400, content_type => 'text/event-stream',
    pieces => ['{"error":{"message":"bad key ' . $k1, $k2 . '","type":"x"}}'] });
is($st, 400, 'L4: an SSE-typed error is passed on');
unlike($b, qr/\Q$k1\E|\Q$k2\E/, 'L4: a key split across reads of an SSE-typed error is masked');
like($b, qr/\Q$stars\E/, 'L4: masked in place');

($st, $h, $b) = ask('keyed', { status => 400,
    pieces => ['{"error":{"message":"' . ('y' x 70000), " $k1", $k2 . '","type":"x"}}'] });
is($st, 400, 'L4: an error over the hold limit is passed on');
is(length $b, 70000 + 1 + length($KEY) + 35, 'L4: whole');
unlike($b, qr/\Q$k1\E|\Q$k2\E/, 'L4: a key split across reads of an error over the hold limit is masked');

($st, $h, $b) = ask('keyed', { pieces => [
    '{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"' . $k1,
    $k2 . '"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}'] });
is($st, 200, 'L4: a 200 answer quoting the key');
unlike($b, qr/\Q$k1\E|\Q$k2\E/, 'L4: a key split across reads of a 200 answer is masked');

# pieces shorter than the key: the carry spans several reads
my @bits = ('{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"'
    . substr($KEY, 0, 5), substr($KEY, 5, 2), substr($KEY, 7, 1), substr($KEY, 8, 20),
    substr($KEY, 28) . " and $KEY again\"},\"finish_reason\":\"stop\"}]}");
($st, $h, $b) = ask('keyed', { pieces => \@bits });
is($st, 200, 'L4: a 200 answer with the key in pieces shorter than it');
is($b, join('', @bits) =~ s/\Q$KEY\E/$stars/gr,
    'L4: a key spread over several short reads is masked, the rest intact');

($st, $h, $b) = ask('keyed', { pieces => [
    '{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"' . $k1,
    $k2 . '"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}'] },
    path => '/cost/v1/chat/completions');
is($st, 200, 'L4: a 200 answer quoting the key, held for its cost');
unlike($b, qr/\Q$k1\E|\Q$k2\E/, 'L4: a held 200 answer is masked');

($st, $h, $b) = stream('keyed', { pieces => [
    'data: {"choices":[{"index":0,"delta":{"content":"' . $k1,
    $k2 . qq("}}]}\n\n), ": $k1", "$k2\n\n", "data: [DONE]\n\n"] });
is($st, 200, 'L4: a stream quoting the key');
unlike($b, qr/\Q$k1\E|\Q$k2\E/, 'L4: a key split across reads of a stream event or comment is masked');

# ---------------------------------------------------------------- L5

my $ok = '{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},'
    . '"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}';
$raw = raw_chat('mixtral-8x7b', { raw => "HTTP/1.1 200 OK\r\n"
    . "Content-Type: application/json\rX-Injected: 1\r\n"
    . "Content-Length: " . length($ok) . "\r\nConnection: close\r\n\r\n$ok" });
like($raw, qr/^HTTP\/1\.1 200/, 'L5: an answer with a CR inside its Content-Type');
unlike($raw, qr/X-Injected/, 'L5: a Content-Type with a CR inside is not forwarded');
like($raw, qr/\r\nContent-Type: application\/json\r\n/i, 'L5: the default type is sent instead');

$raw = raw_chat('mixtral-8x7b', { raw => "HTTP/1.1 429 Too Many Requests\r\n"
    . "Content-Type: application/json\r\nRetry-After: 7\x0bX-Injected: 1\r\n"
    . "Content-Length: 2\r\nConnection: close\r\n\r\n{}" });
like($raw, qr/^HTTP\/1\.1 429/, 'L5: a 429 with a control byte inside its Retry-After');
unlike($raw, qr/\x0b|X-Injected/, 'L5: a Retry-After with a control byte inside is not forwarded');

# ---------------------------------------------------------------- L9

($st) = ask('logged', { status => 500, content_type => 'text/plain',
    pieces => ["upstream broke, key $KEY\nINJECTED line"] });
is($st, 502, 'L9: a failing backend gives 502');
my $log = $t->error_log($gw);
like($log, qr/failed: .*body: "upstream broke, key \*+\?INJECTED line"/,
    'L9: the failing backend\'s body is logged, masked, control bytes replaced');
unlike($log, qr/\Q$KEY\E/, 'L9: the key never reaches the log');

$t->cleanup;
done_testing;
