# The sweeper on a Redis Cluster: SCAN sees one node's keys only, so it
# walks every primary; reservations left on each of them by a dead
# gateway are released.
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
my $c = $t->start_cluster;
my $seed = $c->{primaries}[0];
sub redis { $t->redis_cli([$seed, '-c'], @_) }

my $day = strftime('%Y%m%d', gmtime);
my $now = int(time * 1000);

# tenants until each primary holds at least one
my (%on, @tenants);
for my $i (1 .. 200) {
    my $tenant = "sw$i";
    my $slot = $t->cluster_keyslot($seed, "{$tenant}");
    my $owner = $t->cluster_slot_owner($seed, $slot);
    next if $on{$owner}++;
    push @tenants, $tenant;
    last if keys %on == 3;
}
is(scalar @tenants, 3, 'one tenant on each of the 3 primaries');

for my $tenant (@tenants) {
    redis('HSET', rkey(KEY_INFLIGHT, $tenant),
        'old', "100:700:" . ($now - 7200000) . ':' . ($now - 3600000)
            . ":$day");
    redis('HSET', rkey(KEY_SPEND_DAY, $tenant, $day), 'reserved', 700);
}

my $gw = $t->start_nginx(
    http => "llm_redis redis-cluster://127.0.0.1:$seed timeout=300ms;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=1/1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }');

# a worker sweeps once it has admitted a request
$t->add_tenant([$seed, '-c'], 'w', 'sk-w');
is((chat($gw, key => 'sk-w'))[0], 200, 'a request admitted on the cluster');

ok(wait_until(sub {
    !grep { redis('HEXISTS', rkey(KEY_INFLIGHT, $_), 'old') } @tenants
}, 10), 'the stale reservations on every primary are released')
    or diag($t->error_log($gw));
is(join(' ', map { redis('HGET', rkey(KEY_SPEND_DAY, $_, $day), 'reserved') }
    @tenants), '0 0 0', 'and taken off each tenant\'s reserved');

$t->cleanup;
done_testing;
