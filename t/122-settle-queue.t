# M2: while Redis is down, each worker keeps at most llm_settle_queue
# settlements; past that the oldest are dropped, counted and logged, and
# what was kept is recorded once Redis is back.
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
    http => "llm_redis 127.0.0.1:$rp timeout=300ms;
             llm_auth_cache_ttl 60s;
             llm_settle_queue 128;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=1/1; }",
    server => 'location /open/v1/ { llm_gateway; llm_auth on; llm_quota on;
                                    llm_redis_failure open; }
               location = /metrics { llm_metrics; }',
);
my $day = strftime('%Y%m%d', gmtime);

sub redis { $t->redis_cli($rp, @_) }
sub metric {
    my ($series) = @_;
    my (undef, undef, $b) = http_request($gw, 'GET', '/metrics');
    return $b =~ /^\Q$series\E (\d+)$/m ? $1 : 0;
}
my @open = (key => 'sk-m', path => '/open/v1/chat/completions');

my ($bad, $out) = $t->start_nginx(expect_fail => 1,
    http => "llm_settle_queue 10;", server => '');
ok($bad, 'M2: llm_settle_queue below 128 is refused');
like($out, qr/"llm_settle_queue" must be at least 128/, 'M2: naming the directive');

$t->add_tenant($rp, 'm', 'sk-m', rpm => 100000);
is((chat($gw, @open))[0], 200, 'warm: the key is known');
# its settlement is written before Redis goes, or it would be queued
# with the others and counted among them
ok(wait_until(sub {
    redis('HGET', rkey(KEY_USAGE, 'm', $day), "mixtral-8x7b|127.0.0.1:$up|requests") }, 5),
   'warm: settled');
my $dropped = metric('llm_settlements_dropped_total{reason="queue_full"}');
$t->stop_redis($rp);
my @reqs = map { chat_request($gw, @open, content => "q$_") } 1 .. 300;
my @r = parallel_requests(\@reqs, timeout => 30);
is(scalar(grep { $_->[0] == 200 } @r), 300, 'M2: 300 served unmetered while Redis is down');

# a request settles as it is finalized, which can come just after its
# client has read the answer: the count is read once it has settled
my $before = $dropped;
wait_until(sub {
    $dropped = metric('llm_settlements_dropped_total{reason="queue_full"}')
               - $before;
    $dropped >= 300 - 128 }, 5);
cmp_ok($dropped, '>=', 300 - 128, "M2: the queue holds at most llm_settle_queue: $dropped dropped");
like($t->error_log($gw), qr/settlement lost \(the queue for Redis is full\)/,
    'M2: drops are logged');
$t->start_redis(port => $rp);
ok(wait_until(sub {
    $dropped = metric('llm_settlements_dropped_total{reason="queue_full"}')
               - $before;
    (redis('HGET', rkey(KEY_USAGE, 'm', $day), "mixtral-8x7b|127.0.0.1:$up|requests") || 0)
        == 300 - $dropped }, 15),
    'M2: what the queue kept is recorded once Redis is back')
    or diag('recorded ', redis('HGET', rkey(KEY_USAGE, 'm', $day),
                               "mixtral-8x7b|127.0.0.1:$up|requests") // 0,
            ", dropped $dropped");

$t->cleanup;
done_testing;
