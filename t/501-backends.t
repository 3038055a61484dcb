# Backend choice and failure handling: local first, then the cheapest
# hosted backend; equal backends balanced by weight and load; a circuit
# breaker per backend, shared by the workers (closed, open, half-open);
# 429 with Retry-After; bounded retries with backoff; cross-model fallback.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use LLMTest;
use Prometheus qw(parse_prometheus sum_of);

my $t = LLMTest->new;
my $up = $t->start_mock;
my $flaky = $t->start_mock;
my $dead = free_port();
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    workers => 2,
    http => "llm_redis 127.0.0.1:$rp;
        llm_breaker failures=3 cooldown=1s;
        llm_model bal { backend http://127.0.0.1:$up/one/v1 weight=1;
                        backend http://127.0.0.1:$up/three/v1 weight=3; }
        llm_model prio { backend http://127.0.0.1:$up/dear/v1 provider=together price=2/2;
                         backend http://127.0.0.1:$up/cheap/v1 provider=fireworks price=1/1;
                         backend http://127.0.0.1:$up/local/v1; }
        llm_model prio-nolocal { backend http://127.0.0.1:$up/dear/v1 provider=together price=2/2;
                                 backend http://127.0.0.1:$up/cheap/v1 provider=fireworks price=1/1;
                                 backend http://127.0.0.1:$dead/v1; }
        llm_model brk { backend http://127.0.0.1:$flaky/v1;
                        backend http://127.0.0.1:$up/spare/v1; }
        llm_model rl { backend http://127.0.0.1:$up/s429/v1;
                       backend http://127.0.0.1:$up/ok/v1; }
        llm_model rl-only { backend http://127.0.0.1:$up/s429/only/v1; }
        llm_model three-dead { backend http://127.0.0.1:$dead/a/v1;
                               backend http://127.0.0.1:$dead/b/v1;
                               backend http://127.0.0.1:$dead/c/v1; }
        llm_model mixtral-8x22b { context_window 65536; fallback mixtral-8x7b;
                                  backend http://127.0.0.1:$dead/big/v1; }
        llm_model mixtral-8x7b { context_window 300;
                                 backend http://127.0.0.1:$up/small/v1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_cache on;
                               llm_retry_backoff 100ms; llm_max_attempts 2; }
               location = /metrics { llm_metrics; }',
);
$t->add_tenant($rp, 'a', 'sk-a');
$t->add_tenant($rp, 'only22', 'sk-22', models => 'mixtral-8x22b');

# tenant a's, or the key given, for at most 20 tokens
my @a20 = (key => 'sk-a', max_tokens => 20);
sub paths { $t->mock_stats($_[0] // $up)->{paths} }
sub failed_lines {
    my ($port) = @_;
    scalar(() = $t->error_log($gw) =~ /backend "http:\/\/127\.0\.0\.1:$port\/[^"]*" failed/g);
}

# --- weights and load: 40 slow requests at once, weights 1 and 3
$t->mock_reset($up);
my @res = parallel_requests([map {
    chat_request($gw, @a20, model => 'bal', content => 'MOCK:{"latency_ms":400}')
} 1 .. 40]);
is(scalar(grep { $_->[0] == 200 } @res), 40, 'balanced: 40 answered');
my $p = paths();
my ($n1, $n3) = ($p->{'/one/v1/chat/completions'} // 0, $p->{'/three/v1/chat/completions'} // 0);
ok($n3 >= 2 * $n1 && $n3 <= 5 * $n1, "weight 3 took about three times weight 1 ($n3 vs $n1)");

# --- local first, then the cheapest hosted
$t->mock_reset($up);
chat($gw, @a20, model => 'prio');
is(paths()->{'/local/v1/chat/completions'}, 1, 'a local worker before hosted providers');
chat($gw, @a20, model => 'prio-nolocal');
is(paths()->{'/cheap/v1/chat/completions'}, 1, 'local down: the cheapest hosted provider');
ok(!paths()->{'/dear/v1/chat/completions'}, 'the dearer one not asked');

# --- circuit breaker: closed -> open -> half-open -> closed
$t->stop_mock($flaky);
for (1 .. 3) {
    my ($st) = chat($gw, @a20, model => 'brk');
    is($st, 200, "flaky backend down, the spare serves ($_)");
}
is(failed_lines($flaky), 3, 'three failures');
like($t->error_log($gw), qr/circuit open for 1000 ms after 3 failures/, 'the circuit opened');
for (1 .. 4) { chat($gw, @a20, model => 'brk') }
is(failed_lines($flaky), 3, 'open: the flaky backend is not tried, by either worker');
my ($code, $h, $body) = http_request($gw, 'GET', '/metrics');
my $m = parse_prometheus($body);
is(sum_of($m, 'llm_backend_state', url => "http://127.0.0.1:$flaky/v1/chat/completions"), 1,
   'llm_backend_state: 1 (open)');
$t->start_mock(port => $flaky);
sleep 1.2;
($code, $h, $body) = http_request($gw, 'GET', '/metrics');
is(sum_of(parse_prometheus($body), 'llm_backend_state', url => "http://127.0.0.1:$flaky/v1/chat/completions"), 2,
   'after the cool-down: 2 (half-open)');
my ($st) = chat($gw, @a20, model => 'brk');
is($st, 200, 'the half-open probe');
like($t->error_log($gw), qr/half-open, probing/, 'a probe was sent');
like($t->error_log($gw), qr/circuit closed/, 'it succeeded: closed again');
chat($gw, @a20, model => 'brk');
is($t->mock_stats($flaky)->{requests}, 2, 'the flaky backend serves again');
($code, $h, $body) = http_request($gw, 'GET', '/metrics');
is(sum_of(parse_prometheus($body), 'llm_backend_state', url => "http://127.0.0.1:$flaky/v1/chat/completions"), 0,
   'llm_backend_state: 0 (closed)');

# a failed probe opens it again
$t->stop_mock($flaky);
for (1 .. 3) { chat($gw, @a20, model => 'brk') }
sleep 1.2;
($st) = chat($gw, @a20, model => 'brk');
is($st, 200, 'a failed probe still fails over');
is(failed_lines($flaky), 3 + 3 + 1, 'one probe, then');
chat($gw, @a20, model => 'brk');
is(failed_lines($flaky), 7, 'open again: not tried');

# --- 429 and Retry-After (the mock says 7 s)
$t->mock_reset($up);
($st) = chat($gw, @a20, model => 'rl');
is($st, 200, '429 fails over');
($st) = chat($gw, @a20, model => 'rl');
is(paths()->{'/s429/v1/chat/completions'}, 1, 'the rate-limited backend rests until its Retry-After');
($st, $h) = chat($gw, @a20, model => 'rl-only');
is($st, 429, 'the only backend rate limited: 429');
is($h->{'retry-after'}, '7', 'its Retry-After passed on');
($st, $h, $body) = chat($gw, @a20, model => 'rl-only');
is($st, 429, 'asked again: 429 from the gateway');
cmp_ok($h->{'retry-after'}, '<=', 7, "with the time left ($h->{'retry-after'} s)");
cmp_ok($h->{'retry-after'}, '>=', 5, 'not less');
is(paths()->{'/s429/only/v1/chat/completions'}, 1, 'without asking the backend');
is(json_of($body)->{error}{code}, 'rate_limit_exceeded', 'rate_limit_exceeded');

# --- bounded retries with backoff: 3 dead backends, llm_max_attempts 2
my $t0 = time;
($st) = chat($gw, @a20, model => 'three-dead');
my $took = time - $t0;
is($st, 502, 'all down: 502');
my $tried = () = $t->error_log($gw) =~ /backend "http:\/\/127\.0\.0\.1:$dead\/[abc]\/v1[^"]*" failed/g;
is($tried, 2, 'two attempts, as llm_max_attempts says');
cmp_ok($took, '>=', 0.05, sprintf('a backoff between them (%.3f s)', $took));

# --- cross-model fallback
$t->mock_reset($up);
($st, $h, $body) = chat($gw, @a20, model => 'mixtral-8x22b', temperature => 0);
is($st, 200, '8x22B down: served');
is($h->{'x-llm-route'}, 'mixtral-8x7b; reason=fallback; from=mixtral-8x22b', 'the route header says so');
is(paths()->{'/small/v1/chat/completions'}, 1, 'by the 8x7B backend');
like($t->access_log($gw), qr/model=mixtral-8x7b .*route=fallback/, 'and the log');
($st, $h) = chat($gw, @a20, model => 'mixtral-8x22b', temperature => 0);
is($h->{'x-llm-cache'}, 'MISS', 'a fallback answer is not cached as the 8x22B\'s');
($st) = chat($gw, @a20, model => 'mixtral-8x22b', key => 'sk-22');
is($st, 502, 'a tenant without 8x7B gets no fallback');
($st) = chat($gw, @a20, model => 'mixtral-8x22b', key => 'sk-22');
is($st, 503, 'and once 8x22B\'s circuit is open, 503 without trying');
$t->add_tenant($rp, 'big', 'sk-big');
($st) = chat($gw, @a20, model => 'mixtral-8x22b', key => 'sk-big', content => 'x' x 2000);
isnt($st, 200, 'a request too long for 8x7B gets no fallback');

$t->cleanup;
done_testing;
