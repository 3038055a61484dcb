# A client that leaves while its admission is in flight: the reservation
# the script made is released, none is invented when it was refused.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use Time::HiRes qw(sleep);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=3s;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=1/1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }',
);
my $day = strftime('%Y%m%d', gmtime);
$t->add_tenant($rp, 'a', 'sk-a', budget_day_usd => 10);
my @req = ('POST', '/v1/chat/completions',
    { 'Content-Type' => 'application/json', Authorization => 'Bearer sk-a' },
    '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"hi"}]}');
is((http_request($gw, @req))[0], 200, 'warm: key cached, one request settled');
my $settled = $t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'a', $day), 'settled');

my $pid = $t->{redis}{$rp};
kill 'STOP', $pid;
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw) or die;
print $s "$req[0] $req[1] HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    . "Authorization: Bearer sk-a\r\nContent-Length: " . length($req[3]) . "\r\n\r\n$req[3]";
sleep 0.3;
close $s;          # gone while the admission waits in Redis
sleep 0.3;
kill 'CONT', $pid;

ok(wait_until(sub { ($t->redis_cli($rp, 'HLEN', rkey(KEY_INFLIGHT, 'a')) // 1) == 0 }, 3),
    'no reservation left in flight');
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'a', $day), 'reserved'), 0, 'reserved back to 0');
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'a', $day), 'settled'), $settled, 'nothing charged');
my $req = $t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'a', $day), 'mixtral-8x7b|mixtral-8x7b|requests');
is($req, 1, 'recorded as an admitted request that used nothing');

# a refused admission whose client left: nothing released, nothing recorded
$t->add_tenant($rp, 'b', 'sk-b', budget_day_usd => '0.000001');
kill 'STOP', $pid;
http_request($gw, $req[0], $req[1], { %{ $req[2] }, Authorization => 'Bearer sk-b' }, $req[3],
    timeout => 0.3);
kill 'CONT', $pid;
sleep 0.5;
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'b', $day), 'reserved') || 0, 0, 'refused: reserved untouched');
is($t->redis_cli($rp, 'EXISTS', rkey(KEY_USAGE, 'b', $day)), 0, 'refused: no usage record');

# a settlement command sent twice (its reply was lost) counts once
my $src = do { local $/; open my $fh, '<', "$LLMTest::ROOT/redis/settle.lua" or die; <$fh> };
$t->redis_cli($rp, 'HSET', rkey(KEY_INFLIGHT, 'c'), 'r1', '100:500:' . (time * 1000), 'r2', '50:200:' . (time * 1000));
$t->redis_cli($rp, 'HSET', rkey(KEY_SPEND_DAY, 'c', $day), 'reserved', 700);
my @keys = (rkey(KEY_WIN, 'c'), rkey(KEY_SPEND_DAY, 'c', $day),
    rkey(KEY_SPEND_MONTH, 'c', substr($day, 0, 6)), rkey(KEY_USAGE, 'c', $day),
    rkey(KEY_SETTLED, 'c', $day), rkey(KEY_INFLIGHT, 'c'));
my @args = (100, 3, 'r1', 30, 90, 'm|b', 10, 20, 'm', 'r2', 5, 40, 'm|b', 5, 0, 'm',
    'r3', 7, 70, 'm|b', 3, 4, 'u');
is($t->redis_cli($rp, 'EVAL', $src, 6, @keys, @args), 3, 'batch of three settled');
is($t->redis_cli($rp, 'EVAL', $src, 6, @keys, @args), 0, 'the same batch again settles nothing');
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'c', $day), 'reserved'), 0, 'reservations released once');
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'c', $day), 'settled'), 200, 'costs summed once');
is($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'c', $day), 'm|b|requests'), 3, 'three requests recorded');
is($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'c', $day), 'm|b|completion_tokens'), 24, 'tokens recorded once');

$t->cleanup;
done_testing;
