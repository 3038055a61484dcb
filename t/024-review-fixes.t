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

my $msgs = '"messages":[{"role":"user","content":"hi"}]';

# a chat request's body with more members after its messages
sub with { qq({"model":"mixtral-8x7b",$msgs$_[0]}) }

# ---------------------------------------------------------------- H1, H2

cases({ port => $gw, status => 400, code => 'unsupported_parameter',
        type => 'invalid_request_error' },
    # H1: backend aliases of generation bounds
    { name => 'H1: n_predict is refused',
      body => with(',"max_tokens":1,"n_predict":-1,"n_cmpl":4'),
      param => 'n_predict', message => qr/max_tokens/ },
    { name => 'H1: n_cmpl is refused', body => with(',"n_cmpl":4'),
      param => 'n_cmpl', message => qr/'n'/ },
    { name => 'H1: max_new_tokens is refused',
      body => with(',"max_new_tokens":100000'), param => 'max_new_tokens' },
    { name => 'H1: num_predict is refused', body => with(',"num_predict":-1'),
      param => 'num_predict' },
    { name => 'H1: options.num_predict is refused',
      body => with(',"options":{"num_predict":-1}'),
      param => 'options.num_predict' },
    { name => 'H1: vLLM\'s min_tokens passes (vLLM bounds it by max_tokens)',
      body => with(',"min_tokens":1,"max_tokens":5'), status => 200 },
    { name => 'H1: a null alias is no bound and passes',
      body => with(',"n_predict":null'), status => 200 },

    # H2: fields that change the price
    (map { +{ name => "H2: $_->[0] is refused", body => with($_->[0]),
              param => $_->[1] } }
        [',"service_tier":"flex"', 'service_tier'],
        [',"service_tier":"priority"', 'service_tier'],
        [',"modalities":["text","audio"]', 'modalities'],
        [',"audio":{"voice":"alloy","format":"wav"}', 'audio'],
        [',"web_search_options":{}', 'web_search_options'],
        [',"models":["openai/gpt-4o","anthropic/claude-opus-4"]', 'models'],
        [',"plugins":[{"id":"web"}]', 'plugins'],
        [',"provider":{"order":["OpenAI"]}', 'provider']),
    (map { +{ name => "H2: $_ passes", body => with($_), status => 200 } }
        ',"service_tier":"auto"', ',"service_tier":"default"',
        ',"modalities":["text"]'),
);

# ---------------------------------------------------------------- L: seed

cases({ port => $gw },
    (map {
        my ($k, $v) = @$_;
        +{ name => "integers: $k=$v, which cJSON prints with an exponent, "
               . 'is refused',
           body => with(qq(,"$k":$v)), status => 400, param => $k }
    } ['seed', '8999999999999999'], ['seed', '-1000000000000000'],
      ['top_logprobs', '1000000000000000'],
      ['max_tokens', '1000000000000000']),
    { name => 'integers: seed 999999999999999 passes',
      before => sub { $t->mock_reset($up) },
      body => with(',"seed":999999999999999'), status => 200,
      check => sub {
          is($t->mock_stats($up)->{last_body}{seed}, 999999999999999,
              "$_[0]: and reaches the backend as the same integer");
      } },
);

# ---------------------------------------------------------------- nginx errors

my $big = "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    . ('k' x 10240) . "\r\nConnection: close\r\n\r\n";
my $long = "GET /v1/" . ('a' x 9000) . " HTTP/1.1\r\nHost: x\r\n"
    . "Connection: close\r\n\r\n";
my $json = { 'content-type' => qr{^application/json} };

cases({ port => $gw, timeout => 10 },
    { name => 'nginx errors: a 10 KiB Authorization header, unrelated '
          . 'error_page in the server',
      raw => $big, status => 400, header => $json, code => 'bad_request' },
    { name => 'nginx errors: unrelated error_page: a too long URI',
      raw => $long, status => 414, header => $json },
);

my $op = $t->start_nginx(
    http => $models,
    server => 'error_page 414 /414.html;
               location = /414.html { default_type text/html;
                                      return 200 "<p>operator 414</p>"; }
               location /v1/ { llm_gateway; }');

cases({ port => $op, timeout => 10 },
    { name => 'nginx errors: a matching error_page 414 stays the operator\'s',
      raw => $long, match => qr{operator 414},
      check => sub {
          unlike($_[2]{'content-type'} // '', qr{json},
              "$_[0]: not replaced by JSON");
      } },
    { name => 'nginx errors: error_page 414 only: a too large header',
      raw => $big, header => $json },
);

# the charset filter, after the error filter, rewrites content_type: the
# page must not depend on its address

my $cs = $t->start_nginx(
    http => $models,
    server => 'charset utf-8; charset_types application/json;
               location /v1/ { llm_gateway; }');

cases({ port => $cs, timeout => 10 },
    { name => 'nginx errors: with a charset: a too large header',
      raw => $big, status => 400, code => 'bad_request',
      check => sub {
          my ($name, $st, $h, $b) = @_;
          is($h->{'content-length'}, length $b,
              "$name: the length is the JSON's");
      } },
);

# ---------------------------------------------------------------- cap

# a tenant's cap without llm_quota: in Redis, and given with a static key

my $rp = $t->start_redis;
$t->add_tenant($rp, 'capped', 'sk-review-redis', max_tokens => 64);
my $rgw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=500ms; $models",
    server => 'location /v1/ { llm_gateway; llm_auth on; }');

# the max_tokens the backend was sent
sub sent {
    my ($want, $what) = @_;
    return sub {
        is($t->mock_stats($up)->{last_body}{max_tokens}, $want, "$_[0]: $what");
    };
}

sub capped {
    my ($port, $key, $name) = @_;
    cases({ port => $port, key => $key, status => 200,
            before => sub { $t->mock_reset($up) } },
        { name => "cap: $name, no max_tokens, no quota", body => with(''),
          check => sent(64, 'the tenant\'s max_tokens is sent when the '
                            . 'client gives none') },
        { name => "cap: $name: with n=2", body => with(',"n":2'),
          check => sent(32, 'n=2 share the cap, 32 each') },
    );
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
