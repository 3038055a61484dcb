# The status page (llm_status): its JSON against known traffic sent to two
# workers and against llm_metrics' counters, the HTML with the same
# numbers and its names escaped, the history ring wrapping around, a
# reload that keeps it, and the configuration nginx -t refuses.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use LLMTest;
use Prometheus qw(parse_prometheus sum_of);

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;

# ------------------------------------------------------------ nginx -t

for my $c (
    [ 'llm_status_history step=3s length=10s;', qr/length must be a multiple of step/ ],
    [ 'llm_status_history step=500ms;', qr/"llm_status_history": invalid "step=500ms"/ ],
    [ 'llm_status_history span=1h;', qr/"llm_status_history": unknown parameter "span=1h"/ ],
    [ 'llm_status_history step=1s length=3h;', qr/of 2 to 8640 steps/ ],
    [ 'llm_status_history step=1s length=1s;', qr/of 2 to 8640 steps/ ],
    [ 'llm_status_zone 64k; llm_status_history step=1s length=1h;',
      qr/"llm_status_zone" of 64k is too small for 1 backends of 3600 history slots/ ],
    [ 'llm_status_zone 4k;', qr/"llm_status_zone" must be at least/ ],
) {
    my ($failed, $out) = $t->start_nginx(expect_fail => 1,
        http => "llm_model m { backend http://127.0.0.1:$up/v1; } $c->[0]",
        server => 'location = /status { llm_status; }');
    ok($failed, "nginx -t refuses: $c->[0]");
    like($out, $c->[1], "... and says why: $c->[0]");
}

# ------------------------------------------------ counters, two workers

my $gw = $t->start_nginx(
    workers => 2,
    http => "llm_redis 127.0.0.1:$rp;
        llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=0.60/1.80; }
        llm_model mixtral-8x22b { backend http://127.0.0.1:$up/v1 model=big price=2.00/6.00; }
        llm_model broken { backend http://127.0.0.1:$up/s500/v1; }
        llm_model \"<i>&'\\\"x\" { backend http://127.0.0.1:$up/v1; }
        llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b;
        llm_status_history step=1s length=10s;",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; llm_cache on; }
               location = /metrics { llm_metrics; }
               location = /status { llm_status; }',
);
$t->add_tenant($rp, 'a', 'sk-a', rpm => 1000, tpm => 1000000,
               budget_day_usd => '10', budget_month_usd => '100');
$t->add_tenant($rp, 'b', 'sk-b');

my %t20 = (max_tokens => 20);
my @reqs = (
    (map { chat_request($gw, %t20, key => 'sk-a', content => "plain $_") } 1 .. 20),
    (map { chat_request($gw, %t20, key => 'sk-b', model => 'mixtral-8x22b',
                        content => "big $_") } 1 .. 10),
    (map { chat_request($gw, %t20, key => 'sk-a', content => "stream $_",
                        stream => JSON::PP::true) } 1 .. 6),
    (map { chat_request($gw, %t20, key => 'sk-b', model => 'broken',
                        content => "fail $_") } 1 .. 2),
    (map { chat_request($gw, %t20, key => 'sk-b', model => 'auto',
                        content => "What is the capital of country $_?") } 1 .. 4),
);
my @res = parallel_requests(\@reqs, timeout => 30);
my %st;
$st{ $_->[0] }++ for @res;
is($st{200}, 40, '40 answered');
is($st{502}, 2, '2 bad gateway');

# a cacheable answer: one miss, then three hits
my @cached = (%t20, key => 'sk-b', content => 'cached', temperature => 0);
chat($gw, @cached);
ok(wait_until(sub {
    my $k = $t->redis_cli($rp, 'KEYS', key_prefix(KEY_CACHE) . '*');
    defined $k && $k =~ /\Q@{[key_prefix(KEY_CACHE)]}/ }, 5), 'the miss is stored');
chat($gw, @cached) for 1 .. 3;

# the last request of tenant a, alone: its admission saw all of a's
my ($code) = chat($gw, %t20, key => 'sk-a', content => 'the last one');
is($code, 200, "a's last request");

my %pids = map { /pid=(\d+)/ ? ($1 => 1) : () } split /\n/, $t->access_log($gw);
cmp_ok(scalar keys %pids, '==', 2, 'both workers served requests');

sub status_json {
    my ($path, %h) = @_;
    my ($c, $hd, $b) = http_request($gw, 'GET', $path // '/status?format=json',
                                    \%h);
    is($c, 200, "GET $path: 200") if $path;
    return ($hd, decode_json($b));
}

# counters move in the log phase, after the answer went out
my $s;
ok(wait_until(sub {
    (undef, $s) = status_json();
    my ($m) = grep { $_->{name} eq 'mixtral-8x7b' } @{ $s->{models} };
    $s->{node}{requests} == 47 && $m->{requests} == 20 + 6 + 4 + 1 + 4 }, 10),
   'every request counted')
    or diag(encode_json($s->{node}));

my %be = map { ("$_->{model}" => $_) } @{ $s->{backends} };
my %mo = map { ($_->{name} => $_) } @{ $s->{models} };

# the router sends the four easy questions to the cheap model
is($be{'mixtral-8x7b'}{attempts}, 32, 'cheap backend: 20 + 6 + 1 miss + 1 + 4 auto');
is($be{'mixtral-8x7b'}{outcomes}{ok}, 32, '... all ok');
is($be{'mixtral-8x22b'}{attempts}, 10, 'strong backend: 10');
is($be{broken}{attempts}, 2, 'broken backend: 2 attempts');
is($be{broken}{outcomes}{status}, 2, '... both a bad status');
is($be{broken}{availability_short}, 0, '... none available');
is($be{'mixtral-8x7b'}{availability_short}, 1, 'cheap: all available');
is($be{'mixtral-8x7b'}{state}, 'closed', 'cheap: circuit closed');
is($be{'mixtral-8x7b'}{in_flight}, 0, 'nothing in flight');
is($be{'mixtral-8x7b'}{price_in_usd}, 0.6, 'price in');
is($be{'mixtral-8x22b'}{price_out_usd}, 6, 'price out');
ok(defined $be{'mixtral-8x7b'}{ttfb_ms}{p50}, 'a TTFB median');
cmp_ok($be{'mixtral-8x7b'}{ttfb_ms}{p50}, '<=', $be{'mixtral-8x7b'}{ttfb_ms}{p99},
       'p50 <= p99');
cmp_ok($be{'mixtral-8x7b'}{latency_ms}{p99}, '>=', $be{'mixtral-8x7b'}{ttfb_ms}{p99},
       'total latency >= TTFB');
is(scalar @{ $be{'mixtral-8x7b'}{history}{requests} }, 10, 'ten history slots');

is($mo{'mixtral-8x7b'}{routes}{explicit}, 31, '31 asked for the cheap model');
is($mo{'mixtral-8x22b'}{routes}{explicit}, 10, '10 asked for the strong one');
my $auto = 0;
for my $m (values %mo) {
    $auto += $m->{routes}{$_} for grep { $_ ne 'explicit' } keys %{ $m->{routes} };
}
is($auto, 4, 'four routed by the router');
is($mo{broken}{errors}, 2, 'two errors on the broken model');

my %tn = map { ($_->{id} => $_) } @{ $s->{tenants}{list} };
is($s->{tenants}{limit}, 128, 'at most 128 tenants');
is($s->{tenants}{tracked}, 2, 'two tenants');
is($tn{a}{rpm}, 27, "tenant a: its last admission saw its 27 requests");
is($tn{a}{rpm_limit}, 1000, 'rpm limit');
is($tn{a}{tpm_limit}, 1000000, 'tpm limit');
cmp_ok($tn{a}{tpm}, '>', 0, 'tokens this minute');
is($tn{a}{day_budget_usd}, 10, 'daily budget');
is($tn{a}{month_budget_usd}, 100, 'monthly budget');
cmp_ok($tn{a}{day_spend_usd}, '>', 0, "a's spend today");
is($tn{b}{day_budget_usd}, undef, 'b: no budget');
is($tn{b}{rpm}, undef, 'b: no rpm limit, no rpm');
cmp_ok($tn{b}{day_spend_usd}, '>', 0, "b's spend, without a budget");
is($s->{tenants}{list}[0]{id}, ($tn{a}{day_spend_usd} >= $tn{b}{day_spend_usd}
                                ? 'a' : 'b'), 'most spent first');

is($s->{cache}{hit}, 3, 'three cache hits');
cmp_ok($s->{cache}{miss}, '>=', 1, 'a miss');
is($s->{cache}{hit_ratio}, 3 / ($s->{cache}{hit} + $s->{cache}{miss}), 'hit ratio');
is($s->{node}{workers}, 2, 'two workers');
is($s->{node}{redis}[0]{state}, 'up', 'redis: up');
is($s->{node}{redis}[0]{workers_seen}, 2, '... seen by both workers');

# the same numbers as llm_metrics counts
my (undef, undef, $mt) = http_request($gw, 'GET', '/metrics');
my $m = parse_prometheus($mt);
my $att = 0;
$att += $_->{attempts} for @{ $s->{backends} };
is(sum_of($m, 'llm_backend_attempts_total'), $att, 'attempts: as the metrics count');
is(sum_of($m, 'llm_requests_total', model => 'mixtral-8x7b'), $mo{'mixtral-8x7b'}{requests},
   'cheap model requests: as the metrics count');
is(sum_of($m, 'llm_cache_requests_total', result => 'hit'), $s->{cache}{hit},
   'hits: as the metrics count');
my $tok = 0;
$tok += $_->{prompt_tokens} + $_->{completion_tokens} for @{ $s->{models} };
is(sum_of($m, 'llm_tokens_total'), $tok, 'tokens: as the metrics count');

# --------------------------------------------------------------- HTML

my ($c, $h, $html) = http_request($gw, 'GET', '/status');
is($c, 200, 'the page');
like($h->{'content-type'}, qr{^text/html}, 'is HTML');
like($h->{'content-security-policy'}, qr/default-src 'none'/, 'loads nothing from elsewhere');
is($h->{'cache-control'}, 'no-store', 'is not cached');
unlike($html, qr/<(?:link|script|img)[^>]+(?:src|href)="(?!data:|\?)/, 'no external assets');
like($html, qr{&lt;i&gt;&amp;&#39;&quot;x}, "a model's name is escaped in HTML");
unlike($html, qr{<i>&'"x}, '... never raw');
my ($j) = grep { $_->{name} =~ /^<i>/ } @{ $s->{models} };
is($j->{name}, "<i>&'\"x", '... and exact in JSON');
like($html, qr{data-json="cache\.hit">3<}, 'the numbers are in the HTML');
like($html, qr{<noscript><meta http-equiv="refresh"}, 'refreshes without JavaScript');
like($html, qr{data-json="tenants\.list\.\d\.rpm">27<}, "a's rpm in the page");
my @cells = $html =~ /data-json="([^"]+)"/g;
cmp_ok(scalar @cells, '>', 60, scalar(@cells) . ' numbers on the page');

(undef, my $viaaccept) = status_json('/status', Accept => 'application/json');
is($viaaccept->{version}, 1, 'Accept: application/json gives JSON');
($c) = http_request($gw, 'POST', '/status', {}, '');
is($c, 405, 'POST: 405');

# --------------------------------------------- the ring, and a reload

# 10 one-second slots: a burst leaves them after 10 s, counters stay
sleep 11;
(undef, $s) = status_json();
%be = map { ("$_->{model}" => $_) } @{ $s->{backends} };
is_deeply($be{'mixtral-8x7b'}{history}{requests}, [ (0) x 10 ], 'the burst left the ring');
is($be{'mixtral-8x7b'}{availability_short}, undef, '... and the availability window');
is($be{'mixtral-8x7b'}{attempts}, 32, '... the counters stay');

chat($gw, %t20, key => 'sk-a', content => "again $_") for 1 .. 3;
ok(wait_until(sub {
    (undef, $s) = status_json();
    %be = map { ("$_->{model}" => $_) } @{ $s->{backends} };
    my $n = 0;
    $n += $_ for @{ $be{'mixtral-8x7b'}{history}{requests} };
    $n == 3 }, 5), 'three new attempts in the ring, after it wrapped around');
my $before = $be{'mixtral-8x7b'};

my @old = $t->worker_pids($gw);
kill 'HUP', `cat @{[ $t->nginx_prefix($gw) ]}/nginx.pid` + 0;
ok(wait_until(sub {
    my @new = $t->worker_pids($gw);
    @new == 2 && !grep { my $o = $_; grep { $_ == $o } @new } @old }, 10),
   'reloaded: new workers');
(undef, $s) = status_json();
%be = map { ("$_->{model}" => $_) } @{ $s->{backends} };
is($be{'mixtral-8x7b'}{attempts}, $before->{attempts}, 'a reload keeps the counters');
my ($n1, $n2) = (0, 0);
$n1 += $_ for @{ $before->{history}{requests} };
$n2 += $_ for @{ $be{'mixtral-8x7b'}{history}{requests} };
is($n2, $n1, '... and the history');
cmp_ok($s->{node}{uptime_s}, '>=', 11, '... and the uptime');

$t->cleanup;
done_testing();
