# llm_metrics_zone sizes the metrics zone: nginx -t takes a size and refuses
# one too small for a slab pool, naming the directive; a small zone still
# serves the metrics and counts the updates it had no room for.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(sysconf _SC_PAGESIZE);
use LLMTest;
use Prometheus qw(parse_prometheus sum_of);

my $t = LLMTest->new;
my $up = $t->start_mock;
my $least = 8 * sysconf(_SC_PAGESIZE) / 1024;    # in k: eight pages
my $too_small = $least / 2;
my $models = join "\n", map {
    "llm_model m$_ { backend http://127.0.0.1:$up/v1; }" } 1 .. 60;
my $server = 'location /v1/ { llm_gateway; }
              location = /metrics { llm_metrics; }';

for my $case (
    ["llm_metrics_zone ${too_small}k;", qr/"llm_metrics_zone" must be at least ${least}k/],
    ['llm_metrics_zone many;', qr/"llm_metrics_zone" directive invalid value/],
    ['llm_metrics_zone 1m; llm_metrics_zone 2m;', qr/"llm_metrics_zone" directive is duplicate/],
) {
    my ($http, $re) = @$case;
    my ($failed, $out) = $t->start_nginx(http => "$models $http",
        server => $server, expect_fail => 1);
    ok($failed, "nginx -t fails: $http");
    like($out, $re, 'the message names llm_metrics_zone') or diag($out);
}

for my $http ('llm_metrics_zone 16m;', "llm_metrics_zone ${least}k;", '') {
    my ($failed, $out) = $t->start_nginx(http => "$models $http",
        server => $server, expect_fail => 1);
    ok(!$failed, "nginx -t passes: " . ($http || 'no llm_metrics_zone'))
        or diag($out);
}

sub dropped {
    my ($gw) = @_;
    for my $i (1 .. 60) {
        my ($st) = http_request($gw, 'POST', '/v1/chat/completions',
            { 'Content-Type' => 'application/json' },
            encode_json({ model => "m$i", max_tokens => 5,
                          messages => [{ role => 'user', content => "hi $i" }] }));
        return "request $i: $st" if $st != 200;
    }
    my ($code, $h, $body) = http_request($gw, 'GET', '/metrics');
    return "/metrics: $code" if $code != 200;
    my $m = parse_prometheus($body);
    return { requests => sum_of($m, 'llm_requests_total'),
             dropped => sum_of($m, 'llm_metrics_dropped_total') };
}

# the least zone: served, and full after 60 models' worth of series
my $gw = $t->start_nginx(http => "$models llm_metrics_zone ${least}k;",
    server => $server);
my $r = dropped($gw);
is(ref $r, 'HASH', 'a small zone: every request answered, /metrics served')
    or diag($r);
ok($r->{dropped} > 0, 'a small zone: the updates it has no room for are counted')
    or diag(explain $r);

# nginx's slab allocator logs each failure at crit; nothing else may be there
my @crit = grep { /\[(alert|emerg|crit)\]/ } split /\n/, $t->error_log($gw);
my @other = grep { !/ngx_slab_alloc\(\) failed: no memory/ }
    @crit;
ok(@crit && !@other, 'a small zone: only the slab allocator complains')
    or diag(join "\n", @other[0 .. ($#other < 9 ? $#other : 9)]);
truncate($t->nginx_prefix($gw) . '/logs/error.log', 0) if !@other;
$t->stop_nginx($gw);

# the default zone holds them all
$gw = $t->start_nginx(http => $models, server => $server);
$r = dropped($gw);
is(ref $r, 'HASH', 'the default zone: every request answered') or diag($r);
is($r->{dropped} // 0, 0, 'the default zone: nothing dropped');
is($r->{requests}, 60, 'the default zone: 60 requests counted');
$t->stop_nginx($gw);

done_testing;
