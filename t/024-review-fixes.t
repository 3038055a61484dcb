# Findings of the review of the merged issue 11 work: backend aliases of
# generation bounds (H1), price-changing fields (H2), the tenant cap
# without a quota, nginx's own errors under unrelated error_page
# directives, integers cJSON cannot print as such, and llm_api_key's
# repeated parameters.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha256_hex);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;

my $models = "llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }";
my $gw = $t->start_nginx(
    http => $models,
    server => 'error_page 500 502 503 504 /50x.html;
               location /v1/ { llm_gateway; }');

my %json = ('Content-Type' => 'application/json');
my $msgs = '"messages":[{"role":"user","content":"hi"}]';

sub post {
    my ($port, $extra, %h) = @_;
    my ($st, $h, $b) = http_request($port, 'POST', '/v1/chat/completions',
        { %json, %h }, qq({"model":"mixtral-8x7b",$msgs$extra}));
    return ($st, json_of($b), $b);
}

sub refused {
    my ($extra, $param, $id) = @_;
    my ($st, $j, $b) = post($gw, $extra);
    is($st, 400, "$id: $extra is refused") or diag($b);
    is($j && $j->{error}{code}, 'unsupported_parameter',
        "$id: $extra: code unsupported_parameter");
    is($j && $j->{error}{param}, $param, "$id: $extra: param $param");
    is($j && $j->{error}{type}, 'invalid_request_error',
        "$id: $extra: invalid_request_error");
    return $j;
}

# ---------------------------------------------------------------- H1

my $j = refused(',"max_tokens":1,"n_predict":-1,"n_cmpl":4', 'n_predict',
    'H1');
like($j && $j->{error}{message}, qr/max_tokens/,
    'H1: n_predict: the message names max_tokens');
$j = refused(',"n_cmpl":4', 'n_cmpl', 'H1');
like($j && $j->{error}{message}, qr/'n'/, 'H1: n_cmpl: the message names n');
refused(',"max_new_tokens":100000', 'max_new_tokens', 'H1');
refused(',"num_predict":-1', 'num_predict', 'H1');
refused(',"options":{"num_predict":-1}', 'options.num_predict', 'H1');

my ($st) = post($gw, ',"min_tokens":1,"max_tokens":5');
is($st, 200, 'H1: vLLM\'s min_tokens passes (vLLM bounds it by max_tokens)');
($st) = post($gw, ',"n_predict":null');
is($st, 200, 'H1: a null alias is no bound and passes');

# ---------------------------------------------------------------- H2

refused(',"service_tier":"flex"', 'service_tier', 'H2');
refused(',"service_tier":"priority"', 'service_tier', 'H2');
refused(',"modalities":["text","audio"]', 'modalities', 'H2');
refused(',"audio":{"voice":"alloy","format":"wav"}', 'audio', 'H2');
refused(',"web_search_options":{}', 'web_search_options', 'H2');
refused(',"models":["openai/gpt-4o","anthropic/claude-opus-4"]', 'models',
    'H2');
refused(',"plugins":[{"id":"web"}]', 'plugins', 'H2');
refused(',"provider":{"order":["OpenAI"]}', 'provider', 'H2');

for my $ok (',"service_tier":"auto"', ',"service_tier":"default"',
    ',"modalities":["text"]')
{
    ($st) = post($gw, $ok);
    is($st, 200, "H2: $ok passes");
}

# ---------------------------------------------------------------- L: seed

for my $f (['seed', '8999999999999999'], ['seed', '-1000000000000000'],
    ['top_logprobs', '1000000000000000'], ['max_tokens', '1000000000000000'])
{
    my ($k, $v) = @$f;
    ($st, $j) = post($gw, qq(,"$k":$v));
    is($st, 400, "integers: $k=$v, which cJSON prints with an exponent, "
        . 'is refused');
    is($j && $j->{error}{param}, $k, "integers: $k=$v: param named");
}

$t->mock_reset($up);
($st) = post($gw, ',"seed":999999999999999');
is($st, 200, 'integers: seed 999999999999999 passes');
is($t->mock_stats($up)->{last_body}{seed}, 999999999999999,
    'integers: and reaches the backend as the same integer');

# ---------------------------------------------------------------- nginx errors

sub raw { LLMTest::raw_request($_[0], $_[1], timeout => 10) }

my $big = "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    . ('k' x 10240) . "\r\nConnection: close\r\n\r\n";
my $long = "GET /v1/" . ('a' x 9000) . " HTTP/1.1\r\nHost: x\r\n"
    . "Connection: close\r\n\r\n";

my ($h, $b);
($st, $h, $b) = raw($gw, $big);
is($st, 400, 'nginx errors: a 10 KiB Authorization header, unrelated '
    . 'error_page in the server: 400');
like($h->{'content-type'} // '', qr{^application/json},
    'nginx errors: unrelated error_page: too large header still gets JSON');
$j = json_of($b);
is($j && $j->{error}{code}, 'bad_request',
    'nginx errors: unrelated error_page: in OpenAI format');

($st, $h, $b) = raw($gw, $long);
is($st, 414, 'nginx errors: unrelated error_page: a too long URI gets 414');
like($h->{'content-type'} // '', qr{^application/json},
    'nginx errors: unrelated error_page: 414 gets JSON');

my $op = $t->start_nginx(
    http => $models,
    server => 'error_page 414 /414.html;
               location = /414.html { default_type text/html;
                                      return 200 "<p>operator 414</p>"; }
               location /v1/ { llm_gateway; }');

($st, $h, $b) = raw($op, $long);
like($b // '', qr{operator 414},
    'nginx errors: a matching error_page 414 stays the operator\'s');
unlike($h->{'content-type'} // '', qr{json},
    'nginx errors: a matching error_page: not replaced by JSON');

($st, $h, $b) = raw($op, $big);
like($h->{'content-type'} // '', qr{^application/json},
    'nginx errors: error_page 414 only: a too large header still gets JSON');

# the charset filter, after the error filter, rewrites content_type: the
# page must not depend on its address

my $cs = $t->start_nginx(
    http => $models,
    server => 'charset utf-8; charset_types application/json;
               location /v1/ { llm_gateway; }');

($st, $h, $b) = raw($cs, $big);
is($st, 400, 'nginx errors: with a charset: too large header gets 400');
$j = json_of($b);
is($j && $j->{error}{code}, 'bad_request',
    'nginx errors: a later filter rewriting content_type: still the JSON');
is($h->{'content-length'}, length $b,
    'nginx errors: with a charset: the length is the JSON\'s');

# ---------------------------------------------------------------- cap

# a tenant's cap without llm_quota: in Redis, and given with a static key

my $rp = $t->start_redis;
$t->add_tenant($rp, 'capped', 'sk-review-redis', max_tokens => 64);
my $rgw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=500ms; $models",
    server => 'location /v1/ { llm_gateway; llm_auth on; }');

sub capped {
    my ($port, $key, $name) = @_;
    $t->mock_reset($up);
    my ($st, $j, $b) = post($port, '', Authorization => "Bearer $key");
    is($st, 200, "cap: $name, no max_tokens, no quota") or diag($b);
    is($t->mock_stats($up)->{last_body}{max_tokens}, 64,
        "cap: $name: the tenant's max_tokens is sent when the client "
        . 'gives none');

    $t->mock_reset($up);
    ($st, $j, $b) = post($port, ',"n":2', Authorization => "Bearer $key");
    is($st, 200, "cap: $name: with n=2") or diag($b);
    is($t->mock_stats($up)->{last_body}{max_tokens}, 32,
        "cap: $name: n=2 share the cap, 32 each");
}

capped($rgw, 'sk-review-redis', 'a tenant in Redis');

my $key = 'sk-review-capped';
my %static = (
    http => "llm_api_key " . sha256_hex($key) . " acme max_tokens=64;
             $models",
    server => 'location /v1/ { llm_gateway; llm_auth on; }');
my ($refused) = $t->start_nginx(%static, expect_fail => 1);

SKIP: {
    skip 'this module has no limits in llm_api_key', 4 if $refused;
    capped($t->start_nginx(%static), $key, 'a static key without Redis');
}

# ---------------------------------------------------------------- config

my ($failed, $out) = $t->start_nginx(
    http => "llm_api_key " . ('a' x 64) . " t max_tokens=5 max_tokens=9;
             $models",
    server => 'location /v1/ { llm_gateway; llm_auth on; }',
    expect_fail => 1);
ok($failed && $out =~ /"llm_api_key" parameter "max_tokens" is duplicate/,
    'config: nginx -t refuses a repeated llm_api_key parameter')
    or diag($out);

$t->cleanup;
done_testing;
