# llm_cache_local: a worker's copy of hot entries in front of Redis.  It
# answers without a Redis round trip, lives at most llm_cache_local_ttl,
# stays within its byte budget, and is not used while Redis is down.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp;
             llm_cache_local 256k;
             llm_cache_local_ttl 1500ms;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; llm_cache on; }',
);

# a cacheable chat request
sub ask {
    my ($text, %o) = @_;
    return chat($gw, temperature => 0, content => $text, %o);
}

sub flush_redis_cache {
    my @k = grep { /\S/ } split /\n/, $t->redis_cli($rp, '--scan', '--pattern', key_prefix(KEY_CACHE) . '*');
    $t->redis_cli($rp, 'DEL', @k) if @k;
    return scalar @k;
}

my ($st, $h, $b) = ask('local one');
is($h->{'x-llm-cache'}, 'MISS', 'MISS');
my $want = json_of($b)->{choices}[0]{message}{content};
ok(flush_redis_cache() >= 1, 'entry deleted from Redis');
($st, $h, $b) = ask('local one');
is($h->{'x-llm-cache'}, 'HIT', 'still a HIT: the worker kept a copy');
is(json_of($b)->{choices}[0]{message}{content}, $want, 'the copy is the answer');
($st, $h, $b) = ask('local one', stream => JSON::PP::true);
is($h->{'x-llm-cache'}, 'HIT', 'the copy replays as a stream too');
is((sse_events($b))[-1], '[DONE]', 'replay ends in [DONE]');
sleep 1.7;
($st, $h) = ask('local one');
is($h->{'x-llm-cache'}, 'MISS', 'after llm_cache_local_ttl: gone with Redis\'s');

# a Redis hit is copied as well
ask('local two');
($st, $h) = ask('local two');
is($h->{'x-llm-cache'}, 'HIT', 'HIT');
flush_redis_cache();
($st, $h) = ask('local two');
is($h->{'x-llm-cache'}, 'HIT', 'HIT from the copy');

# the budget: 256k, an entry at most an eighth of it
my $big = 'MOCK:{"size":20000,"x":"big"}';
ask($big);
flush_redis_cache();
($st, $h) = ask($big);
is($h->{'x-llm-cache'}, 'HIT', '20 kB entry kept');
my $huge = 'MOCK:{"size":40000,"x":"huge"}';
ask($huge);
flush_redis_cache();
($st, $h) = ask($huge);
is($h->{'x-llm-cache'}, 'MISS', 'an entry over an eighth of the budget is not kept');
for my $i (1 .. 9) { ask("MOCK:{\"size\":30000,\"x\":\"fill$i\"}") }
flush_redis_cache();
($st, $h) = ask($big);
is($h->{'x-llm-cache'}, 'MISS', 'least recently used entries make room');
($st, $h) = ask('MOCK:{"size":30000,"x":"fill9"}');
is($h->{'x-llm-cache'}, 'HIT', 'recent entries stay');

# Redis down: the cache is bypassed, copies included
ask('local three');
$t->stop_redis($rp);
($st, $h) = ask('local three');
is($st, 200, 'Redis down: served');
is($h->{'x-llm-cache'}, 'BYPASS', 'Redis down: BYPASS, even with a copy');

$t->cleanup;
done_testing;
