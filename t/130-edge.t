# The edges of the gateway (issue 11): tenants fail closed (M7), static
# keys without Redis (M8), the models list (L1), tenant ids that name cache
# scopes (L2), the auth cache under unknown keys (L6), backend keys and
# URLs (L7), oversized chunked bodies (L13), nginx's own errors in JSON,
# and the tenant max_n field.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);
use Digest::SHA qw(sha256_hex);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;

my $models = "llm_model mixtral-8x7b { alias open-mixtral-8x7b;
                                       backend http://127.0.0.1:$up/v1; }
              llm_model mixtral-8x22b { backend http://127.0.0.1:$up/v1; }
              llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b;";

my $ghost = 'sk-edge-ghost';     # a static key whose tenant was never made
my $cfg = 'sk-edge-config';      # a static key with its policy in config
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=500ms;
             llm_auth_cache_ttl 60s;
             llm_api_key " . sha256_hex($ghost) . " ghost;
             $models",
    server => 'location /v1/ { llm_gateway; llm_auth on;
                               llm_max_request_body 1k; }
               location /open/v1/ { llm_gateway; }
               location /plain/ { return 400; }',
);

# the sorted ids of a models list, as a cases() check
sub ids_are {
    my ($want) = @_;
    return sub {
        my ($name, $st, $h, $b) = @_;
        my $j = json_of($b);
        is_deeply([sort map { $_->{id} } @{ $j && $j->{data} || [] }], $want,
            $name);
    };
}

# ---------------------------------------------------------------- M7

# a tenant hash of these fields, and a key of it
sub bad_tenant {
    my ($id, %f) = @_;
    return sub {
        $t->redis_cli($rp, 'DEL', rkey(KEY_TENANT, $id));
        $t->redis_cli($rp, 'HSET', rkey(KEY_TENANT, $id), %f) if %f;
        $t->redis_cli($rp, 'HSET', rkey(KEY_API_KEY, sha256_hex("sk-$id")),
            tenant => $id, revoked => 0);
    };
}

cases({ port => $gw, chat => {} },
    { name => 'M7: a static key whose tenant hash is missing gets 403',
      key => $ghost, status => 403, error => 1, code => 'tenant_not_found' },
    { name => 'M7: a key whose tenant hash is missing gets 403',
      before => sub {
          $t->redis_cli($rp, 'HSET',
              rkey(KEY_API_KEY, sha256_hex('sk-edge-nohash')),
              tenant => 'nohash', revoked => 0);
      },
      key => 'sk-edge-nohash', status => 403, code => 'tenant_not_found' },
    (map {
        my ($name, %f) = @$_;
        (my $id = "bad-$name") =~ s/[^a-z0-9-]/-/g;
        +{ name => "M7: a tenant hash with $name gets 403, not unlimited",
           before => bad_tenant($id, %f), key => "sk-$id",
           status => 403, code => 'tenant_not_found' }
    } (['no created field', rpm => 5],
       ['a non-integer rpm', created => 1, rpm => 'lots'],
       ['a negative rpm', created => 1, rpm => '-5'],
       ['a negative budget', created => 1, budget_day_usd => '-1.00'],
       ['a garbage budget', created => 1, budget_month_usd => '1e9'],
       ['an empty tpm', created => 1, tpm => ''],
       ['an unknown cache policy', created => 1, cache => 'always'],
       ['a non-integer max_tokens', created => 1, max_tokens => '10.5'],
       ['an empty models list', created => 1, models => ''])),
    { name => 'M7: a tenant key that is not a hash gets 403',
      before => sub {
          $t->redis_cli($rp, 'SET', rkey(KEY_TENANT, 'strx'), 'created');
          $t->redis_cli($rp, 'HSET',
              rkey(KEY_API_KEY, sha256_hex('sk-edge-strx')),
              tenant => 'strx', revoked => 0);
      },
      key => 'sk-edge-strx', status => 403 },
);

# the negative entry is short: a repaired tenant works again soon
$t->add_tenant($rp, 'nohash', undef, rpm => 100);
ok(wait_until(sub { (chat($gw, key => 'sk-edge-nohash'))[0] == 200 }, 10),
    'M7: once the tenant exists, its key works (the negative entry is brief)');
ok(grep(/llm tenant "bad-no-created-field" refused: no "created" field/,
        $t->error_log($gw)),
    'M7: the refusal is logged with its reason');

# max_n: parsed like the other limits
$t->add_tenant($rp, 'maxn', 'sk-edge-maxn', max_n => 2);
$t->add_tenant($rp, 'maxnbad', 'sk-edge-maxnbad', max_n => 'two');
cases({ port => $gw, chat => {} },
    { name => 'max_n parse: a tenant with max_n 2 is served',
      key => 'sk-edge-maxn', status => 200 },
    { name => 'max_n parse: a tenant whose max_n is not a number is refused',
      key => 'sk-edge-maxnbad', status => 403 },
);

# ---------------------------------------------------------------- L2

cases({ port => $gw, chat => {} },
    { name => 'L2: a key of tenant "-" (the anonymous cache scope) is refused',
      before => sub {
          $t->redis_cli($rp, 'HSET', rkey(KEY_TENANT, '-'), created => 1);
          $t->redis_cli($rp, 'HSET',
              rkey(KEY_API_KEY, sha256_hex('sk-edge-dash')),
              tenant => '-', revoked => 0);
      },
      key => 'sk-edge-dash', status => 403, code => 'tenant_not_found' },
    { name => 'L2: a tenant id llm-admin would refuse is refused',
      before => sub {
          $t->redis_cli($rp, 'HSET',
              rkey(KEY_API_KEY, sha256_hex('sk-edge-brace')),
              tenant => 'x}{y', revoked => 0);
      },
      key => 'sk-edge-brace', status => 403 },
);

# ---------------------------------------------------------------- M8

# nginx -t first: a module that refuses the syntax fails the test, not
# the whole file
sub try_nginx {
    my ($name, %o) = @_;
    my ($failed, $out) = $t->start_nginx(%o, expect_fail => 1);
    ok(!$failed, "M8: nginx -t accepts $name") or diag($out);
    return $failed ? undef : $t->start_nginx(%o);
}

my $with = try_nginx('a static key with limits, with llm_redis',
    http => "llm_redis 127.0.0.1:$rp timeout=500ms;
             llm_api_key " . sha256_hex($cfg) . " cfg max_tokens=30;
             llm_api_key " . sha256_hex('sk-edge-rpm1') . " rpm1 rpm=1; $models",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }');
SKIP: {
    skip 'the configuration was refused', 4 unless $with;
    cases({ port => $with, chat => {} },
        { name => 'M8: a static key with its policy in config needs no tenant hash',
          key => $cfg, status => 200 },
        { name => 'M8: its max_tokens from config is enforced',
          key => $cfg, chat => { max_tokens => 100 }, status => 400 },
        { name => 'M8: a static key with rpm=1: the first request',
          key => 'sk-edge-rpm1', status => 200 },
        { name => 'M8: rpm from the directive is counted in Redis',
          key => 'sk-edge-rpm1', status => 429 },
    );
}

my $ok = 'sk-edge-noredis';
my $narrow = 'sk-edge-noredis-narrow';
my $nr_http = "llm_api_key " . sha256_hex($ok) . " solo unlimited;
               llm_api_key " . sha256_hex($narrow) . " narrow max_tokens=20
                   max_n=2 models=mixtral-8x7b default_model=mixtral-8x7b;
               $models";
my $nr_server = 'location /v1/ { llm_gateway; llm_auth on; }';
my $nr = try_nginx('static keys with limits in config, without llm_redis',
    http => $nr_http, server => $nr_server);
SKIP: {
    skip 'the configuration was refused', 9 unless $nr;
    cases({ port => $nr, chat => {} },
        { name => 'M8: a static key works without Redis',
          key => $ok, status => 200 },
        { name => 'M8: a static key with limits works without Redis',
          key => $narrow, status => 200 },
        { name => 'M8: max_tokens from the directive is enforced without Redis',
          key => $narrow, chat => { max_tokens => 21 }, status => 400 },
        { name => 'M8: models from the directive are enforced without Redis',
          key => $narrow, chat => { model => 'mixtral-8x22b' }, status => 404 },
        { name => 'M8: default_model from the directive is used',
          key => $narrow,
          body => { messages => [{ role => 'user', content => 'hi' }] },
          status => 200 },
        { name => 'M8: an unknown key still gets 401 without Redis',
          key => 'sk-edge-unknown', status => 401 },
        { name => 'L1: /v1/models with a static key without Redis',
          method => 'GET', path => '/v1/models', key => $narrow,
          status => 200,
          check => ids_are(['auto', 'mixtral-8x7b']) },
        { name => 'L1: /v1/models without a key gets 401 without Redis too',
          method => 'GET', path => '/v1/models', status => 401 },
    );
}

for my $case (
    ["llm_api_key " . ('a' x 64) . " t; $models",
     qr/"llm_api_key" of tenant "t" has no limits.*"llm_redis"/,
     'a key whose policy is in Redis, with no llm_redis'],
    ["llm_api_key " . ('a' x 64) . " t rpm=10; $models",
     qr/"llm_api_key" of tenant "t": rpm, tpm and budgets .* need "llm_redis"/,
     'rpm without llm_redis'],
    ["llm_api_key " . ('a' x 64) . " t budget_day=1.00; $models",
     qr/"llm_api_key" of tenant "t": rpm, tpm and budgets/,
     'a budget without llm_redis'],
    ["llm_api_key " . ('a' x 64) . " t colour=red; $models",
     qr/invalid "llm_api_key" parameter "colour=red"/, 'an unknown parameter'],
    ["llm_api_key " . ('a' x 64) . " t max_tokens=-1; $models",
     qr/invalid "llm_api_key" limit "max_tokens=-1"/, 'a negative limit'],
    ["llm_api_key " . ('a' x 64) . " t budget_day=lots; $models",
     qr/invalid "llm_api_key" budget "budget_day=lots"/, 'a bad budget'],
    ["llm_api_key " . ('a' x 64) . " t unlimited max_tokens=5; $models",
     qr/"llm_api_key" takes limits or "unlimited", not both/,
     'unlimited with limits'],
) {
    my ($http, $re, $name) = @$case;
    my ($failed, $out) = $t->start_nginx(http => $http, server => $nr_server,
        expect_fail => 1);
    ok($failed && $out =~ $re, "M8: nginx -t refuses $name") or diag($out);
}

my ($failed, $out) = $t->start_nginx(http => "llm_redis 127.0.0.1:$rp;
    llm_api_key " . ('a' x 64) . " - unlimited; $models",
    server => $nr_server, expect_fail => 1);
ok($failed && $out =~ /invalid tenant "-" in "llm_api_key"/,
    'L2: nginx -t refuses the tenant id "-" in llm_api_key') or diag($out);

# ---------------------------------------------------------------- L1

$t->add_tenant($rp, 'all', 'sk-edge-all');
$t->add_tenant($rp, 'big', 'sk-edge-big', models => 'mixtral-8x22b');
$t->add_tenant($rp, 'alias', 'sk-edge-alias', models => 'open-mixtral-8x7b');
$t->add_tenant($rp, 'none', 'sk-edge-none', models => 'something-else');
cases({ port => $gw, method => 'GET', path => '/v1/models' },
    { name => 'L1: GET /v1/models without a key gets 401 when llm_auth is on',
      status => 401, code => 'invalid_api_key' },
    { name => 'L1: GET /v1/models with an unknown key gets 401',
      key => 'sk-nobody', status => 401 },
    { name => 'L1: a valid key lists models', key => 'sk-edge-all',
      status => 200 },
    { name => 'L1: a tenant without a list sees every model and the router',
      key => 'sk-edge-all',
      check => ids_are(['auto', 'mixtral-8x22b', 'mixtral-8x7b']) },
    { name => 'L1: a tenant sees only the models of its list',
      key => 'sk-edge-big', check => ids_are(['auto', 'mixtral-8x22b']) },
    { name => 'L1: a list naming an alias shows that alias (the router takes model names)',
      key => 'sk-edge-alias', check => ids_are(['open-mixtral-8x7b']) },
    { name => 'L1: a tenant that may use no model sees none, not the router',
      key => 'sk-edge-none', check => ids_are([]) },
    { name => 'L1: a location without llm_auth still lists everything',
      path => '/open/v1/models',
      check => ids_are(['auto', 'mixtral-8x22b', 'mixtral-8x7b']) },
);

{
    # the example configuration, which ./config.sh run starts
    open my $fh, '<', "$LLMTest::ROOT/docs/example.conf" or die;
    my $conf = do { local $/; <$fh> };
    like($conf, qr/location = \/metrics \{\s*llm_metrics;\s*allow 127\.0\.0\.1;\s*deny all;\s*\}/,
        'L1: the demo config of ./config.sh run serves /metrics to loopback only');
    open $fh, '<', "$LLMTest::ROOT/config.sh" or die;
    like(do { local $/; <$fh> }, qr{\$ROOT/docs/example\.conf},
        'L1: ./config.sh run starts the example configuration');
}

# ---------------------------------------------------------------- L6

# a valid key, cached; then revoked in Redis: the worker keeps serving it
# for llm_auth_cache_ttl, unless an unknown key evicts its entry
$t->add_tenant($rp, 'l6', 'sk-edge-l6');
my ($st) = chat($gw, key => 'sk-edge-l6');
is($st, 200, 'L6: a valid key');
$t->redis_cli($rp, 'HSET', rkey(KEY_API_KEY, sha256_hex('sk-edge-l6')), revoked => 1);
my $slot = hex(substr(sha256_hex('sk-edge-l6'), 0, 8)) % 4096;
my $evil;
for my $i (1 .. 1_000_000) {
    if (hex(substr(sha256_hex("sk-evil-$i"), 0, 8)) % 4096 == $slot) {
        $evil = "sk-evil-$i";
        last;
    }
}
($st) = chat($gw, key => $evil);
is($st, 401, 'L6: an unknown key of the same cache slot gets 401');
($st) = chat($gw, key => 'sk-edge-l6');
is($st, 200, 'L6: the unknown key did not evict the valid key (no Redis round trip)');

# ---------------------------------------------------------------- L7

{
    local $ENV{LLM_EDGE_KEY_CRLF} = "sk-abc\r\nX-Injected: 1";
    local $ENV{LLM_EDGE_KEY_CTL} = "sk-abc\x01";
    for my $case (
        ['llm_model m { backend http://127.0.0.1:1/v1 api_key_env=LLM_EDGE_KEY_CRLF; }',
         qr/"backend" api_key_env: environment variable "LLM_EDGE_KEY_CRLF" holds a control character/,
         'an api_key_env value with CR/LF'],
        ['llm_model m { backend http://127.0.0.1:1/v1 api_key_env=LLM_EDGE_KEY_CTL; }',
         qr/"backend" api_key_env: environment variable "LLM_EDGE_KEY_CTL" holds a control character/,
         'an api_key_env value with a control byte'],
        ['llm_model m { backend http://user:s3cr3t@127.0.0.1:1/v1; }',
         qr/"backend" URL of "llm_model" "m" holds user:password@/,
         'a backend URL with userinfo'],
    ) {
        my ($http, $re, $name) = @$case;
        my ($failed, $out) = $t->start_nginx(http => $http,
            server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
        ok($failed && $out =~ $re, "L7: nginx -t refuses $name") or diag($out);
        unlike($out, qr/s3cr3t/, "L7: the message does not show the password")
            if $name =~ /userinfo/;
    }
}

# ---------------------------------------------------------------- L13

my $chunk = 'x' x 4096;
my $json = { 'content-type' => qr{^application/json} };
my $html = { 'content-type' => qr{^text/html} };
my $big_header = "Authorization: Bearer " . ('k' x 10240) . "\r\n";
my $long_uri = '/v1/' . ('a' x 9000);
cases({ port => $gw, timeout => 10 },
    { name => 'L13: a chunked body past the limit gets 413 before it ends',
      raw => "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
          . "Authorization: Bearer sk-edge-all\r\n"
          . "Content-Type: application/json\r\n"
          . "Transfer-Encoding: chunked\r\n\r\n"
          . sprintf("%x\r\n%s\r\n", length $chunk, $chunk),
      status => 413, header => $json, error => 1,
      code => 'request_too_large' },

    # nginx's own errors
    { name => 'nginx errors: a 10 KiB Authorization header gets 400',
      raw => "GET /v1/models HTTP/1.1\r\nHost: x\r\n$big_header"
          . "Connection: close\r\n\r\n",
      status => 400, header => $json, error => 1, code => 'bad_request',
      check => sub {
          my ($name, $st, $h, $b) = @_;
          is($h->{'content-length'}, length $b,
              "$name: the length is the JSON's");
      } },
    { name => 'nginx errors: a too long URI gets 414',
      raw => "GET $long_uri HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      status => 414, error => 1, code => 'uri_too_long' },
    { name => 'nginx errors: a malformed request line gets 400',
      raw => "GARBAGE\r\n\r\n", status => 400, error => 1,
      code => 'bad_request' },
    { name => 'nginx errors: HEAD still gets its status',
      raw => "HEAD $long_uri HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      status => 414 },
    { name => 'nginx errors: a location without llm_gateway keeps nginx\'s own page',
      method => 'GET', path => '/plain/', status => 400, header => $html },

    # a server without a gateway location keeps nginx's pages
    { name => 'nginx errors: a server without a gateway',
      port => $t->start_nginx(http => '', server => 'location / { return 200; }'),
      raw => "GET / HTTP/1.1\r\nHost: x\r\n$big_header"
          . "Connection: close\r\n\r\n",
      status => 400, header => $html },
);

$t->cleanup;
done_testing;
