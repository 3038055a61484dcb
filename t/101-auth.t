# API keys: valid, missing, malformed, unknown, revoked (within the cache
# TTL), static keys, tenant policy, and keys that try to inject commands.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use Digest::SHA qw(sha256_hex);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $static = 'sk-static-key-1';
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=500ms;
             llm_auth_cache_ttl 1s;
             llm_api_key " . sha256_hex($static) . " statictenant;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }
             llm_model mixtral-8x22b { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; }
               location /open/v1/ { llm_gateway; }',
);

$t->add_tenant($rp, 'acme', 'sk-acme-1');
$t->add_tenant($rp, 'statictenant', undef, max_tokens => 50);

sub denied {
    my ($name, $key) = @_;
    my ($st, $h, $b) = chat($gw, auth => $key);
    is($st, 401, "$name: 401");
    is(json_of($b)->{error}{code}, 'invalid_api_key', "$name: invalid_api_key");
}

my ($st, $h, $b) = chat($gw, auth => 'Bearer sk-acme-1');
is($st, 200, 'valid key: 200');
denied('missing', undef);
denied('not bearer', 'Basic c2stYWNtZS0x');
denied('empty bearer', 'Bearer ');
denied('unknown', 'Bearer sk-nobody');
($st) = chat($gw, auth => undef, path => '/open/v1/chat/completions');
is($st, 200, 'a location without llm_auth stays open');

# static key, with its tenant's policy from Redis
($st) = chat($gw, auth => "Bearer $static");
is($st, 200, 'static key: 200');
($st, $h, $b) = chat($gw, auth => "Bearer $static", max_tokens => 500);
is($st, 400, 'tenant max_tokens cap enforced');
like(json_of($b)->{error}{message}, qr/50/, 'the cap is named');

# revocation takes effect within the cache TTL
$t->redis_cli($rp, 'HSET', rkey(KEY_API_KEY, sha256_hex('sk-acme-1')), 'revoked', 1);
my $t0 = time;
ok(wait_until(sub { (chat($gw, auth => 'Bearer sk-acme-1'))[0] == 401 }, 3), 'revoked key refused');
cmp_ok(time - $t0, '<', 1.6, 'within the 1 s cache TTL');

# tenant policy: allowed models and the default model
$t->add_tenant($rp, 'narrow', 'sk-narrow', models => 'mixtral-8x7b',
    default_model => 'mixtral-8x7b');
($st, $h, $b) = chat($gw, auth => 'Bearer sk-narrow', model => 'mixtral-8x22b');
is($st, 404, 'a model outside the tenant\'s list: 404');
is(json_of($b)->{error}{code}, 'model_not_found', 'model_not_found');
($st, $h, $b) = http_request($gw, 'POST', '/v1/chat/completions',
    { 'Content-Type' => 'application/json', Authorization => 'Bearer sk-narrow' },
    '{"messages":[{"role":"user","content":"hi"}]}');
is($st, 200, 'no model: the tenant default is used');
is($t->mock_stats($up)->{last_body}{model}, 'mixtral-8x7b', 'default model sent');

# keys that try to smuggle Redis commands or break parsing
my $dbsize = $t->redis_cli($rp, 'DBSIZE');
for my $k ("sk-a\r\nFLUSHALL\r\n", "sk-%s%n%x", "sk with spaces", "sk-\0nul",
    'sk-' . ('A' x 4096), "sk-\x{7f}", "*1\r\n\$8\r\nFLUSHALL\r\n")
{
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw) or die;
    my $body = '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"x"}]}';
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nAuthorization: Bearer $k\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
    local $/;
    my $resp = <$s> // '';
    my ($code) = $resp =~ m{^HTTP/1\.1 (\d+)};
    ok(defined $code && ($code == 401 || $code == 400 || $code == 494),
        'hostile key refused: ' . ($code // 'none') . ' for ' . length($k) . ' bytes');
}
is($t->redis_cli($rp, 'DBSIZE'), $dbsize, 'nothing written or flushed in Redis');
is($t->redis_cli($rp, 'EXISTS', rkey(KEY_TENANT, 'acme')), '1', 'data intact');

# a tenant hash whose reply is larger than 64 KiB passes the adapter intact
my $models = join(',', map { "model-$_" } 1 .. 9000) . ',mixtral-8x7b';
cmp_ok(length $models, '>', 65536, 'tenant record over 64 KiB');
$t->add_tenant($rp, 'big', 'sk-big', models => $models);
($st) = chat($gw, auth => 'Bearer sk-big');
is($st, 200, 'large reply parsed: the last allowed model is found');
$t->add_tenant($rp, 'big2', 'sk-big2', models => join(',', map { "model-$_" } 1 .. 9000));
($st) = chat($gw, auth => 'Bearer sk-big2');
is($st, 404, 'large reply parsed: a model not in it is refused');

$t->cleanup;
done_testing;
