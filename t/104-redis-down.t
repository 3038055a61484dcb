# Redis killed and restarted under load: fail-closed and fail-open behave
# as documented, no request waits past the Redis timeout, and the
# connection comes back by itself.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX ();
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=300ms;
             llm_auth_cache_ttl 60s;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }
               location /open/v1/ { llm_gateway; llm_auth on; llm_quota on;
                                    llm_redis_failure open; }',
);
$t->add_tenant($rp, 'acme', 'sk-acme', rpm => 100000);

sub batch {
    my ($path, $key, $n) = @_;
    return parallel_requests([map { [$gw, 'POST', $path,
        { 'Content-Type' => 'application/json', Authorization => "Bearer $key" },
        '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"hi"}]}'] } 1 .. $n],
        timeout => 10);
}
sub codes { my %c; $c{$_->[0]}++ for @_; join ' ', map { "$_=$c{$_}" } sort keys %c }
sub slowest { my $m = 0; $_->[3] > $m and $m = $_->[3] for @_; $m }

# warm both locations' view of the key
my @r = (batch('/v1/chat/completions', 'sk-acme', 5), batch('/open/v1/chat/completions', 'sk-acme', 5));
is(codes(@r), '200=10', 'all served while Redis is up');

$t->stop_redis($rp);

@r = batch('/v1/chat/completions', 'sk-acme', 20);
is(codes(@r), '503=20', 'fail-closed: 503 while Redis is down');
is(json_of($r[0][2])->{error}{code}, 'service_unavailable', 'JSON error');
cmp_ok(slowest(@r), '<', 1.5, 'no request waited past the timeout');

@r = batch('/open/v1/chat/completions', 'sk-acme', 20);
is(codes(@r), '200=20', 'fail-open: served from the worker cache, unmetered');
cmp_ok(slowest(@r), '<', 1.5, 'no request waited past the timeout');
@r = batch('/open/v1/chat/completions', 'sk-never-seen', 3);
is(codes(@r), '503=3', 'fail-open: a key never seen cannot be checked: 503');
like($t->error_log($gw), qr/served without quota enforcement/, 'unenforced requests are logged');

# restart on the same port; the worker reconnects on its own
$t->start_redis(port => $rp);
$t->add_tenant($rp, 'acme', 'sk-acme', rpm => 100000);
ok(wait_until(sub { (batch('/v1/chat/completions', 'sk-acme', 1))[0][0] == 200 }, 10),
    'fail-closed location recovers after the restart');
@r = batch('/v1/chat/completions', 'sk-acme', 20);
is(codes(@r), '200=20', 'all served again');
my $day = POSIX::strftime('%Y%m%d', gmtime);
ok(wait_until(sub { ($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'acme', $day),
    "mixtral-8x7b|127.0.0.1:$up|requests") || 0) >= 41 }, 3),
    'the 20 unmetered requests were recorded once Redis came back (with 21 metered ones)');

# kill it mid-load: every request ends, with 200 or 503, quickly
my @all;
my $pid = fork;
if (!$pid) { sleep 0.3; { exec('redis-cli', '-p', $rp, 'shutdown', 'nosave') } POSIX::_exit(1) }
for (1 .. 8) { push @all, batch('/v1/chat/completions', 'sk-acme', 25); sleep 0.05 }
waitpid $pid, 0;
my %c; $c{$_->[0]}++ for @all;
is(($c{200} // 0) + ($c{503} // 0), 200, 'under load: every request answered 200 or 503 (' . codes(@all) . ')');
cmp_ok(slowest(@all), '<', 1.5, sprintf('slowest %.2f s', slowest(@all)));

# settlements that waited are sent once Redis is back: nothing is left
# for the worker to report as unrecorded when it exits
$t->start_redis(port => $rp);
ok(wait_until(sub { (batch('/v1/chat/completions', 'sk-acme', 1))[0][0] == 200 }, 10),
    'reconnected after the second restart');
sleep 0.5;

$t->cleanup;
done_testing;
