# Single-flight: concurrent identical requests, on two gateways sharing one
# Redis, make one upstream call; a leader that fails or is abandoned
# releases its followers; a Redis that goes away mid-run costs the cache,
# not the service.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my %conf = (
    http => "llm_redis 127.0.0.1:$rp timeout=2s;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_cache on;
                               llm_cache_lock_timeout 20s; }',
);
my $gw1 = $t->start_nginx(%conf);
my $gw2 = $t->start_nginx(%conf);
$t->add_tenant($rp, 'a', 'sk-a');

# a parallel_requests() row of a cacheable chat request
sub req {
    my ($port, $content, %o) = @_;
    return chat_request($port, key => 'sk-a', temperature => 0,
        content => $content, %o);
}

# --- 50 concurrent identical requests, two gateways, one upstream call
$t->mock_reset($up);
my $q = 'MOCK:{"latency_ms":800,"tokens":6,"x":"sf1"}';
my @res = parallel_requests([map {
    req($_ % 2 ? $gw1 : $gw2, $q, $_ % 5 == 0 ? (stream => JSON::PP::true) : ())
} 1 .. 50], timeout => 30);
is(scalar(grep { $_->[0] == 200 } @res), 50, '50 of 50 answered 200');
is($t->mock_stats($up)->{requests}, 1, 'exactly one upstream call');
my %cache;
$cache{ $_->[1]{'x-llm-cache'} // 'none' }++ for @res;
is($cache{MISS}, 1, 'one MISS: the leader');
is($cache{HIT}, 49, '49 HITs: the followers');
my %content;
$content{ content_of($_->[2], $_->[1]) }++ for @res;
is_deeply([keys %content], ['t0 t1 t2 t3 t4 t5 '], 'everyone got the same answer');
my @streams = grep { ($_->[1]{'content-type'} // '') =~ /event-stream/ } @res;
is(scalar(@streams), 10, 'streamed followers got streams');
is(scalar(grep { (sse_events($_->[2]))[-1] eq '[DONE]' } @streams), 10,
   'each stream ends in [DONE]');
my @ids = grep { defined } map { (json_of($_->[2]) // {})->{id} } @res;
my %uid = map { $_ => 1 } @ids;
is(scalar(keys %uid), scalar(@ids), 'every JSON answer has its own id');
my @keys = grep { /:lock$/ } split /\n/, $t->redis_cli($rp, '--scan', '--pattern', key_prefix(KEY_CACHE) . '*');
is(scalar(@keys), 0, 'the lock is released');

# --- a failing leader releases its followers, who go on their own
$t->mock_reset($up);
$q = 'MOCK:{"latency_ms":600,"fail_first":"sf2","x":"sf2"}';
my $t0 = time;
@res = parallel_requests([map { req($_ % 2 ? $gw1 : $gw2, $q) } 1 .. 10], timeout => 30);
my $took = time - $t0;
my %st;
$st{ $_->[0] }++ for @res;
is($st{502}, 1, 'the leader failed: one 502');
is($st{200}, 9, 'its 9 followers were served');
cmp_ok($took, '<', 5, sprintf('followers released at once (%.1f s, lock timeout 20 s)', $took));
cmp_ok($t->mock_stats($up)->{requests}, '>=', 2, 'followers went upstream themselves');
my ($st, $h) = @{ (parallel_requests([req($gw1, $q)]))[0] };
is($h->{'x-llm-cache'}, 'HIT', 'one of them stored the answer');

# --- a leader whose client leaves releases its followers
$t->mock_reset($up);
$q = 'MOCK:{"latency_ms":700,"x":"sf3"}';
{
    my $r = req($gw1, $q);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw1) or die;
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        . "Authorization: Bearer sk-a\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($r->[4]) . "\r\n\r\n$r->[4]";
    sleep 0.2;
    my $pid = fork // die;
    if ($pid == 0) { sleep 0.2; close $s; POSIX::_exit(0) }
    close $s;
    $t0 = time;
    @res = parallel_requests([map { req($_ % 2 ? $gw1 : $gw2, $q) } 1 .. 6], timeout => 30);
    waitpid($pid, 0);
}
$took = time - $t0;
is(scalar(grep { $_->[0] == 200 } @res), 6, 'followers of an abandoned leader served');
cmp_ok($took, '<', 5, sprintf('and not kept for the lock timeout (%.1f s)', $took));

# --- Redis down mid-run: the cache is bypassed, requests still served
$q = 'MOCK:{"x":"sf4"}';
parallel_requests([req($gw1, $q)]);
($st, $h) = @{ (parallel_requests([req($gw1, $q)]))[0] };
is($h->{'x-llm-cache'}, 'HIT', 'before: HIT');
$t->stop_redis($rp);
for my $gw ($gw1, $gw2) {
    for (1 .. 3) {
        ($st, $h) = @{ (parallel_requests([req($gw, $q)]))[0] };
        is($st, 200, "Redis down: served ($gw, $_)");
        is($h->{'x-llm-cache'}, 'BYPASS', "Redis down: BYPASS ($gw, $_)");
    }
}
@res = parallel_requests([map { req($_ % 2 ? $gw1 : $gw2, 'MOCK:{"latency_ms":100,"x":"sf5"}') } 1 .. 20]);
is(scalar(grep { $_->[0] == 200 } @res), 20, 'Redis down: 20 concurrent served');

# and back
$t->start_redis(port => $rp);
$t->add_tenant($rp, 'a', 'sk-a');
ok(wait_until(sub {
    my ($s, $hh) = @{ (parallel_requests([req($gw1, $q)]))[0] };
    ($hh->{'x-llm-cache'} // '') eq 'HIT'
        || do { parallel_requests([req($gw1, $q)]); 0 };
}, 15), 'Redis back: HIT again');

$t->cleanup;
done_testing;
