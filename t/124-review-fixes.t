# Review fixes of the settlement and relay code (issue 11): per-attempt
# state, attempts that failed over are charged, the reservation covers the
# fallback model, a hung backend opens its breaker, spend keys written
# after their day keep a TTL, malformed in-flight records are swept late
# and remembered, an exiting worker sends its queued settlements.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use POSIX qw(strftime);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;

# a backend whose accept queue is full: a connect to it times out
my $hole = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
    Listen => 1, Proto => 'tcp') or die "listen: $!";
my $hp = $hole->sockport;
my @fill = map { IO::Socket::INET->new(PeerAddr => '127.0.0.1',
    PeerPort => $hp, Blocking => 0) } 1 .. 4;

# malformed in-flight records, for the first sweep
redis('HSET', rkey(KEY_INFLIGHT, 'w'), 'young', 'zzz', 'aged', 'x:x:1000');

my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp;
             llm_breaker failures=2 cooldown=60s;
             llm_model reset { backend http://127.0.0.1:$up/s500/v1;
                               backend http://127.0.0.1:$hp/v1;
                               backend http://127.0.0.1:$up/v1; }
             llm_model lost { backend http://127.0.0.1:$up/disconnect/v1 price=1000/1000;
                              backend http://127.0.0.1:$up/s503/v1 price=1000/1000; }
             llm_model cheap { backend http://127.0.0.1:$up/v1 price=0/0;
                               fallback dear; }
             llm_model dear { backend http://127.0.0.1:$up/v1 price=1000/1000; }
             llm_model hung { backend http://127.0.0.1:$up/v1; }
             llm_model plain { backend http://127.0.0.1:$up/v1 price=1/1; }",
    server => 'location /v1/ {
                   llm_gateway; llm_auth on; llm_quota on;
                   llm_connect_timeout 500ms;
                   llm_generation_timeout 1s;
                   llm_max_attempts 3;
                   llm_retry_backoff 0;
                   llm_cost_header on;
               }
               location = /metrics { llm_metrics; }',
);
my $day = strftime('%Y%m%d', gmtime);
my $month = substr($day, 0, 6);

sub redis { $t->redis_cli($rp, @_) }
sub spend { redis('HGET', rkey(KEY_SPEND_DAY, $_[0], $day), $_[1]) || 0 }
sub usage_sum {
    my ($tenant, $what) = @_;
    my %u = split /\n/, redis('HGETALL', rkey(KEY_USAGE, $tenant, $day)) // '';
    my $n = 0;
    $n += $u{$_} for grep { /\|\Q$what\E$/ } keys %u;
    return $n;
}

$t->add_tenant($rp, 'a', 'sk-a', rpm => 100000);

# ---------------------------------------------------------------- reset

# attempt 1 reaches its backend (a 500), attempt 2 cannot even connect
my ($st) = chat($gw, key => 'sk-a', model => 'reset', knobs => {});
is($st, 200, 'H4: a connect timeout after an attempt that reached a '
    . 'backend fails over (reached_backend is per attempt)');

# ---------------------------------------------------------------- lost

# attempt 1 answers 200, then its body breaks; attempt 2 gets a 503
$t->add_tenant($rp, 'l', 'sk-l', rpm => 100000);
($st) = chat($gw, key => 'sk-l', model => 'lost', knobs => { tokens => 200 }, max_tokens => 1000);
is($st, 502, 'M5: a held answer cut, then a 503: the client gets 502');
ok(wait_until(sub { spend('l', 'settled') > 0 }, 5),
    'M5: an attempt that failed over after generating is charged');
cmp_ok(usage_sum('l', 'prompt_tokens'), '>', 0, 'M5: its prompt estimate');
cmp_ok(usage_sum('l', 'completion_tokens'), '>', 0,
    'M5: and the completion it sent before it broke');
cmp_ok(usage_sum('l', 'completion_tokens'), '<=', 1000,
    'M5: at most max_tokens');

# ---------------------------------------------------------------- fallback

# free model, dear fallback: 100 tokens at $1000/M are 100000 micro-dollars
$t->add_tenant($rp, 'f', 'sk-f', budget_day_usd => '0.01');
($st) = chat($gw, key => 'sk-f', model => 'cheap', knobs => {}, max_tokens => 100);
is($st, 429, 'C1: the reservation is priced at the fallback model\'s '
    . 'backends too');

# ---------------------------------------------------------------- hung

# a backend that takes the body and never answers: two timeouts open it
$t->add_tenant($rp, 'h', 'sk-h', rpm => 100000);
is((chat($gw, key => 'sk-h', model => 'hung', knobs => { latency_ms => 3000 }))[0], 504, 'H4: a hung backend: 504');
is((chat($gw, key => 'sk-h', model => 'hung', knobs => { latency_ms => 3000 }))[0], 504, 'H4: again');
like($t->error_log($gw), qr/backend "[^"]*" circuit open/,
    'H4: a hung backend is counted toward its breaker');
is((chat($gw, key => 'sk-h', model => 'hung', knobs => {}))[0], 503, 'H4: its circuit is open');

# ---------------------------------------------------------------- TTL

# the day's keys expire while a request runs
$t->add_tenant($rp, 't', 'sk-t', rpm => 100000);
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    chat($gw, key => 'sk-t', model => 'plain', knobs => { latency_ms => 1500 });
    POSIX::_exit(0);
}
ok(wait_until(sub { redis('EXISTS', rkey(KEY_SPEND_DAY, 't', $day)) }, 5), 'admitted');
redis('DEL', rkey(KEY_SPEND_DAY, 't', $day), rkey(KEY_SPEND_MONTH, 't', $month));
waitpid($pid, 0);
ok(wait_until(sub { spend('t', 'settled') > 0 }, 5), 'settled');
cmp_ok(redis('TTL', rkey(KEY_SPEND_DAY, 't', $day)), '>', 0,
    'M2: a day\'s spend written again after it expired has a TTL');
cmp_ok(redis('TTL', rkey(KEY_SPEND_MONTH, 't', $month)), '>', 0, 'M2: the month\'s too');
is(redis('HGET', rkey(KEY_SPEND_DAY, 't', $day), 'reserved') // '', '',
    'M2: and no negative reserved');

# ---------------------------------------------------------------- sweep

ok(wait_until(sub { !redis('HEXISTS', rkey(KEY_INFLIGHT, 'w'), 'aged') }, 10),
    'C1: the sweeper deletes a malformed record once it is old enough');
is(redis('SISMEMBER', rkey(KEY_SWEPT, 'w', '19700101'), 'aged'), 1,
    'C1: and remembers it as swept, so that its settlement still charges');
is(redis('HEXISTS', rkey(KEY_INFLIGHT, 'w'), 'young'), 1,
    'C1: a malformed record of unknown age is kept a day');

# ---------------------------------------------------------------- empty

# an event of one empty data line (no buffer behind it: UBSan watches)
my $c = encode_json({ id => 'x', object => 'chat.completion.chunk', created => 1,
    model => 'plain', choices => [{ index => 0, delta => { content => 'hi' },
    finish_reason => undef }] });
my ($est, undef, $eb) = chat($gw, key => 'sk-a', model => 'plain', knobs =>
    { pieces => ["data:\n\n", "data: $c\n\n", "data:\n\n", "data: [DONE]\n\n"],
      gap_ms => 10 }, stream => JSON::PP::true);
is($est, 200, 'L3: a stream with events of an empty data line');
like($eb, qr/"content":"hi".*data: \[DONE\]/s, 'L3: is relayed whole');

# ---------------------------------------------------------------- exit

# settlements queued while Redis is away are sent by the exiting worker
$t->stop_nginx($gw);
my $gw2 = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=300ms;
             llm_model plain { backend http://127.0.0.1:$up/v1 price=1/1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on;
                               llm_redis_failure open; }',
);
$t->add_tenant($rp, 'x', 'sk-x', rpm => 100000);
is((http_request($gw2, 'POST', '/v1/chat/completions',
    { 'Content-Type' => 'application/json', Authorization => 'Bearer sk-x' },
    encode_json({ model => 'plain', messages => [{ role => 'user', content => 'hi' }] })))[0],
    200, 'warm: the key is known');
ok(wait_until(sub { usage_sum('x', 'requests') == 1 }, 5), 'warm: settled');
$t->stop_redis($rp);
is((http_request($gw2, 'POST', '/v1/chat/completions',
    { 'Content-Type' => 'application/json', Authorization => 'Bearer sk-x' },
    encode_json({ model => 'plain', messages => [{ role => 'user', content => 'q' }] })))[0],
    200, 'served unmetered while Redis is down');
kill 'QUIT', $t->{nginx}{$gw2}{pid};
select(undef, undef, undef, 0.5);
$t->start_redis(port => $rp);
# a Redis started again is empty: the usage of the warm-up is gone
ok(wait_until(sub { usage_sum('x', 'requests') == 1 }, 15),
    'M2: an exiting worker sends the settlements it queued once Redis is back');
unlike($t->error_log($gw2), qr/unrecorded settlement/, 'M2: none is lost');

# ---------------------------------------------------------------- bound

# Redis takes the commands but answers none for a while: the settlements
# awaiting its reply count against llm_settle_queue too
$t->stop_nginx($gw2);
my $gw3 = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=20s;
             llm_settle_queue 128;
             llm_model plain { backend http://127.0.0.1:$up/v1 price=1/1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }
               location = /metrics { llm_metrics; }',
);
$t->add_tenant($rp, 'q', 'sk-q', rpm => 100000);
sub metric3 {
    my ($series) = @_;
    my (undef, undef, $b) = http_request($gw3, 'GET', '/metrics');
    return $b =~ /^\Q$series\E (\d+)$/m ? $1 : 0;
}
my $pause = fork // die "fork: $!";
if ($pause == 0) {
    select(undef, undef, undef, 0.8);
    $t->redis_cli($rp, 'CLIENT', 'PAUSE', 4000);
    POSIX::_exit(0);
}
my @slow = map { [$gw3, 'POST', '/v1/chat/completions',
    { 'Content-Type' => 'application/json', Authorization => 'Bearer sk-q' },
    encode_json({ model => 'plain', messages => [{ role => 'user',
        content => 'MOCK:' . encode_json({ latency_ms => 1500 }) }] })] } 1 .. 300;
my @res = parallel_requests(\@slow, timeout => 30);
waitpid($pause, 0);
is(scalar(grep { $_->[0] == 200 } @res), 300, '300 admitted and served');
my $full;
ok(wait_until(sub {
    $full = metric3('llm_settlements_dropped_total{reason="queue_full"}');
    usage_sum('q', 'requests') + $full == 300 }, 15),
    'M2: every settlement is recorded or dropped');
cmp_ok($full, '>=', 300 - 2 * 128,
    "M2: settlements awaiting Redis's reply are bounded too: $full dropped");

$t->cleanup;
done_testing;
