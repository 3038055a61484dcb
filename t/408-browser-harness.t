# The status page's browser harness, t/browser/status.js, on a page of
# our own: a headless Chromium finds every number of t/browser/fixture.html
# equal to t/browser/fixture.json, waits for the page's own refresh when
# asked to, and reports a wrong number, a missing path, a console error, a
# page error, a failed request and a request to another host on a broken
# copy of it.  Neither nginx nor the module is needed: a tiny Node server
# (t/browser/serve.js) serves the pages on a free loopback port.
#
# Run it alone with
#
#   cd REPO && LLM_ROOT=$PWD NODE_PATH=$PWD/node_modules prove -v t/408-browser-harness.t
#
# (./config.sh test runs it with the others; ./config.sh deps installs
# chromium, fonts-liberation and playwright-core).  CHROMIUM=path: another
# Chromium than Debian's /usr/bin/chromium.  Without that browser the test
# is skipped, unless CI is set: then it fails.  LLM_KEEP=1 keeps its
# directory, with the screenshots, the pages and the server's log.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $chromium = $ENV{CHROMIUM} // '/usr/bin/chromium';
unless (-x $chromium) {
    plan skip_all => "no $chromium (./config.sh deps installs it)" unless $ENV{CI};
    fail("no $chromium under CI (./config.sh deps installs it)");
    done_testing();
    exit;
}

my $root = $LLMTest::ROOT;
my $harness = "$root/t/browser/status.js";
my $t = LLMTest->new;
my $dir = $t->dir;
my $port = free_port();
mkdir "$dir/www" or die "$dir/www: $!";

sub slurp {
    my ($f) = @_;
    open my $fh, '<:raw', $f or die "$f: $!";
    local $/;
    return scalar <$fh>;
}

sub spew {
    my ($f, $s) = @_;
    open my $fh, '>:raw', $f or die "$f: $!";
    print $fh $s;
    close $fh or die "$f: $!";
}

# a page NAME: the fixture, edited by $edit (on $_), and its JSON
sub page {
    my ($name, $edit) = @_;
    local $_ = slurp("$root/t/browser/fixture.html");
    if ($edit) {
        my $before = $_;
        $edit->();
        die "page $name: the edit changed nothing" if $_ eq $before;
    }
    spew("$dir/www/$name.html", $_);
    spew("$dir/www/$name.json", slurp("$root/t/browser/fixture.json"));
    return $_;
}

# runs the harness: (exit code, its report or undef, its stderr)
sub harness {
    my ($name, $png, @opt) = @_;
    my $err = "$dir/$png.stderr";
    my $pid = open(my $out, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $err or die "$err: $!";
        exec 'node', $harness, "http://127.0.0.1:$port/$name", "$dir/$png", @opt
            or do { print STDERR "exec node: $!\n"; POSIX::_exit(127) };
    }
    local $/;
    my $text = <$out>;
    close $out;
    my $rc = $? >> 8;
    my $report = eval { decode_json($text) };
    diag("status.js: no JSON report:\n" . ($text // '') . slurp($err)) unless $report;
    return ($rc, $report, slurp($err));
}

sub is_png {
    my ($f, $width, $what) = @_;
    my $png = -f $f ? slurp($f) : '';
    ok(substr($png, 0, 8) eq "\x89PNG\r\n\x1a\n", "$what: the screenshot is a PNG")
        or return;
    # IHDR: the width, big-endian, right after the signature and its header
    is(unpack('N', substr($png, 16, 4)), $width, "$what: the screenshot is $width px wide");
}

my $good = page('good');
my $numbers = () = $good =~ /\sdata-json="\w/g;
my $sparks = () = $good =~ /<svg class="spark"/g;
ok($numbers >= 20 && $sparks == 3, "the fixture has $numbers numbers and $sparks sparklines");

# the stale page: one number as served is wrong, the refresh rewrites it
page('stale', sub { s{(data-json="requests.total">)12840<}{${1}99999<} });

# the broken page: no refresh, so the wrong number stays; a path that the
# JSON lacks; an error on the console and one thrown; an image of ours that
# is not there and one from another host
page('broken', sub {
    s{data-refresh-ms="1000"}{data-refresh-ms="0"};
    s{(data-json="backends.0.in_flight">)3<}{${1}4<};
    s{(<h2>Backends</h2>)}{<p>queued: <span data-json="backends.0.queued">0</span></p>\n$1};
    s{(<h1>)}{<img src="http://example.invalid/x.png" alt=""><img src="/missing" alt="">\n$1};
    s{(</body>)}{<script>console.error('fixture: a deliberate console error');</script>
<script>throw new Error('fixture: a deliberate throw');</script>\n$1};
});

LLMTest::_spawn('browser-fixture', {}, 'sh', '-c',
    "exec node $root/t/browser/serve.js --port $port --dir $dir/www"
    . " 2>$dir/serve.log");
wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") }, 10)
    or BAIL_OUT('the fixture server did not start');

# the good page as served, then after its refresh
for my $wait (0, 1) {
    my $what = $wait ? 'good page, after a refresh' : 'good page';
    my $png = $wait ? 'good-refreshed.png' : 'good.png';
    my ($rc, $r, $err) = harness('good', $png, $wait ? ('--wait-refresh') : ());
    is($rc, 0, "$what: the harness exits 0") or diag($err);
    $r or next;
    is($r->{checked}, $numbers, "$what: every number checked");
    is_deeply($r->{mismatches}, [], "$what: no mismatches")
        or diag(explain($r->{mismatches}));
    is_deeply($r->{console_errors}, [], "$what: no console errors")
        or diag(explain($r->{console_errors}));
    is_deeply($r->{page_errors}, [], "$what: no page errors");
    is_deeply($r->{external_requests}, [], "$what: no requests to another host");
    is_deeply($r->{failed_requests}, [], "$what: no failed requests")
        or diag(explain($r->{failed_requests}));
    is($r->{sparklines}, $sparks, "$what: the sparklines found");
    is_deeply($r->{sparkline_errors}, [], "$what: each sparkline's series in the JSON");
    is($r->{title}, 'nginx-llm-gateway status', "$what: the title");
    is($r->{screenshot}, "$dir/$png", "$what: the screenshot's path");
    is_png("$dir/$png", 1280, $what);
    ok($r->{refreshed}, "$what: the page's refresh seen") if $wait;
}

# a page whose numbers as served are stale: right once it has refreshed
{
    my ($rc, $r, $err) = harness('stale', 'stale.png', '--wait-refresh');
    is($rc, 0, 'stale page: the harness exits 0') or diag($err);
    ok($r && $r->{refreshed}, 'stale page: the refresh waited for');
    is_deeply($r && $r->{mismatches}, [], 'stale page: no mismatches once refreshed')
        or diag(explain($r->{mismatches}));
}

# the broken page: each fault reported
{
    my ($rc, $r, $err) = harness('broken', 'broken.png');
    is($rc, 0, 'broken page: the harness still exits 0') or diag($err);
    $r ||= {};
    is($r->{checked}, $numbers + 1, 'broken page: every number checked');
    my %bad = map { $_->{path} => $_ } @{ $r->{mismatches} || [] };
    is(scalar(keys %bad), 2, 'broken page: two mismatches')
        or diag(explain($r->{mismatches}));
    is_deeply([@{ $bad{'backends.0.in_flight'} || {} }{qw(text value)}], [4, 3],
        'broken page: the wrong number, its text and value');
    ok($bad{'backends.0.queued'} && !defined $bad{'backends.0.queued'}{value},
        'broken page: the path missing from the JSON');
    ok((grep { /fixture: a deliberate console error/ } @{ $r->{console_errors} || [] }),
        'broken page: the console error') or diag(explain($r->{console_errors}));
    ok((grep { /fixture: a deliberate throw/ } @{ $r->{page_errors} || [] }),
        'broken page: the page error') or diag(explain($r->{page_errors}));
    is_deeply($r->{external_requests}, ['http://example.invalid/x.png'],
        'broken page: the request to another host');
    ok((grep { m{/missing: HTTP 404} } @{ $r->{failed_requests} || [] }),
        'broken page: the failed request') or diag(explain($r->{failed_requests}));
    is_png("$dir/broken.png", 1280, 'broken page');
}

# a page that does not load: the harness fails
{
    my ($rc, $r) = harness('absent', 'absent.png');
    is($rc, 4, 'a page that is not there: the harness exits 4');
    like($r && $r->{error}, qr/HTTP 404/, 'a page that is not there: said so');
    ok(!-e "$dir/absent.png", 'a page that is not there: no screenshot');
}

# the page itself was fetched, and its JSON by the page and by the harness
my $log = slurp("$dir/serve.log");
ok($log =~ m{^GET /stale\?format=json$}m, 'the page fetched its JSON');

done_testing();
