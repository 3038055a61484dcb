# llm_cache_redis: the cache and its single-flight locks on a Redis of
# their own, so that cache memory never evicts quota or key state; and
# what each role's failure does to the other.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $main = $t->start_redis;
my $cache = $t->start_redis(args => ['--maxmemory', '64mb',
    '--maxmemory-policy', 'allkeys-lru']);

my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$main timeout=300ms;
             llm_cache_redis redis://127.0.0.1:$cache timeout=300ms;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on;
                               llm_cache on; }');

$t->add_tenant($main, 'acme', 'sk-acme', rpm => 1000);

my $n = 0;
sub ask {
    my ($text) = @_;
    return post($gw, '/v1/chat/completions',
        { model => 'mixtral-8x7b', temperature => 0,
          messages => [{ role => 'user', content => $text }] },
        key => 'sk-acme');
}

my $q = "roles-$$";
my ($st, $h) = ask($q);
is($st, 200, 'a miss: 200');
is($h->{'x-llm-cache'}, 'MISS', 'a miss: MISS');
($st, $h) = ask($q);
is($h->{'x-llm-cache'}, 'HIT', 'the same question again: HIT');

like($t->redis_cli($cache, 'KEYS', 'llm:cache:*'), qr/llm:cache:/,
    'the entry is on the cache Redis');
is($t->redis_cli($main, 'KEYS', 'llm:cache:*'), '',
    'and not on the main one');
like($t->redis_cli($main, 'KEYS', 'llm:{acme}:*'), qr/llm:\{acme\}:win/,
    'the quota keys are on the main Redis');
is($t->redis_cli($cache, 'KEYS', 'llm:{acme}:*'), '',
    'and none on the cache one');

# the cache Redis goes: answers still come, uncached, under quota
$t->stop_redis($cache);
my @st;
for my $i (1 .. 3) {
    ($st, $h) = ask("$q-down-$i");
    push @st, $st;
}
is("@st", '200 200 200', 'the cache Redis down: still served');
is($h->{'x-llm-cache'}, 'BYPASS',
    'and not from the cache');
my $win = $t->redis_cli($main, 'HGETALL', LLMTest::rkey(LLMTest::KEY_WIN,
    'acme'));
ok($win ne '', 'quotas still counted on the main Redis');

# the main Redis goes (fail-closed): 503, whatever the cache holds
$cache = $t->start_redis(port => $cache, args => ['--maxmemory', '64mb',
    '--maxmemory-policy', 'allkeys-lru']);
$t->stop_redis($main);
($st) = ask($q);
is($st, 503, 'the main Redis down under fail-closed: 503');

$t->cleanup;
done_testing();
