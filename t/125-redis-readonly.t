# M1: a Redis that answers errors to admission, as a primary demoted to a
# replica does after a failover (READONLY): the errors are counted, the
# fail-closed policy holds, fail-open serves unmetered and says so, and
# once the same address is a primary again the quotas are exact again.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $primary = $t->start_redis;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=300ms;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }
               location /open/v1/ { llm_gateway; llm_auth on; llm_quota on;
                                    llm_redis_failure open; }
               location = /metrics { llm_metrics; }',
);

# the tenant lives on both, so that the replica keeps it after its sync
$t->add_tenant($_, 'ro', 'sk-ro', rpm => 4) for $primary, $rp;

# the status of a chat request on path
sub served {
    my ($path) = @_;
    my ($st) = post($gw, $path, '{"model":"mixtral-8x7b","max_tokens":8,'
        . '"messages":[{"role":"user","content":"hi"}]}', key => 'sk-ro',
        timeout => 5);
    return $st;
}

sub readonly_errors {
    my (undef, undef, $b) = http_request($gw, 'GET', '/metrics');
    my $n = 0;
    $n += $1 while $b =~ /^llm_redis_errors_total\{[^}]*error="READONLY"[^}]*\} (\d+)$/mg;
    return $n;
}

is(served('/v1/chat/completions'), 200, 'M1: served while the Redis is a primary');

$t->redis_cli($rp, 'REPLICAOF', '127.0.0.1', $primary);
ok(wait_until(sub { ($t->redis_cli($rp, 'INFO', 'replication') // '')
                    =~ /master_link_status:up/ }, 10), 'the Redis is a replica now');

is(served('/v1/chat/completions'), 503,
   'M1: fail-closed: an admission that Redis refuses (READONLY) is a 503');
cmp_ok(readonly_errors(), '>=', 1, 'M1: the READONLY answer is counted');

is(served('/open/v1/chat/completions'), 200,
   'M1: fail-open: served without quota enforcement');
like($t->error_log($gw), qr/served without quota enforcement/,
     'M1: and the unmetered request is logged');

# promoted again: quotas are enforced, exactly, without a restart
$t->redis_cli($rp, 'REPLICAOF', 'NO', 'ONE');
ok(wait_until(sub { served('/v1/chat/completions') == 200 }, 10),
   'M1: admissions work again once the Redis is a primary');

my @st = map { served('/v1/chat/completions') } 1 .. 6;
my $ok = grep { $_ == 200 } @st;
my $limited = grep { $_ == 429 } @st;
cmp_ok($ok, '<=', 3, "M1: the rpm of 4 holds again ($ok more admitted)");
cmp_ok($limited, '>=', 3, 'M1: the rest are refused with 429');

$t->cleanup;
done_testing;
