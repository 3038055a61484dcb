# The status page in a real browser: Debian's Chromium, headless, driven
# by t/browser/status.js, loads /status from a gateway that served known
# traffic (two workers, a failing backend, a 429 cool-down, a cache hit,
# routed requests), lets the page refresh itself once, and finds every
# number of its DOM equal to the JSON, no console or page error, no
# request to another host, and sparklines drawn; it takes a screenshot.
#
#   cd REPO && LLM_ROOT=$PWD NODE_PATH=$PWD/node_modules prove -v t/409-status-browser.t
#
# LLM_SCREENSHOT=path: also copy the screenshot there (docs/status.png is
# made so).  Without Chromium the test is skipped, unless CI is set.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use File::Copy qw(copy);
use LLMTest;

my $chromium = $ENV{CHROMIUM} // '/usr/bin/chromium';
unless (-x $chromium) {
    plan skip_all => "no $chromium (./config.sh deps installs it)" unless $ENV{CI};
    fail("no $chromium under CI (./config.sh deps installs it)");
    done_testing();
    exit;
}

my $root = $LLMTest::ROOT;
my $t = LLMTest->new;
my $dir = $t->dir;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    workers => 2,
    http => "llm_redis 127.0.0.1:$rp;
        llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=0.60/1.80; }
        llm_model mixtral-8x22b {
            backend http://127.0.0.1:$up/s429/v1 model=big price=2.00/6.00;
            backend http://127.0.0.1:$up/v1 model=big price=2.00/6.00;
        }
        llm_model flaky { backend http://127.0.0.1:$up/s500/v1 price=0.10/0.10; }
        llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b;
        llm_status_history step=2s length=2m;",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; llm_cache on; }
               location = /status { llm_status; }',
);
$t->add_tenant($rp, 'acme', 'sk-a', rpm => 600, tpm => 200000,
               budget_day_usd => '5', budget_month_usd => '50');
$t->add_tenant($rp, 'globex', 'sk-b', budget_day_usd => '1');
$t->add_tenant($rp, 'initech', 'sk-c');

my %t30 = (max_tokens => 30);
my @reqs = (
    (map { chat_request($gw, %t30, key => 'sk-a', content => "hello $_") } 1 .. 24),
    (map { chat_request($gw, %t30, key => 'sk-b', model => 'mixtral-8x22b',
                        content => "strong $_") } 1 .. 8),
    (map { chat_request($gw, %t30, key => 'sk-c', content => "stream $_",
                        stream => JSON::PP::true) } 1 .. 8),
    (map { chat_request($gw, %t30, key => 'sk-c', model => 'flaky',
                        content => "flaky $_") } 1 .. 3),
    (map { chat_request($gw, %t30, key => 'sk-a', model => 'auto',
                        content => "Prove that there are infinitely many primes $_.") } 1 .. 3),
);
parallel_requests(\@reqs, timeout => 30);
chat($gw, %t30, key => 'sk-b', content => 'same', temperature => 0) for 1 .. 3;

# the log phase runs after the answers went out
my $n = 24 + 8 + 8 + 3 + 3 + 3;
ok(wait_until(sub {
    my (undef, undef, $b) = http_request($gw, 'GET', '/status?format=json');
    my $s = eval { decode_json($b) } or return 0;
    $s->{node}{requests} == $n }, 10), "the $n requests are counted");

my $png = "$dir/status.png";
my $pid = open(my $out, '-|') // die "fork: $!";
if ($pid == 0) {
    open STDERR, '>', "$dir/status.js.stderr" or die;
    exec 'node', "$root/t/browser/status.js",
         "http://127.0.0.1:$gw/status?refresh=1", $png, '--wait-refresh'
        or POSIX::_exit(127);
}
my $text = do { local $/; <$out> };
close $out;
is($? >> 8, 0, 'the harness ran') or diag(`cat $dir/status.js.stderr`);
my $r = eval { decode_json($text) } // {};

ok($r->{refreshed}, 'the page refreshed itself');
cmp_ok($r->{checked} // 0, '>', 100, "$r->{checked} numbers checked");
is_deeply($r->{mismatches}, [], 'every number in the DOM is the JSON\'s')
    or diag(encode_json($r->{mismatches}));
is_deeply($r->{console_errors}, [], 'no console errors');
is_deeply($r->{page_errors}, [], 'no page errors');
is_deeply($r->{external_requests}, [], 'nothing from another host');
is_deeply($r->{failed_requests}, [], 'no failed requests');
is_deeply($r->{sparkline_errors} // [], [], 'every sparkline has its series');
cmp_ok($r->{sparklines} // 0, '>=', 12, "$r->{sparklines} sparklines");
is($r->{title}, 'nginx-llm-gateway status', 'the title');

my $head = -f $png ? do { open my $f, '<:raw', $png; local $/; <$f> } : '';
is(substr($head, 0, 8), "\x89PNG\r\n\x1a\n", 'a screenshot');
copy($png, $ENV{LLM_SCREENSHOT}) if $ENV{LLM_SCREENSHOT};

$t->cleanup;
done_testing();
