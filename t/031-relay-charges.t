# What the relay reads reaches the tenant's spend and usage records: the
# usage at the end of an answer too large to keep (H3), the reservation
# for an answer whose usage is lost (H3), and the token estimate of a cut
# stream (M5).
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
    http => "llm_redis 127.0.0.1:$rp;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=1/2; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on;
                               llm_default_max_tokens 100;
                               llm_max_response_body 64k; }',
);
my $day = strftime('%Y%m%d', gmtime);

# micro-dollars settled, once the settlement is in
sub settled {
    my ($tenant) = @_;
    my $v;
    wait_until(sub {
        $v = $t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, $tenant, $day), 'settled');
        return defined $v && length $v;
    }, 3);
    return $v // 0;
}

sub completion_tokens {
    my ($tenant) = @_;
    settled($tenant);
    my %h = split /\n/, $t->redis_cli($rp, 'HGETALL', rkey(KEY_USAGE, $tenant, $day)) // '';
    my $n = 0;
    $n += $h{$_} for grep { /\|completion_tokens$/ } keys %h;
    return $n;
}

# prices of 1/2 dollars per million tokens: 1 and 2 micro-dollars a token
$t->add_tenant($rp, 'big', 'sk-big');
my ($st) = chat($gw, key => 'sk-big', knobs => { size => 200 * 1024, completion_tokens => 4242 });
is($st, 200, 'H3: an answer over llm_max_response_body');
is(settled('big'), 11 + 4242 * 2, 'H3: is charged the usage read from its end');
is(completion_tokens('big'), 4242, 'H3: and its usage record has those tokens');

$t->add_tenant($rp, 'lost', 'sk-lost');
($st) = chat($gw, key => 'sk-lost', knobs => { size => 200 * 1024, no_usage => JSON::PP::true });
is($st, 200, 'H3: an answer over the limit without usage');

cmp_ok(settled('lost'), '>=', 100 * 2,
    'H3: an answer without readable usage is charged its reservation');

my $d = sub {
    'data: ' . encode_json({ choices => [{ index => 0, delta => $_[0] }] }) . "\n\n";
};
$t->add_tenant($rp, 'cut', 'sk-cut');
($st) = chat($gw, key => 'sk-cut', knobs => { cut => JSON::PP::true, pieces => [
    $d->({ reasoning_content => 'Let me think about it.' }),                # 6
    $d->({ content => 'Hello world, this is one delta of many tokens' }),   # 12
] }, stream => JSON::PP::true);
is($st, 200, 'M5: a stream cut without usage');

is(completion_tokens('cut'), 18,
    'M5: a cut stream is charged the tokens estimated from all its deltas');

$t->cleanup;
done_testing;
