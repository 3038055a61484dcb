# Failover before the first byte, timeouts, errors after it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $dead = free_port();    # nothing listens here
my $gw = $t->start_nginx(
    http => <<"EOF2",
llm_model down-first { backend http://127.0.0.1:$dead/v1 model=a; backend http://127.0.0.1:$up/v1 model=b; }
llm_model all-down { backend http://127.0.0.1:$dead/v1; backend http://127.0.0.1:$dead/x/v1; }
llm_model s503-first { backend http://127.0.0.1:$up/s503/v1 model=a; backend http://127.0.0.1:$up/v1 model=b; }
llm_model s429-first { backend http://127.0.0.1:$up/s429/v1; backend http://127.0.0.1:$up/v1 model=b; }
llm_model all-429 { backend http://127.0.0.1:$up/s429/v1; }
llm_model all-503 { backend http://127.0.0.1:$up/s503/v1; }
llm_model s400 { backend http://127.0.0.1:$up/s400/v1; backend http://127.0.0.1:$up/v1; }
llm_model slow-first { backend http://127.0.0.1:$up/slow/v1 model=a; backend http://127.0.0.1:$up/v1 model=b; }
llm_model slow { backend http://127.0.0.1:$up/slow/v1; }
llm_model stall { backend http://127.0.0.1:$up/stall/v1; }
llm_model disconnect { backend http://127.0.0.1:$up/disconnect/v1; }
EOF2
    server => 'location /v1/ { llm_gateway; llm_first_byte_timeout 500ms; llm_idle_timeout 500ms; }',
);

my ($st, $h, $b) = chat($gw, model => 'down-first');
is($st, 200, 'first backend refused: second serves');
is($t->mock_stats($up)->{last_body}{model}, 'b', 'second backend got its model id');
like($t->access_log($gw), qr/model=down-first backend=127\.0\.0\.1:$up /, 'log names the serving backend');

($st, $h, $b) = chat($gw, model => 'all-down');
is($st, 502, 'all down: 502');
is(json_of($b)->{error}{code}, 'bad_gateway', 'all down: JSON error');

$t->mock_reset($up);
($st) = chat($gw, model => 's503-first');
is($st, 200, '503 fails over');
is($t->mock_stats($up)->{requests}, 2, 'both backends were asked');

($st) = chat($gw, model => 's429-first');
is($st, 200, '429 fails over');

($st, $h, $b) = chat($gw, model => 'all-429');
is($st, 429, 'all rate limited: 429');
is($h->{'retry-after'}, '7', 'Retry-After passed on');
is(json_of($b)->{error}{code}, 'rate_limit_exceeded', '429 JSON');

($st, $h, $b) = chat($gw, model => 'all-503');
is($st, 502, 'all 503: 502');
like(json_of($b)->{error}{message}, qr/503/, 'names the upstream status');

$t->mock_reset($up);
($st, $h, $b) = chat($gw, model => 's400');
is($st, 400, 'a 4xx is the client\'s: passed through, no failover');
is($t->mock_stats($up)->{requests}, 1, 'no second attempt on 400');

# the first-byte timeout is a stream's; a non-streamed answer has
# llm_generation_timeout (t/030-relay.t)
my $t0 = time;
($st) = chat($gw, model => 'slow-first', stream => JSON::PP::true);
is($st, 200, 'first-byte timeout fails over');
cmp_ok(time - $t0, '<', 2.5, 'within the first byte timeout');

($st, $h, $b) = chat($gw, model => 'slow', stream => JSON::PP::true);
is($st, 504, 'first-byte timeout: 504');
is(json_of($b)->{error}{code}, 'gateway_timeout', '504 JSON');

($st, $h, $b) = chat($gw, model => 'stall', stream => JSON::PP::true, messages => [{ role => 'user', content => 'MOCK:{"tokens":10}' }]);
is($st, 200, 'stall mid-stream: headers were sent');
my @ev = sse_events($b);
my $last = json_of($ev[-1]);
ok($last && $last->{error}, 'stall mid-stream ends with an SSE error event') or diag($b);
ok(!(grep { $_ eq '[DONE]' } @ev), 'no [DONE] after an error');
ok((grep { /t0 / } @ev), 'tokens before the stall arrived');

($st, $h, $b) = chat($gw, model => 'disconnect', stream => JSON::PP::true);
@ev = sse_events($b);
ok(json_of($ev[-1])->{error}, 'upstream disconnect mid-stream: SSE error event');

($st, $h, $b) = chat($gw, model => 'disconnect');
ok(!json_of($b), 'non-stream cut short: truncated, never passed off as complete');

$t->cleanup;
done_testing;
