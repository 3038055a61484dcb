# Money that cannot be wrapped, wrongly read or lost: overflowing
# reservations, in-flight records the scripts cannot read, lost admission
# replies, settlements Redis refuses for a while, and endings without
# usage.  The bounded queue is t/122, the sweeper t/121.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use POSIX qw(strftime);
use Time::HiRes qw(sleep time);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=300ms;
             llm_auth_cache_ttl 60s;
             llm_model mixtral-8x7b {
                 backend http://127.0.0.1:$up/v1 price=0.70/0.70;
             }
             llm_model cheap {
                 backend http://127.0.0.1:$up/v1 price=1/1;
             }
             llm_model cut {
                 backend http://127.0.0.1:$up/disconnect/v1 price=1/1;
             }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }
               location /open/v1/ { llm_gateway; llm_auth on; llm_quota on;
                                    llm_redis_failure open; }
               location = /metrics { llm_metrics; }',
);

my $day = strftime('%Y%m%d', gmtime);

sub redis { $t->redis_cli($rp, @_) }
sub spend { redis('HGET', rkey(KEY_SPEND_DAY, $_[0], $day), $_[1]) // '' }
sub metric {
    my ($series) = @_;
    my (undef, undef, $b) = http_request($gw, 'GET', '/metrics');
    return $b =~ /^\Q$series\E (-?\d+)$/m ? $1 : 0;
}
# the tenant's settled spend once nothing of it is in flight
sub settled {
    my ($tenant) = @_;
    wait_until(sub { (redis('HLEN', rkey(KEY_INFLIGHT, $tenant)) // 1) == 0 }, 5);
    return spend($tenant, 'settled');
}
sub body { LLMTest::chat_body(content => 'hi', @_) }
# a request left running: the socket, read later
sub start_post {
    my ($key, $body, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw)
        or die "connect: $!";
    print $s "POST " . ($path // '/v1/chat/completions') . " HTTP/1.1\r\n"
        . "Host: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        . "Authorization: Bearer $key\r\nContent-Length: " . length($body)
        . "\r\n\r\n$body";
    return $s;
}
sub finish_post {
    my ($s) = @_;
    local $/;
    my $raw = <$s>;
    close $s;
    return (LLMTest::parse_response($raw // ''))[0];
}

# ---------------------------------------------------------------- C1

$t->add_tenant($rp, 'b', 'sk-b', budget_day_usd => 5);
my ($st, $h, $b) = chat($gw, key => 'sk-b', max_tokens => 20000000000000);
isnt($st, 200, "C1: max_tokens 2e13 against a budget-only tenant is refused ($st)");
ok($st == 400 || $st == 429, 'C1: with 400 or 429');
my $j = json_of($b) // {};
ok($j->{error} && $j->{error}{message}, 'C1: in OpenAI error format');
sleep 0.3;
cmp_ok(spend('b', 'reserved') || 0, '>=', 0, 'C1: reserved never goes negative');
cmp_ok(spend('b', 'settled') || 0, '>=', 0, 'C1: settled never goes negative');

($st) = chat($gw, key => 'sk-b', max_tokens => 9000000000000);
ok($st == 400 || $st == 429, "C1: a reservation of 9e12 tokens is refused too ($st)");
cmp_ok(spend('b', 'reserved') || 0, '>=', 0, 'C1: reserved still not negative');

# in-flight records the script cannot read do not lose their batch
$t->add_tenant($rp, 'c', 'sk-c', budget_day_usd => 100);
is((chat($gw, key => 'sk-c'))[0], 200, 'warm: the key is known');
# the sweeper's first look, a second after the first admission, is past
sleep 1.5;
my $before = redis('HGET', rkey(KEY_USAGE, 'c', $day), 'mixtral-8x7b|127.0.0.1:' . $up . '|requests');
my @s = map { start_post('sk-c', body(content => 'MOCK:{"latency_ms":1200}')) } 1 .. 4;
ok(wait_until(sub { (redis('HLEN', rkey(KEY_INFLIGHT, 'c')) || 0) == 4 }, 5),
    'four requests in flight');
my @ids = split /\n/, redis('HKEYS', rkey(KEY_INFLIGHT, 'c'));
my $now = int(time * 1000);
redis('HSET', rkey(KEY_INFLIGHT, 'c'), $ids[0], 'garbage');
redis('HSET', rkey(KEY_INFLIGHT, 'c'), $ids[1], "-5:-100:$now:" . ($now + 600000) . ":$day");
redis('HSET', rkey(KEY_INFLIGHT, 'c'), $ids[2], "100000000000000:1e+14:$now");
is(join(' ', map { finish_post($_) } @s), '200 200 200 200', 'all four answered');
ok(wait_until(sub { (redis('HLEN', rkey(KEY_INFLIGHT, 'c')) // 1) == 0 }, 3),
    'C1: every in-flight record is gone, malformed ones too');
is(redis('HGET', rkey(KEY_USAGE, 'c', $day), "mixtral-8x7b|127.0.0.1:$up|requests") - $before, 4,
    'C1: a malformed in-flight record does not lose the rest of its batch: 4 settled');
is(metric('llm_inflight_malformed_total{script="settle"}'), 2,
    'C1: the two unreadable records are counted');
like($t->error_log($gw), qr/in-flight record "\Q$ids[0]\E" of .* could not be read/,
    'C1: and logged');

# the scripts on their own: what admit.lua writes, settle.lua reads
my $admit = do { local $/; open my $fh, '<', "$LLMTest::ROOT/redis/admit.lua" or die; <$fh> };
my @akeys = (rkey(KEY_WIN, 'z'), rkey(KEY_SPEND_DAY, 'z', $day),
    rkey(KEY_SPEND_MONTH, 'z', substr($day, 0, 6)), rkey(KEY_INFLIGHT, 'z'));
my $r = redis('EVAL', $admit, 4, @akeys, 0, 0, 0, 0, 100, 100, 2,
    'neg', 10, -5, 60000, 'big', 10000000000000, 9999999999999, 60000);
like($r, qr/^3\ninvalid\n0\n0\n/, 'C1: admit.lua refuses a negative cost itself');
like(redis('HGET', rkey(KEY_INFLIGHT, 'z'), 'big'), qr/^10000000000000:9999999999999:\d+:\d+:$day$/,
    'C1: a reservation at the bound is written in plain digits');
is(redis('HGET', rkey(KEY_SPEND_DAY, 'z', $day), 'reserved'), 9999999999999, 'C1: and reserved exactly');
is(redis('HEXISTS', rkey(KEY_INFLIGHT, 'z'), 'neg'), 0, 'C1: the refused one reserved nothing');

# ---------------------------------------------------------------- H6a

my $pid = $t->{redis}{$rp};
$t->add_tenant($rp, 'd', 'sk-d', budget_day_usd => 10);
$t->add_tenant($rp, 'e', 'sk-e', budget_day_usd => 10);
is((chat($gw, key => 'sk-d'))[0], 200, 'warm d');
is((chat($gw, key => 'sk-e', path => '/open/v1/chat/completions'))[0], 200, 'warm e');
my $settled_e = settled('e');

# Redis stops answering while the admission is in Redis' hands; it runs
# the script once it wakes, after the gateway gave up on the reply
kill 'STOP', $pid;
my ($sd) = chat($gw, key => 'sk-d', timeout => 5);
kill 'CONT', $pid;
is($sd, 503, 'H6a: fail-closed: 503 while the admission reply is lost');
ok(wait_until(sub { (chat($gw, key => 'sk-d'))[0] == 200 }, 8), 'd served again');
ok(wait_until(sub { (redis('HLEN', rkey(KEY_INFLIGHT, 'd')) // 1) == 0 }, 5),
    'H6a: fail-closed: after Redis recovers, no reservation is left in flight');
is(spend('d', 'reserved'), 0, 'H6a: fail-closed: reserved back to 0');

kill 'STOP', $pid;
my ($se) = chat($gw, key => 'sk-e', path => '/open/v1/chat/completions', timeout => 5);
kill 'CONT', $pid;
is($se, 200, 'H6a: fail-open: served while the admission reply is lost');
ok(wait_until(sub { (chat($gw, key => 'sk-e', path => '/open/v1/chat/completions'))[0] == 200
                    && (redis('HLEN', rkey(KEY_INFLIGHT, 'e')) // 1) == 0 }, 8),
    'H6a: fail-open: after Redis recovers, no reservation is left in flight');
is(spend('e', 'reserved'), 0, 'H6a: fail-open: reserved back to 0');
cmp_ok(spend('e', 'settled'), '>', $settled_e, 'H6a: fail-open: the answer is charged');

# ---------------------------------------------------------------- H6b

$t->add_tenant($rp, 'f', 'sk-f', budget_day_usd => 10);
is((chat($gw, key => 'sk-f'))[0], 200, 'warm f');
my $settled_f = settled('f');
my $s = start_post('sk-f', body(content => 'MOCK:{"latency_ms":800}'));
ok(wait_until(sub { (redis('HLEN', rkey(KEY_INFLIGHT, 'f')) || 0) == 1 }, 5), 'f in flight');
redis('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
redis('CONFIG', 'SET', 'maxmemory', 1);
is(finish_post($s), 200, 'f answered');
ok(wait_until(sub { metric('llm_redis_errors_total{script="settle",error="OOM"}') >= 1 }, 5),
    'H6b: the settlement met OOM');
is(spend('f', 'settled'), $settled_f, 'H6b: nothing recorded while Redis refuses writes');
redis('CONFIG', 'SET', 'maxmemory', 0);
ok(wait_until(sub { (redis('HLEN', rkey(KEY_INFLIGHT, 'f')) // 1) == 0 }, 15),
    'H6b: once Redis takes writes again, the settlement is retried');
cmp_ok(spend('f', 'settled'), '>', $settled_f, 'H6b: the spend is recorded');
is(spend('f', 'reserved'), 0, 'H6b: and the reservation released');
cmp_ok(metric('llm_settlements_retried_total'), '>=', 1, 'H6b: retries are counted');

# ---------------------------------------------------------------- H6c

$t->add_tenant($rp, 'g', 'sk-g', budget_day_usd => 10);
is((chat($gw, key => 'sk-g'))[0], 200, 'warm g');
redis('DEL', rkey(KEY_USAGE, 'g', $day));
redis('SET', rkey(KEY_USAGE, 'g', $day), 'not a hash');
my $settled_g = settled('g');
is((chat($gw, key => 'sk-g'))[0], 200, 'g answered');
ok(wait_until(sub { metric('llm_settlements_dropped_total{reason="error"}') >= 1 }, 3),
    'H6c: a settlement the script refuses is counted as lost');
is(redis('HLEN', rkey(KEY_INFLIGHT, 'g')), 1,
    'H6c: a settlement that fails keeps its in-flight record (deleted last)');
is(spend('g', 'settled'), $settled_g, 'H6c: and writes nothing halfway');
like($t->error_log($gw),
    qr/settlement of 1 requests of \Q@{[rkey(KEY_WIN, 'g')]}\E lost: WRONGTYPE/,
    'H6c: logged once, with the count');
redis('DEL', rkey(KEY_USAGE, 'g', $day), rkey(KEY_INFLIGHT, 'g'));

# ---------------------------------------------------------------- H3/M5

# a non-streamed 200 cut before its usage: the reservation is charged
$t->add_tenant($rp, 'h', 'sk-h', budget_day_usd => 10);
is((chat($gw, key => 'sk-h'))[0], 200, 'warm h');
my $settled_h = settled('h');
chat($gw, key => 'sk-h', model => 'cut', max_tokens => 1000);
ok(wait_until(sub { spend('h', 'settled') != $settled_h }, 3), 'the cut answer is settled');
cmp_ok(spend('h', 'settled') - $settled_h, '>=', 1000,
    'H3/M5: a 200 answer whose usage cannot be read is charged its reservation');
is(spend('h', 'reserved'), 0, 'H3/M5: and its reservation released');

my $settled = settled('h');
my $c = start_post('sk-h', body(model => 'cheap', content => 'MOCK:{"latency_ms":1500}'));
ok(wait_until(sub { (redis('HLEN', rkey(KEY_INFLIGHT, 'h')) || 0) == 1 }, 5), 'h in flight');
sleep 0.3;
close $c;
ok(wait_until(sub { (redis('HLEN', rkey(KEY_INFLIGHT, 'h')) // 1) == 0 }, 5), 'h settled');
cmp_ok(spend('h', 'settled') - $settled, '>', 0,
    'M5: a client that leaves after the backend got the request pays the prompt');

$t->cleanup;
done_testing;
