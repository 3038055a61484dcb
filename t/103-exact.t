# Exactness under concurrency: two gateways share one Redis; no tenant
# passes a request, token or dollar limit, streamed responses included.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use Time::HiRes qw(sleep time);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my %conf = (
    http => "llm_redis 127.0.0.1:$rp;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=1.00/2.00; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }',
);
my $gw1 = $t->start_nginx(%conf);
my $gw2 = $t->start_nginx(%conf);
my $day = strftime('%Y%m%d', gmtime);

# --- 300 concurrent requests against 100 requests/minute, two gateways
$t->add_tenant($rp, 'rpm', 'sk-rpm', rpm => 100);
my @res = parallel_requests([map {
    chat_request($_ % 2 ? $gw1 : $gw2, key => 'sk-rpm')
} 1 .. 300]);
my %by;
$by{$_->[0]}++ for @res;
is($by{200}, 100, 'exactly 100 of 300 admitted');
is($by{429}, 200, 'the other 200 refused with 429');
is($t->mock_stats($up)->{requests}, 100, 'the backend saw exactly 100');

# --- streamed responses against a token budget (tokens per minute)
$t->mock_reset($up);
$t->add_tenant($rp, 'tpm', 'sk-tpm', tpm => 3000);
@res = parallel_requests([map {
    chat_request($_ % 2 ? $gw1 : $gw2, key => 'sk-tpm',
        stream => JSON::PP::true, max_tokens => 100,
        content => 'MOCK:{"tokens":100,"pace_ms":5}')
} 1 .. 60], timeout => 30);
my $ok = grep { $_->[0] == 200 } @res;
cmp_ok($ok, '>', 0, "$ok streams admitted");
cmp_ok($ok, '<', 60, 'some refused');
sleep 0.5;
my %win = split /\n/, $t->redis_cli($rp, 'HGETALL', rkey(KEY_WIN, 'tpm'));
my $used = 0;
$used += $win{$_} for grep { /^t:/ } keys %win;
cmp_ok($used, '>', 0, 'the token window holds what was used');
cmp_ok($used, '<=', 3000, "tokens counted in the window ($used) within 3000");
my %u = split /\n/, ($t->redis_cli($rp, 'HGETALL', rkey(KEY_USAGE, 'tpm', $day)) || '');
my ($ptok, $ctok) = (0, 0);
for (keys %u) { $ptok += $u{$_} if /\|prompt_tokens$/; $ctok += $u{$_} if /\|completion_tokens$/ }
cmp_ok($ptok + $ctok, '<=', 3000, "settled tokens ($ptok + $ctok) never exceed the budget");
is($ctok, 100 * $ok, 'every admitted stream settled its 100 tokens');

# --- streamed responses against a dollar budget
$t->add_tenant($rp, 'usd', 'sk-usd', budget_day_usd => '0.003');
@res = parallel_requests([map {
    chat_request($_ % 2 ? $gw1 : $gw2, key => 'sk-usd',
        stream => JSON::PP::true, max_tokens => 100,
        content => 'MOCK:{"tokens":100,"pace_ms":5}')
} 1 .. 40], timeout => 30);
$ok = grep { $_->[0] == 200 } @res;
sleep 0.5;
my $settled = $t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'usd', $day), 'settled');
cmp_ok($ok, '>', 0, "$ok dollar-budget streams admitted");
cmp_ok($settled, '<=', 3000, "settled $settled micro-dollars within the 3000 budget");
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'usd', $day), 'reserved'), 0, 'no reservation left behind');

# --- a client abort mid-stream settles the tokens actually produced
$t->add_tenant($rp, 'ab', 'sk-ab', tpm => 100000);
my $r = chat_request($gw1, key => 'sk-ab', stream => JSON::PP::true,
    max_tokens => 200,
    content => 'MOCK:{"tokens":200,"pace_ms":20}');
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw1) or die;
print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    . "Authorization: Bearer sk-ab\r\nContent-Length: " . length($r->[4]) . "\r\n\r\n$r->[4]";
my $got = 0;
my $t0 = time;
while (time - $t0 < 5) {
    sysread($s, my $buf, 4096) or last;
    $got += () = $buf =~ /"content":"t\d+ "/g;
    last if $got >= 10;
}
close $s;
ok(wait_until(sub { ($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'ab', $day),
    "mixtral-8x7b|127.0.0.1:$up|requests") // 0) == 1 }, 3), 'aborted stream settled');
my $ab = $t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'ab', $day), "mixtral-8x7b|127.0.0.1:$up|completion_tokens");
cmp_ok($ab, '>=', 10, "charged at least the $got tokens the client saw ($ab)");
cmp_ok($ab, '<', 60, 'not the 200 reserved: what was produced');
is($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'ab', $day), 'reserved'), 0, 'reservation released');

# --- a stream cut by the backend, without usage, is charged the tokens
# estimated from the deltas it carried (each non-empty one its escaped
# length / 4, rounded up: M5): empty ones and text that looks like JSON do
# not fool the count, whether the JSON is compact or spaced
$t->add_tenant($rp, 'cut', 'sk-cut', tpm => 100000);
my @texts = ('a', '', 'say "content":"x', '{"content":""}', 'b', 'c\\');
my $estimate = 0;
for (@texts) {
    my $n = length(JSON::PP->new->allow_nonref->encode($_)) - 2;
    $estimate += int(($n + 3) / 4);
}
for my $spaced (0, 1) {
    my $before = $t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'cut', $day),
        "mixtral-8x7b|127.0.0.1:$up|completion_tokens") || 0;
    my (undef, undef, $b) = chat($gw1, key => 'sk-cut',
        stream => JSON::PP::true, max_tokens => 50,
        content => 'MOCK:' . encode_json({
            texts => \@texts, disconnect_after => scalar(@texts),
            spaced => $spaced ? JSON::PP::true : JSON::PP::false }));
    my @seen = map { $_->{choices}[0]{delta}{content} // () }
               grep { ref && $_->{choices} } map { json_of($_) } sse_events($b);
    is_deeply([@seen[1 .. $#seen]], \@texts,
              "spaced=$spaced: the contents reach the client as sent");
    ok(wait_until(sub { ($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'cut', $day),
        "mixtral-8x7b|127.0.0.1:$up|completion_tokens") || 0) - $before
        == $estimate }, 3),
       "spaced=$spaced: charged the $estimate tokens estimated (M5)");
}

$t->cleanup;
done_testing;
