# The sweeper: reservations whose request can no longer be running (the
# gateway that held them died) are released by one worker, under a Redis
# lock, in bounded steps; records still within their deadline stay.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use Time::HiRes qw(time);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
sub redis { $t->redis_cli($rp, @_) }

my $day = strftime('%Y%m%d', gmtime);
my $month = substr($day, 0, 6);
my $now = int(time * 1000);

# left behind by a gateway killed with requests in flight
redis('HSET', rkey(KEY_INFLIGHT, 's'),
    'old', "100:700:" . ($now - 7200000) . ':' . ($now - 3600000) . ":$day",
    'fresh', "10:70:$now:" . ($now + 600000) . ":$day",
    'legacy', '5:30:1000',
    'bad', 'zzz:zzz:1000');
redis('HSET', rkey(KEY_SPEND_DAY, 's', $day), 'reserved', 770);
redis('HSET', rkey(KEY_SPEND_MONTH, 's', $month), 'reserved', 770);

# a key that only looks like an in-flight hash does not stop the sweep
redis('SET', rkey(KEY_INFLIGHT, 'a'), 'not a hash');

# more than one HSCAN step's worth
my @many = map { ("r$_", "1:10:1000:2000:$day") } 1 .. 250;
redis('HSET', rkey(KEY_INFLIGHT, 'x'), @many);
redis('HSET', rkey(KEY_SPEND_DAY, 'x', $day), 'reserved', 2500);
redis('HSET', rkey(KEY_SPEND_MONTH, 'x', $month), 'reserved', 2500);

my $gw = $t->start_nginx(
    workers => 2,
    http => "llm_redis 127.0.0.1:$rp;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=1/1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }
               location = /metrics { llm_metrics; }',
);

# a worker sweeps once it has admitted a request
$t->add_tenant($rp, 'w', 'sk-w');
is((http_request($gw, 'POST', '/v1/chat/completions',
    { 'Content-Type' => 'application/json', Authorization => 'Bearer sk-w' },
    '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"hi"}]}'))[0],
    200, 'a request admitted');

sub metric {
    my ($series) = @_;
    my (undef, undef, $b) = http_request($gw, 'GET', '/metrics');
    return $b =~ /^\Q$series\E (\d+)$/m ? $1 : 0;
}

ok(wait_until(sub { (redis('HLEN', rkey(KEY_INFLIGHT, 'x')) // 1) == 0
                    && !redis('HEXISTS', rkey(KEY_INFLIGHT, 's'), 'old') }, 10),
    'sweeper: in-flight records past their deadline are released');
is(redis('HGET', rkey(KEY_SPEND_DAY, 's', $day), 'reserved'), 70,
    'sweeper: the day\'s reserved keeps only the running request');
is(redis('HGET', rkey(KEY_SPEND_MONTH, 's', $month), 'reserved'), 70, 'sweeper: the month\'s too');
is(redis('HGET', rkey(KEY_SPEND_DAY, 'x', $day), 'reserved'), 0,
    'sweeper: 250 records of one tenant, in bounded steps, all released once');
is(redis('HGET', rkey(KEY_SPEND_MONTH, 'x', $month), 'reserved'), 0, 'sweeper: month too');
is(redis('HEXISTS', rkey(KEY_INFLIGHT, 's'), 'fresh'), 1, 'sweeper: a request within its deadline stays');
is(redis('HEXISTS', rkey(KEY_INFLIGHT, 's'), 'legacy'), 0,
    'sweeper: a record without a deadline is released a day after its admission');
is(redis('HEXISTS', rkey(KEY_INFLIGHT, 's'), 'bad'), 0, 'sweeper: an unreadable record is deleted');
is(redis('SISMEMBER', rkey(KEY_SWEPT, 's', $day), 'old'), 1, 'sweeper: released ids are remembered');
is(redis('SISMEMBER', rkey(KEY_SWEPT, 's', '19700101'), 'legacy'), 1, 'sweeper: by their admission day');
ok(wait_until(sub { metric('llm_reservations_swept_total') == 252 }, 3),
    'sweeper: released reservations are counted, once with two workers');
is(metric('llm_inflight_malformed_total{script="sweep"}'), 1, 'sweeper: the unreadable one too');
ok(redis('EXISTS', rkey(KEY_SWEEP_LOCK)), 'sweeper: runs under a Redis lock');

# a request that ends after the sweeper released it is still charged
my $src = do { local $/; open my $fh, '<', "$LLMTest::ROOT/redis/settle.lua" or die; <$fh> };
my @keys = (rkey(KEY_WIN, 's'), rkey(KEY_SPEND_DAY, 's', $day),
    rkey(KEY_SPEND_MONTH, 's', $month), rkey(KEY_USAGE, 's', $day),
    rkey(KEY_SETTLED, 's', $day), rkey(KEY_INFLIGHT, 's'), rkey(KEY_SWEPT, 's', $day));
my @args = (100, 1, 'old', 110, 90, 'm|b', 100, 10, 'm');
is(redis('EVAL', $src, 7, @keys, @args), 1, 'sweeper: a late settlement is still settled');
is(redis('HGET', rkey(KEY_SPEND_DAY, 's', $day), 'settled'), 90, 'sweeper: and charged');
is(redis('HGET', rkey(KEY_SPEND_DAY, 's', $day), 'reserved'), 70, 'sweeper: without a second release');
is(redis('EVAL', $src, 7, @keys, @args), 0, 'sweeper: once');

$t->cleanup;
done_testing;
