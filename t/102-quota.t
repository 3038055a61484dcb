# Every limit type is hit, with the right status, error code and headers;
# usage records add up.
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
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=0.60/1.80; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on;
                               llm_default_max_tokens 100; }',
);
my $day = strftime('%Y%m%d', gmtime);

# requests per minute
$t->add_tenant($rp, 'r', 'sk-r', rpm => 3);
my @st;
for (1 .. 3) {
    my ($st, $h) = chat($gw, key => 'sk-r');
    push @st, $st;
    is($h->{'x-ratelimit-limit-requests'}, 3, "limit header ($_)");
    is($h->{'x-ratelimit-remaining-requests'}, 3 - $_, "remaining header ($_)");
    like($h->{'x-ratelimit-reset-requests'} // '', qr/^\d+(\.\d+)?m?s$|^\d+m\d+s$/, "reset header ($_)");
}
is("@st", '200 200 200', 'three requests admitted');
my ($st, $h, $b) = chat($gw, key => 'sk-r');
is($st, 429, 'fourth: 429');
my $e = json_of($b)->{error};
is($e->{code}, 'rate_limit_exceeded', 'rate_limit_exceeded');
is($e->{type}, 'requests', 'type requests');
cmp_ok($h->{'retry-after'}, '>=', 55, 'Retry-After about a minute');
cmp_ok($h->{'retry-after'}, '<=', 61, 'Retry-After at most a minute (and a one-second bucket)');

# tokens per minute: reservation is the prompt bound plus max_tokens
$t->add_tenant($rp, 'tk', 'sk-tk', tpm => 500);
($st, $h) = chat($gw, key => 'sk-tk', max_tokens => 200);
is($st, 200, 'tpm: first admitted');
is($h->{'x-ratelimit-limit-tokens'}, 500, 'tokens limit header');
cmp_ok($h->{'x-ratelimit-remaining-tokens'}, '<', 300, 'tokens remaining counts the reservation');
# after settlement the mock used 11 prompt + 5 completion tokens
ok(wait_until(sub { (chat($gw, key => 'sk-tk', max_tokens => 200))[0] == 200 }, 2), 'settled: room again');
($st, $h, $b) = chat($gw, key => 'sk-tk', max_tokens => 480);
is($st, 429, 'tpm exceeded: 429');
is(json_of($b)->{error}{type}, 'tokens', 'type tokens');
ok($h->{'retry-after'}, 'Retry-After on tpm');
($st, $h, $b) = chat($gw, key => 'sk-tk', max_tokens => 5000);
is($st, 429, 'a request larger than the whole tpm: 429');
like(json_of($b)->{error}{message}, qr/too large/i, 'says why');

# daily budget in dollars: 200 tokens at $1.80/M cost 360 micro-dollars
$t->add_tenant($rp, 'd', 'sk-d', budget_day_usd => '0.0005');
my @big = (max_tokens => 200, content => 'MOCK:{"tokens":200}');
($st) = chat($gw, key => 'sk-d', @big);
is($st, 200, 'budget: first admitted');
($st, $h, $b) = chat($gw, key => 'sk-d', @big);
is($st, 429, 'budget: second refused (spent + its worst case > $0.0005)');
is(json_of($b)->{error}{code}, 'insufficient_quota', 'insufficient_quota');
cmp_ok($h->{'retry-after'}, '>', 0, 'Retry-After until midnight UTC');
cmp_ok($h->{'retry-after'}, '<=', 86400, 'at most a day');

$t->add_tenant($rp, 'm', 'sk-m', budget_month_usd => '0.0001');
($st, $h, $b) = chat($gw, key => 'sk-m');
is($st, 429, 'monthly budget smaller than one reservation: refused');
is(json_of($b)->{error}{code}, 'insufficient_quota', 'monthly insufficient_quota');
like(json_of($b)->{error}{message}, qr/monthly/, 'names the monthly budget');

# usage records and spend, exact in micro-dollars
ok(wait_until(sub { ($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'd', $day), 'reserved') // '') eq '0' }, 2),
    'reservation released after settlement');
# 11 prompt * 0.60 + 200 completion * 1.80 = 366.6 -> 367 micro-dollars
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'd', $day), 'settled'), 367, 'settled at 367 micro-dollars');
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_MONTH, 'd', substr($day, 0, 6)), 'settled'), 367, 'month too');
my %u = split /\n/, $t->redis_cli($rp, 'HGETALL', rkey(KEY_USAGE, 'd', $day));
my $p = "mixtral-8x7b|127.0.0.1:$up|";
is($u{"${p}requests"}, 1, 'usage: requests');
is($u{"${p}prompt_tokens"}, 11, 'usage: prompt tokens');
is($u{"${p}completion_tokens"}, 200, 'usage: completion tokens');
is($u{"${p}cost_micro_usd"}, 367, 'usage: cost');

# the default cap reached the backend
$t->add_tenant($rp, 'cap', 'sk-cap', rpm => 100);
chat($gw, key => 'sk-cap');
is($t->mock_stats($up)->{last_body}{max_tokens}, 100, 'llm_default_max_tokens sent upstream');
$t->add_tenant($rp, 'cap2', 'sk-cap2', rpm => 100, max_tokens => 42);
chat($gw, key => 'sk-cap2');
is($t->mock_stats($up)->{last_body}{max_tokens}, 42, 'tenant max_tokens sent upstream');

$t->cleanup;
done_testing;
