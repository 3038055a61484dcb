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

cases({ port => $gw, chat => {} },
    { name => 'valid key', auth => 'Bearer sk-acme-1', status => 200 },
    (map { +{ name => $_->[0], auth => $_->[1], status => 401,
              code => 'invalid_api_key' } }
        ['missing', undef], ['not bearer', 'Basic c2stYWNtZS0x'],
        ['empty bearer', 'Bearer '], ['unknown', 'Bearer sk-nobody']),
    { name => 'a location without llm_auth stays open', auth => undef,
      path => '/open/v1/chat/completions', status => 200 },

    # static key, with its tenant's policy from Redis
    { name => 'static key', auth => "Bearer $static", status => 200 },
    { name => 'tenant max_tokens cap enforced', auth => "Bearer $static",
      chat => { max_tokens => 500 }, status => 400,
      message => qr/50/ },
);

# revocation takes effect within the cache TTL
$t->redis_cli($rp, 'HSET', rkey(KEY_API_KEY, sha256_hex('sk-acme-1')), 'revoked', 1);
my $t0 = time;
ok(wait_until(sub { (chat($gw, auth => 'Bearer sk-acme-1'))[0] == 401 }, 3), 'revoked key refused');
cmp_ok(time - $t0, '<', 1.6, 'within the 1 s cache TTL');

# tenant policy: allowed models and the default model
$t->add_tenant($rp, 'narrow', 'sk-narrow', models => 'mixtral-8x7b',
    default_model => 'mixtral-8x7b');
cases({ port => $gw, auth => 'Bearer sk-narrow' },
    { name => 'a model outside the tenant\'s list',
      chat => { model => 'mixtral-8x22b' }, status => 404,
      code => 'model_not_found' },
    { name => 'no model: the tenant default is used',
      body => '{"messages":[{"role":"user","content":"hi"}]}', status => 200,
      check => sub {
          is($t->mock_stats($up)->{last_body}{model}, 'mixtral-8x7b',
              "$_[0]: the default model sent");
      } },
);

# keys that try to smuggle Redis commands or break parsing
my $dbsize = $t->redis_cli($rp, 'DBSIZE');
my $body = '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"x"}]}';
cases({ port => $gw },
    map {
        my $k = $_;
        +{ name => 'hostile key of ' . length($k) . ' bytes',
           raw => "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               . "Connection: close\r\nContent-Type: application/json\r\n"
               . "Authorization: Bearer $k\r\n"
               . "Content-Length: " . length($body) . "\r\n\r\n$body",
           check => sub {
               my ($name, $st) = @_;
               ok($st == 401 || $st == 400 || $st == 494,
                   "$name: refused ($st)");
           } }
    } ("sk-a\r\nFLUSHALL\r\n", "sk-%s%n%x", "sk with spaces", "sk-\0nul",
       'sk-' . ('A' x 4096), "sk-\x{7f}", "*1\r\n\$8\r\nFLUSHALL\r\n"));
is($t->redis_cli($rp, 'DBSIZE'), $dbsize, 'nothing written or flushed in Redis');
is($t->redis_cli($rp, 'EXISTS', rkey(KEY_TENANT, 'acme')), '1', 'data intact');

# a tenant hash whose reply is larger than 64 KiB passes the adapter intact
my $models = join(',', map { "model-$_" } 1 .. 9000) . ',mixtral-8x7b';
cmp_ok(length $models, '>', 65536, 'tenant record over 64 KiB');
$t->add_tenant($rp, 'big', 'sk-big', models => $models);
$t->add_tenant($rp, 'big2', 'sk-big2', models => join(',', map { "model-$_" } 1 .. 9000));
cases({ port => $gw, chat => {} },
    { name => 'large reply parsed: the last allowed model is found',
      auth => 'Bearer sk-big', status => 200 },
    { name => 'large reply parsed: a model not in it is refused',
      auth => 'Bearer sk-big2', status => 404 },
);

$t->cleanup;
done_testing;
