# backend sunset=YYYY-MM-DD: nginx -t warns a month before a provider
# retires a model id, and after that day the backend is skipped, so that
# requests do not pay a round trip to an id that only answers 404.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use LLMTest;

my $t = LLMTest->new;

sub day { strftime('%Y-%m-%d', gmtime(time + $_[0] * 86400)) }

# --- nginx -t: the date is checked, and a near or past one is named
for my $bad ('2026-02-30', '2026-13-01', '26-01-01', '2026-1-01x', 'soon',
             '1969-12-31', '2027-02-29')
{
    my ($failed, $out) = $t->start_nginx(expect_fail => 1,
        http => "llm_model m { backend http://127.0.0.1:1/v1 sunset=$bad; }",
        server => 'location / { llm_gateway; }');
    ok($failed, "sunset=$bad refused");
    like($out, qr/invalid "backend" parameter "sunset=\Q$bad\E": sunset=YYYY-MM-DD expected/,
         "sunset=$bad: the message names the parameter");
}

my %warn = (
    day(10)  => qr/"backend" model "m-id" retires in 1[01] days \(sunset=\)/,
    day(-1)  => qr/"backend" model "m-id" is past its sunset: it is skipped/,
    day(400) => undef,
    '2028-02-29' => undef,
);
for my $d (sort keys %warn) {
    my ($failed, $out) = $t->start_nginx(expect_fail => 1,
        http => "llm_model m { backend http://127.0.0.1:1/v1 model=m-id sunset=$d; }",
        server => 'location / { llm_gateway; }');
    ok(!$failed, "sunset=$d accepted") or diag($out);
    if ($warn{$d}) {
        like($out, $warn{$d}, "sunset=$d: nginx -t warns");
    } else {
        unlike($out, qr/sunset|retire/, "sunset=$d: far off, no warning");
    }
}

# --- a backend past its sunset is not asked; one before it is
my $up = $t->start_mock;
my $gw = $t->start_nginx(
    http => "llm_model gone { backend http://127.0.0.1:$up/old/v1 sunset=" . day(-2) . ";
                              backend http://127.0.0.1:$up/new/v1 price=9/9; }
             llm_model soon { backend http://127.0.0.1:$up/soon/v1 sunset=" . day(3) . ";
                              backend http://127.0.0.1:$up/later/v1 price=9/9; }
             llm_model none { backend http://127.0.0.1:$up/none/v1 sunset=" . day(-2) . "; }",
    server => 'location /v1/ { llm_gateway; }',
);

$t->mock_reset($up);
for my $i (1 .. 3) {
    my ($st) = chat($gw, model => 'gone', max_tokens => 8);
    is($st, 200, "past its sunset: another backend answers ($i)");
}
my $paths = $t->mock_stats($up)->{paths};
ok(!$paths->{'/old/v1/chat/completions'}, 'the retired backend was not asked');
is($paths->{'/new/v1/chat/completions'}, 3, 'the next one took every request');

chat($gw, model => 'soon', max_tokens => 8);
is($t->mock_stats($up)->{paths}{'/soon/v1/chat/completions'}, 1,
   'before its sunset a backend serves as before');

my ($st, undef, $body) = chat($gw, model => 'none', max_tokens => 8);
ok($st >= 500 && $st < 600, "only a retired backend: a 5xx ($st)");
like($body, qr/"error":\{"message"/, 'in the OpenAI shape');
ok(!$t->mock_stats($up)->{paths}{'/none/v1/chat/completions'},
   'and nothing was sent to it');

# --- a model gone upstream parks the backend for hours; a reload that
# gives it another id brings it back at once
my $gw2 = $t->start_nginx(
    http => "llm_model r { backend http://127.0.0.1:$up/s404/v1 model=old-id;
                           backend http://127.0.0.1:$up/spare/v1 price=9/9; }",
    server => 'location /v1/ { llm_gateway; }',
);
my $gone = 'MOCK:{"error_message":"The model `old-id` does not exist"}';
$t->mock_reset($up);
($st) = chat($gw2, model => 'r', max_tokens => 8, content => $gone);
is($st, 200, 'a model gone upstream: failed over');
chat($gw2, model => 'r', max_tokens => 8, content => $gone);
$paths = $t->mock_stats($up)->{paths};
is($paths->{'/s404/v1/chat/completions'}, 1, '... and parked: asked once');
is($paths->{'/spare/v1/chat/completions'}, 2, '... the spare took both');
like($t->error_log($gw2), qr/\[error\].*retired model "old-id" \(HTTP 404\)/,
     'the retirement is logged');

my $conf = $t->nginx_prefix($gw2) . '/nginx.conf';
my $text = do { open my $fh, '<', $conf or die; local $/; <$fh> };
$text =~ s/model=old-id/model=new-id/ or die 'no model=old-id';
{ open my $fh, '>', $conf or die; print $fh $text; }
my @old = $t->worker_pids($gw2);
kill 'HUP', $t->{nginx}{$gw2}{pid};
ok(wait_until(sub {
    my @new = $t->worker_pids($gw2);
    @new && !grep { my $o = $_; grep { $_ == $o } @new } @old }, 10),
   'reloaded with model=new-id');
$t->mock_reset($up);
chat($gw2, model => 'r', max_tokens => 8, content => 'MOCK:{}');
is($t->mock_stats($up)->{paths}{'/s404/v1/chat/completions'}, 1,
   'the backend with its new id is asked again, not parked');

$t->cleanup;
done_testing;
