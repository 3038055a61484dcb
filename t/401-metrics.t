# The metrics endpoint: Prometheus text that a strict parser accepts, and
# counters, summed over two workers, that add up to the traffic sent.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;
use Prometheus qw(parse_prometheus sum_of);

# the parser itself refuses what the format does not allow
for my $bad ("x 1", "x{a=\"1\"} one\n", "x{a=1} 1\n", "# TYPE x bogus\n",
             "x 1\n# TYPE x counter\n", "x{a=\"1\",a=\"2\"} 1\n",
             "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
             "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n") {
    ok(!eval { parse_prometheus($bad); 1 }, "parser refuses: " . ($bad =~ s/\n/\\n/gr));
}
ok(eval { parse_prometheus("# HELP x a\n# TYPE x counter\nx{a=\"q\\\"\\\\\"} 3\n") }, 'parser takes escapes');

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    workers => 2,
    http => "llm_redis 127.0.0.1:$rp;
        llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=0.60/1.80; }
        llm_model mixtral-8x22b { backend http://127.0.0.1:$up/v1 model=big price=2.00/6.00; }
        llm_model broken { backend http://127.0.0.1:$up/s500/v1; }
        llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b;",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; llm_cache on; }
               location = /metrics { llm_metrics; }',
);
$t->add_tenant($rp, 'a', 'sk-a');
$t->add_tenant($rp, 'b', 'sk-b');

# each a chat request of at most 50 tokens
my %t50 = (max_tokens => 50);
my @reqs = (
    (map { chat_request($gw, %t50, key => 'sk-a', content => "plain $_") } 1 .. 20),
    (map { chat_request($gw, %t50, key => 'sk-b', model => 'mixtral-8x22b',
                        content => "big $_") } 1 .. 10),
    (map { chat_request($gw, %t50, key => 'sk-a', content => "stream $_",
                        stream => JSON::PP::true) } 1 .. 10),
    (map { post_request($gw, '/v1/chat/completions', '{"model": ',
                        key => 'sk-a') } 1 .. 3),
    (map { chat_request($gw, %t50, key => 'sk-a', model => 'broken',
                        content => "fail $_") } 1 .. 2),
    (map { chat_request($gw, %t50, key => 'sk-x', content => 'who') } 1 .. 4),
    (map { chat_request($gw, %t50, key => 'sk-b', model => 'auto',
                        content => "What is the capital of country $_?") } 1 .. 5),
);
my @res = parallel_requests(\@reqs, timeout => 30);
my %st;
$st{ $_->[0] }++ for @res;
is($st{200}, 45, '45 answered');
is($st{400}, 3, '3 bad JSON');
is($st{502}, 2, '2 bad gateway');
is($st{401}, 4, '4 bad keys');
for (1 .. 2) {
    my ($c) = post($gw, '/v1/chat/completions', 'hello',
        headers => { 'Content-Type' => 'text/plain' });
    is($c, 415, 'wrong content type: 415');
}

# the cache: one miss, then hits, one at a time; the entry is written
# after the first answer went out, so the hits wait for it
my @cached = (%t50, key => 'sk-a', content => 'cached', temperature => 0);
chat($gw, @cached);
ok(wait_until(sub { my $k = $t->redis_cli($rp, 'KEYS', key_prefix(KEY_CACHE) . '*');
                    defined $k && $k =~ /\Q@{[key_prefix(KEY_CACHE)]}/ }, 5),
   'the miss is stored');
chat($gw, @cached) for 1 .. 3;

my $total = 54 + 4 + 2;

# counters move in the log phase, which runs after the answer went out
my ($code, $h, $body);
wait_until(sub {
    ($code, $h, $body) = http_request($gw, 'GET', '/metrics');
    my $m = eval { parse_prometheus($body) } or return 0;
    return sum_of($m, 'llm_requests_total') >= $total;
}, 5);
is($code, 200, '/metrics: 200');
like($h->{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'Prometheus content type');
my $m = eval { parse_prometheus($body) };
ok($m, 'the output parses') or diag($@);
$m //= { samples => [], types => {} };

is(sum_of($m, 'llm_requests_total'), $total, "llm_requests_total sums to the $total requests sent");
is(sum_of($m, 'llm_requests_total', status => 200), 45 + 4, '... of which 49 with 200');
is(sum_of($m, 'llm_requests_total', model => 'mixtral-8x22b'), 10, 'by model');
is(sum_of($m, 'llm_errors_total', type => 'invalid_json'), 3, 'errors by type: invalid_json');
is(sum_of($m, 'llm_errors_total', type => 'bad_gateway'), 2, 'errors by type: bad_gateway');
is(sum_of($m, 'llm_errors_total', type => 'invalid_api_key'), 4, 'errors by type: invalid_api_key');
is(sum_of($m, 'llm_errors_total', type => 'http_415'), 2, 'refused before parsing: by status');
is(sum_of($m, 'llm_errors_total'), 11, 'no other errors');

# the mock: 11 prompt tokens, 5 completion tokens per answer
is(sum_of($m, 'llm_tokens_total', kind => 'prompt', backend => "127.0.0.1:$up"), 11 * 46,
   'prompt tokens of the 46 backend answers');
is(sum_of($m, 'llm_tokens_total', kind => 'completion', tenant => 'b', model => 'mixtral-8x22b'),
   5 * 10, 'completion tokens by tenant and model');
is(sum_of($m, 'llm_cost_micro_usd_total', model => 'mixtral-8x7b', backend => "127.0.0.1:$up"),
   16 * (20 + 10 + 1 + 5), 'cost of the 8x7B answers: 16 micro-dollars each');
is(sum_of($m, 'llm_cost_micro_usd_total', model => 'mixtral-8x22b'), 52 * 10,
   'cost of the 8x22B answers: 11 x 2 + 5 x 6 = 52 micro-dollars each');
is(sum_of($m, 'llm_cost_micro_usd_total', backend => 'cache'), 0, 'hits cost nothing');
is(sum_of($m, 'llm_tokens_total', backend => 'cache', kind => 'prompt'), 33, 'hits keep their tokens');

is(sum_of($m, 'llm_cache_requests_total', result => 'hit'), 3, 'cache hits');
is(sum_of($m, 'llm_cache_requests_total', result => 'miss'), 1, 'cache misses');
is(sum_of($m, 'llm_cache_requests_total', result => 'bypass'), 20 + 10 + 10 + 2 + 5,
   'cache bypasses: every non-deterministic request that got that far');
is(sum_of($m, 'llm_route_total', reason => 'complexity', model => 'mixtral-8x7b'), 5, 'route decisions');
is(sum_of($m, 'llm_route_total', reason => 'explicit'), 20 + 10 + 10 + 2 + 4, 'explicit choices');
is(sum_of($m, 'llm_tokens_total', model => 'broken'), 0, 'a failed backend used no tokens');

is(sum_of($m, 'llm_backend_attempts_total', outcome => 'ok'), 46, 'backend attempts: ok');
is(sum_of($m, 'llm_backend_attempts_total', outcome => 'status'), 2, 'backend attempts: failed status');

is(sum_of($m, 'llm_request_duration_seconds_count'), $total - 3 - 4 - 2,
   'request duration histogram: every request with a model');
is(sum_of($m, 'llm_upstream_ttfb_seconds_count'), 46 + 2,
   'ttfb histogram: every attempt that got a first byte, errors too');
is($m->{types}{llm_upstream_ttfb_seconds}, 'histogram', 'ttfb is a histogram');
is($m->{types}{llm_requests_total}, 'counter', 'requests is a counter');

my %pids = map { /pid=(\d+)/ ? ($1 => 1) : () } split /\n/, $t->access_log($gw);
cmp_ok(scalar(keys %pids), '>=', 1, scalar(keys %pids) . ' worker(s) served the requests');
note('both workers served requests: the sums above add them up') if keys %pids > 1;

($code) = http_request($gw, 'POST', '/metrics', {}, 'x');
is($code, 405, 'POST /metrics: 405');

$t->cleanup;
done_testing;
