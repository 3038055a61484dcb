# llm_redis redis-cluster://: exact quotas from two gateways, tenants on
# every primary, a slot moved under load, and a killed primary followed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $t0 = time;
my $c = $t->start_cluster;
note sprintf('cluster formed in %.2f s', time - $t0);
my @p = @{ $c->{ports} };
my $cli = [$p[0], '-c'];
my %conf = (
    # a subset of the nodes as seeds
    http => "llm_redis redis-cluster://127.0.0.1:$p[0],127.0.0.1:$p[3] timeout=300ms;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }',
);
my ($refused, $why) = $t->start_nginx(%conf, expect_fail => 1);
ok(!$refused, 'nginx -t takes llm_redis redis-cluster://') or diag($why);
my ($gw1, $gw2) = $refused ? (LLMTest::free_port(), LLMTest::free_port())
    : ($t->start_nginx(%conf), $t->start_nginx(%conf));

sub reqs {
    my ($timeout, @rows) = @_;
    my @r = eval { parallel_requests(\@rows, timeout => $timeout) };
    return @r ? @r : map { [0, {}, '', 0] } @rows;
}
sub codes { my %c; $c{$_->[0]}++ for @_; join ' ', map { "$_=$c{$_}" } sort keys %c }
sub win_sum {
    my ($port, $tenant) = @_;
    my %w = split /\n/, ($t->redis_cli($port, 'HGETALL', rkey(KEY_WIN, $tenant)) || '');
    my $n = 0;
    $n += $w{$_} for grep { /^r:/ } keys %w;
    return $n;
}
sub slot_of { $t->cluster_keyslot($p[0], "{$_[0]}") }

# --- 1. 300 concurrent requests against rpm=100, two gateways
$t->add_tenant($cli, 'rpm', 'sk-rpm', rpm => 100);
my @res = reqs(30, map { chat_request($_ % 2 ? $gw1 : $gw2, key => 'sk-rpm') } 1 .. 300);
my %by;
$by{$_->[0]}++ for @res;
is($by{200}, 100, 'exactly 100 of 300 admitted');
is($by{429}, 200, 'the other 200 refused with 429');
is(eval { $t->mock_stats($up)->{requests} }, 100, 'the backend saw exactly 100');

# --- 2. 20 tenants spread over the 3 primaries, rpm=2 each
my @ten = map { "t$_" } 1 .. 20;
my %on;
$on{ $t->cluster_slot_owner($p[0], slot_of($_)) }++ for @ten;
is(scalar(grep { $on{$_} } @{ $c->{primaries} }), 3,
   'the tenants live on every primary (' . join(' ', map { $on{$_} // 0 } @{ $c->{primaries} }) . ')');
$t->add_tenant($cli, $_, "sk-$_", rpm => 2) for @ten;
my %seen;
for my $round (1 .. 3) {
    my @r = reqs(10, map { chat_request($round % 2 ? $gw1 : $gw2, key => "sk-$_") } @ten);
    push @{ $seen{ $ten[$_] } }, $r[$_][0] for 0 .. $#ten;
}
is(scalar(grep { "@{ $seen{$_} }" eq '200 200 429' } @ten), 20,
   'each tenant: 200 200 429')
    or diag(join ', ', map { "$_: @{ $seen{$_} }" } @ten);

# --- 4 (run first, on the whole cluster). the slot of a tenant moved to
# another primary under a stream of requests
$t->add_tenant($cli, 'mv', 'sk-mv', rpm => 100000);
my $slot = slot_of('mv');
my $src = $t->cluster_slot_owner($p[0], $slot);
my ($dst) = grep { $_ != $src } @{ $c->{primaries} };
my %nodes = $t->cluster_nodes($p[0]);
my $log = $t->dir . '/mv.log';
my $stop = $t->dir . '/mv.stop';
# a key of the test's own in the slot, so that the move is seen to
# carry keys whatever the gateway wrote
$t->redis_cli($cli, 'SET', 'llm:{mv}:marker', 1);
my $loader = $t->background('load', sub {
    open my $fh, '>', $log or die;
    $fh->autoflush(1);
    until (-e $stop) {
        my @r = reqs(5, map { chat_request($_ % 2 ? $gw1 : $gw2, key => 'sk-mv') } 1 .. 4);
        printf $fh "%d %.3f\n", @$_[0, 3] for @r;
        sleep 0.02;
    }
});
sleep 1;
$t0 = time;
$t->redis_cli($dst, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $nodes{$src}{id});
$t->redis_cli($src, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $nodes{$dst}{id});
for (1 .. 50) {
    my @k = split /\n/, ($t->redis_cli($src, 'CLUSTER', 'GETKEYSINSLOT', $slot, 100) // '');
    last unless @k;
    $t->redis_cli($src, 'MIGRATE', '127.0.0.1', $dst, '', 0, 5000, 'KEYS', @k);
}
# as redis-cli --cluster does, the slot is given away right after its
# keys: between the two, a script whose keys are split between the nodes
# gets TRYAGAIN, which the gateway waits out only within its timeout
$t->redis_cli($_, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $nodes{$dst}{id})
    for $dst, $src, grep { $_ != $src && $_ != $dst } @{ $c->{primaries} };
note sprintf('slot %d moved from %d to %d in %.2f s', $slot, $src, $dst, time - $t0);
ok(wait_until(sub { ($t->cluster_slot_owner($p[0], $slot) // 0) == $dst }, 10),
   'the cluster agrees on the new owner');
sleep 1;
open my $s, '>', $stop or die;
close $s;
waitpid $loader, 0;
my (%mv, $max);
$max = 0;
open my $fh, '<', $log or die;
while (<$fh>) { my ($st, $sec) = split; $mv{$st}++; $max = $sec if $sec > $max }
close $fh;
note sprintf('under migration: %s; slowest %.2f s', join(' ', map { "$_=$mv{$_}" } sort keys %mv), $max);
ok(($mv{200} // 0) > 0 && !grep({ $_ != 200 && $_ != 429 } keys %mv),
   'no error status while the slot moved')
    or diag(join '', grep { /\[(error|warn)\]/ } map { split /^/m, $t->error_log($_) } $gw1, $gw2);
is($t->redis_cli($src, 'CLUSTER', 'COUNTKEYSINSLOT', $slot), 0, 'no key of the slot left on the old node');
cmp_ok($t->redis_cli($dst, 'CLUSTER', 'COUNTKEYSINSLOT', $slot), '>', 0, 'its keys on the new node');
is($t->redis_cli($dst, 'GET', 'llm:{mv}:marker'), 1, 'the test key moved with the slot');
my $won = win_sum($dst, 'mv');
ok($won > 0 && $won == ($mv{200} // 0),
   "the counters on the new node count every admission ($won)");

# --- 3. a primary killed: its replica takes over, the gateway follows
my $victim = $c->{primaries}[0] == $dst ? $c->{primaries}[1] : $c->{primaries}[0];
my ($vt) = grep { $t->cluster_slot_owner($p[0], slot_of($_)) == $victim } map { "k$_" } 1 .. 100;
$t->add_tenant($cli, $vt, "sk-$vt", rpm => 100000);
my ($rep) = grep { $c->{replica_of}{$_} == $victim } keys %{ $c->{replica_of} };
sleep 0.5;    # the replica's copy of the tenant
is((reqs(5, chat_request($gw1, key => "sk-$vt")))[0][0], 200, "tenant $vt served before the kill");
$t0 = time;
$t->stop_redis($victim);
my @alive = grep { $_ != $victim } @p;
ok(wait_until(sub {
    !grep { ($t->redis_cli($_, 'CLUSTER', 'INFO') // '') !~ /cluster_state:ok/ } @alive
    and ($t->redis_cli($rep, 'INFO', 'replication') // '') =~ /role:master/ }, 20),
   'the replica took over, cluster_state:ok');
note sprintf('cluster failover: %.2f s', time - $t0);
ok(wait_until(sub { (reqs(5, chat_request($gw1, key => "sk-$vt"), chat_request($gw2, key => "sk-$vt")))[1][0] == 200 }, 15),
   'the gateway follows the promoted replica');
note sprintf('served again after %.2f s', time - $t0);

# --- 5. redirections are not failures
unlike($t->error_log($_), qr/\b(MOVED|ASK)\b.*(fail|error)|(fail|error).*\b(MOVED|ASK)\b/i,
       'no MOVED or ASK counted as a failure') for $refused ? () : ($gw1, $gw2);

$t->cleanup;
done_testing;
