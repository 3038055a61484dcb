# Bad configurations fail at nginx -t, with messages that name the directive.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $m = 'llm_model m { backend http://127.0.0.1:1/v1; }';

for my $case (
    ['llm_model m { }', qr/"llm_model" "m" has no "backend"/],
    ['llm_model m { backend ftp://x/v1; }', qr/invalid "backend" URL/],
    ['llm_model m { backend http://127.0.0.1:1/v1 colour=red; }', qr/invalid "backend" parameter "colour=red"/],
    ['llm_model m { backend http://127.0.0.1:1/v1 price=0.6; }', qr/invalid "backend" price/],
    ['llm_model m { backend http://127.0.0.1:1/v1 price=0.1234567/1; }', qr/invalid "backend" price/],
    ['llm_model m { backend http://127.0.0.1:1/v1 weight=0; }', qr/invalid "backend" weight/],
    ['llm_model m { backend http://127.0.0.1:1/v1 api_key_env=LLM_SURELY_UNSET_VAR; }', qr/api_key_env.*LLM_SURELY_UNSET_VAR.*not set/],
    ['llm_model m { context_window -5; backend http://127.0.0.1:1/v1; }', qr/invalid "context_window"/],
    ['llm_model m { temperature 1; backend http://127.0.0.1:1/v1; }', qr/unknown directive "temperature" in "llm_model"/],
    ["$m $m", qr/duplicate "llm_model" "m"/],
    ['llm_model m { fallback x; backend http://127.0.0.1:1/v1; }', qr/"fallback" of "llm_model" "m" names no other model: "x"/],
    ["$m llm_redis redis.example.com:6379;", qr/"llm_redis" host "redis.example.com" is a name: it needs a "resolver"/],
    ["$m llm_redis 127.0.0.1:99999;", qr/invalid "llm_redis" address "127.0.0.1:99999": invalid port/],
    ["$m llm_redis 127.0.0.1 colour=red;", qr/invalid "llm_redis" parameter "colour=red"/],
    ["$m llm_api_key not-a-hash t;", qr/"llm_api_key" takes the SHA-256/],
) {
    my ($http, $re) = @$case;
    my ($failed, $out) = $t->start_nginx(http => $http,
        server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
    ok($failed, "nginx -t fails: $http");
    like($out, $re, "message names the directive") or diag($out);
}

for my $case (
    ['location /v1/ { llm_gateway; llm_quota on; llm_auth on; }', qr/"llm_quota" needs "llm_redis"/],
    ['location /v1/ { llm_gateway; llm_quota on; }', qr/"llm_quota" needs "llm_auth on"/],
    ['location /v1/ { llm_gateway; llm_auth on; }', qr/"llm_auth" needs "llm_redis" or "llm_api_key"/],
    ['location /v1/ { llm_gateway; llm_stream_buffer 1k; }', qr/"llm_stream_buffer" must be at least/],
    ['location /v1/ { llm_gateway; llm_gateway; }', qr/"llm_gateway" directive is duplicate/],
    ['location /v1/ { llm_gateway; llm_redis_failure sometimes; }', qr/invalid value "sometimes" in "llm_redis_failure", expected "closed", "open"/],
    ['location /v1/ { llm_gateway; llm_default_max_tokens 0; }', qr/"llm_default_max_tokens" must be positive/],
    ['location /v1/ { llm_gateway; llm_cache on; }', qr/"llm_cache" needs "llm_redis"/],
    ['location /v1/ { llm_gateway; llm_cache_charge 101; }', qr/"llm_cache_charge" is a percentage/],
    ['location /v1/ { llm_gateway; llm_cache_policy sometimes; }', qr/invalid value "sometimes" in "llm_cache_policy"/],
    ['location /v1/ { llm_gateway; llm_cache_scope global; }', qr/invalid value "global" in "llm_cache_scope"/],
    ['location /v1/ { llm_gateway; llm_cache_ttl 0; }', qr/"llm_cache_ttl" must be positive/],
    ['location /v1/ { llm_gateway; llm_cache_max_entry 10; }', qr/"llm_cache_max_entry" must be at least 1k/],
    ['location /v1/ { llm_gateway; llm_cache_local 1m; }', qr/"llm_cache_local" directive is not allowed here/],
) {
    my ($server, $re) = @$case;
    my ($failed, $out) = $t->start_nginx(http => $m, server => $server, expect_fail => 1);
    ok($failed, "nginx -t fails: $server");
    like($out, $re, "message names the directive") or diag($out);
}

my ($failed, $out) = $t->start_nginx(http => "$m llm_redis unix:/tmp/x.sock db=2 timeout=100ms;
    llm_api_key " . ('a' x 64) . " t;",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; llm_redis_failure open;
                               llm_cache on; llm_cache_policy any; llm_cache_scope shared;
                               llm_cache_ttl 10m; llm_cache_max_entry 8m; llm_cache_charge 25;
                               llm_cache_lock_timeout 0; }',
    expect_fail => 1);
ok(!$failed, 'a full valid configuration passes nginx -t') or diag($out);

# the example configuration, docs/example.conf, passes nginx -t as it is
# (what ./config.sh run starts) and with its hosted providers uncommented;
# directives.md shows the same text
{
    open my $fh, '<', "$LLMTest::ROOT/docs/example.conf" or die;
    my $example = do { local $/; <$fh> };
    my ($failed, $out) = $t->check_conf($example);
    ok(!$failed, 'the example configuration passes nginx -t') or diag($out);

    # "#directive" lines (not "# prose"), up to the ";" that ends them
    my ($on, $n) = (0, 0);
    my $hosted = join '', map {
        if (/^(\s*)#(\S.*\n)/ || ($on && /^(\s*)#(.*\n)/)) {
            $_ = "$1$2";
            $on = !/;\s*$/;
            $n++;
        }
        $_;
    } split /^/, $example;
    is($n, 4, 'the example has two hosted backends, commented out');
    my $keyfile = $t->dir . '/openrouter';
    open my $kf, '>', $keyfile or die;
    print $kf "sk-example\n";
    close $kf;
    ok($hosted =~ s{api_key_file=/etc/nginx/keys/openrouter}{api_key_file=$keyfile},
        'the example reads a key file');
    local $ENV{DEEPINFRA_API_KEY} = 'sk-example';
    ($failed, $out) = $t->check_conf($hosted);
    ok(!$failed, 'the example with its hosted backends passes nginx -t')
        or diag($out);

    open $fh, '<', "$LLMTest::ROOT/docs/directives.md" or die;
    my $doc = do { local $/; <$fh> };
    my ($shown) = $doc =~ /^## Example configuration\n.*?^```nginx\n(.*?)^```$/ms;
    is($shown, $example, 'directives.md shows docs/example.conf');
}

done_testing;
