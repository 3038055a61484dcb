# H6d: settlement does not need SMISMEMBER (Redis 6.2): here Redis has no
# such command, and the unmetered requests served while it was down are
# still recorded once it is back.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my @old = (args => ['--rename-command', 'SMISMEMBER', 'smismember_gone']);
my $rp = $t->start_redis(@old);
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=300ms;
             llm_auth_cache_ttl 60s;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=1/1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on;
                               llm_redis_failure open; }',
);
my $day = strftime('%Y%m%d', gmtime);
my $field = "mixtral-8x7b|127.0.0.1:$up|requests";
sub served {
    return (post($gw, '/v1/chat/completions',
        '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"hi"}]}',
        key => 'sk-o'))[0];
}

$t->add_tenant($rp, 'o', 'sk-o', budget_day_usd => 10);
is(served(), 200, 'warm: the key is known');
$t->stop_redis($rp);
is(join(' ', map { served() } 1 .. 3), '200 200 200', 'served unmetered while Redis is down');
$t->start_redis(port => $rp, @old);
ok(wait_until(sub { ($t->redis_cli($rp, 'HGET', rkey(KEY_USAGE, 'o', $day), $field) || 0) == 3 }, 10),
    'H6d: unmetered settlements are recorded by a Redis without SMISMEMBER');
cmp_ok($t->redis_cli($rp, 'HGET', rkey(KEY_SPEND_DAY, 'o', $day), 'settled') || 0, '>', 0,
    'H6d: and charged');
unlike($t->error_log($gw), qr/settlement .* (lost|failed)/, 'H6d: nothing lost');

$t->cleanup;
done_testing;
