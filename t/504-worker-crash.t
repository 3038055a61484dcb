# A worker killed mid-request leaves no trace in the backends' shared
# health: its outstanding requests no longer weigh on the balance, and a
# half-open probe it was running does not block the next probe.  Health
# also survives a reload.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(sleep time);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $late = free_port();     # a backend that is down, then comes up
my $gw = $t->start_nginx(
    http => "llm_breaker failures=1 cooldown=6s;
        llm_model pair { backend http://127.0.0.1:$up/a/v1;
                         backend http://127.0.0.1:$up/b/v1; }
        llm_model probe { backend http://127.0.0.1:$late/v1;
                          backend http://127.0.0.1:$up/spare/v1; }",
    server => 'location /v1/ { llm_gateway; }',
);

sub body {
    my ($model, $content) = @_;
    return encode_json({ model => $model,
        messages => [{ role => 'user', content => $content // 'hi' }] });
}

sub hits { $t->mock_stats($_[0])->{paths}{"$_[1]/chat/completions"} // 0 }

# a request left hanging in the worker, which is then killed
sub crash_during {
    my ($model, $port, $path) = @_;
    my $before = hits($port, $path);
    my $b = body($model, 'MOCK:{"latency_ms":60000}');
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw)
        or die "connect: $!";
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        . "Content-Type: application/json\r\nContent-Length: "
        . length($b) . "\r\n\r\n$b";
    ok(wait_until(sub { hits($port, $path) > $before }, 5),
       "$model: the request reached $path");
    my ($old) = $t->worker_pids($gw);
    kill 'KILL', $old;
    ok(wait_until(sub { my @w = $t->worker_pids($gw);
                        @w == 1 && $w[0] != $old }, 10),
       "$model: the worker was killed and replaced");
    close $s;
    return $old;
}

# --- outstanding counts: both backends equal, the first one wins ties
my ($st) = chat($gw, model => 'pair');
is($st, 200, 'pair: served');
is(hits($up, '/a/v1'), 1, 'pair: equal load, the first backend');

my $gone = crash_during('pair', $up, '/a/v1');
($st) = chat($gw, model => 'pair');
is($st, 200, 'pair: served after the crash');
is(hits($up, '/a/v1'), 3, 'pair: the dead worker\'s request no longer counts on /a');
is(hits($up, '/b/v1'), 0, 'pair: nothing sent to /b');
like($t->error_log($gw), qr/cleared the backend counts of gone process $gone/,
     'pair: the new worker said so');

# --- a probe that dies with its worker
($st) = chat($gw, model => 'probe');
is($st, 200, 'probe: the spare answers while the first is down');
like($t->error_log($gw), qr/circuit open/, 'probe: the circuit opened');
$t->start_mock(port => $late);
sleep 6.2;
crash_during('probe', $late, '/v1');
($st) = chat($gw, model => 'probe');
is($st, 200, 'probe: served after the crash');
is(hits($late, '/v1'), 2, 'probe: the next request probed the backend again');
like($t->error_log($gw), qr/circuit closed/, 'probe: and closed its circuit');

# --- a reload keeps the circuits: open before, open after
my $spare = hits($up, '/spare/v1');
$t->stop_mock($late);
($st) = chat($gw, model => 'probe');
is(hits($up, '/spare/v1'), $spare + 1, 'reload: the first backend is down again');
my ($old) = $t->worker_pids($gw);
kill 'HUP', $t->{nginx}{$gw}{pid};
ok(wait_until(sub { my @w = $t->worker_pids($gw); @w == 1 && $w[0] != $old }, 10),
   'reload: new worker');
$t->start_mock(port => $late);
($st) = chat($gw, model => 'probe');
is(hits($up, '/spare/v1'), $spare + 2, 'reload: still open, the spare answers');
is(hits($late, '/v1'), 0, 'reload: the open backend was not asked');

# the killed workers are this test's doing, not a crash to report
my $log = $t->nginx_prefix($gw) . '/logs/error.log';
my $text = $t->error_log($gw);
$text =~ s/^.*exited on signal 9.*\n//mg;
open my $fh, '>', $log or die;
print $fh $text;
close $fh;

$t->cleanup;
done_testing;
