# Client aborts, large responses, slow readers, keepalive and concurrency.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;
use Digest::MD5 qw(md5_hex);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $gw = $t->start_nginx(
    http => "llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; llm_stream_buffer 64k; }',
);
sub open_stream {
    my ($content) = @_;
    my $body = LLMTest::chat_body(stream => JSON::PP::true, content => $content);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw) or die;
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
    return $s;
}

# --- client abort cancels the upstream
$t->mock_reset($up);
my $s = open_stream('MOCK:{"tokens":100,"pace_ms":50}');
sysread($s, my $buf, 4096);
like($buf, qr/200 OK/, 'stream started');
close $s;
ok(wait_until(sub { $t->mock_stats($up)->{aborted} >= 1 }, 2),
    'client abort closes the upstream transfer within 2 s');

# abort while waiting for the first byte
$t->mock_reset($up);
$s = open_stream('MOCK:{"latency_ms":1500}');
sleep 0.3;
close $s;
ok(wait_until(sub { $t->mock_stats($up)->{aborted} >= 1 }, 1.5),
    'abort before the first byte cancels too');

# --- large responses arrive intact
my $size = 1536 * 1024;
my $expect = substr('abcdefghijklmnopqrstuvwxyz0123456789' x (int($size / 36) + 1), 0, $size);
my ($st, $h, $b) = chat($gw, content => qq(MOCK:{"size":$size}));
is($st, 200, '1.5 MiB non-stream: 200');
my $j = json_of($b);
is(md5_hex($j->{choices}[0]{message}{content} // ''), md5_hex($expect), '1.5 MiB non-stream intact');

($st, $h, $b) = chat($gw, stream => JSON::PP::true,
    content => qq(MOCK:{"size":$size,"chunk":300000}));
my @ev = sse_events($b);
my $text = join '', map { my $c = json_of($_); $c ? ($c->{choices}[0]{delta}{content} // '') : '' } @ev;
is(length $text, $size, '1.5 MiB stream: length');
is(md5_hex($text), md5_hex($expect), '1.5 MiB stream intact (events up to 300 KB)');
is($ev[-1], '[DONE]', 'large stream complete');

# --- slow reader: memory stays bounded and the upstream is held back
my ($worker) = $t->worker_pids($gw);
my $rss0 = LLMTest::rss_kb($worker);
$t->mock_reset($up);
$s = open_stream('MOCK:{"size":67108864,"chunk":4096}');   # 64 MiB
my $got = 0;
for (1 .. 20) {                                            # ~2 s, 64 KB/s
    $got += sysread($s, $buf, 6553) // 0;
    sleep 0.1;
}
my $rss1 = LLMTest::rss_kb($worker);
my $sent = $t->mock_stats($up)->{bytes_sent};
cmp_ok($rss1 - $rss0, '<', 20 * 1024, "worker RSS grew by less than 20 MB ($rss0 -> $rss1 KB)");
cmp_ok($sent, '<', 16 * 1024 * 1024, "upstream held back: sent $sent bytes of 64 MiB while the client read $got");
close $s;
ok(wait_until(sub { $t->mock_stats($up)->{aborted} >= 1 }, 2), 'slow reader gone: upstream closed');

# --- keepalive: sequential requests reuse one upstream connection
$t->mock_reset($up);
for (1 .. 5) {
    chat($gw, content => 'hello');
}
is($t->mock_stats($up)->{api_connections}, 1, '5 sequential requests, 1 upstream connection');

# --- 200 concurrent streams of ~2 s each on one worker
$t->mock_reset($up);
my $n = 200;
my @socks;
my $t0 = time;
for (1 .. $n) {
    push @socks, open_stream('MOCK:{"tokens":20,"pace_ms":100}');
}
my $sel = IO::Select->new(@socks);
my %data;
my %done;
while ($sel->count && time - $t0 < 10) {
    for my $fh ($sel->can_read(1)) {
        my $r = sysread($fh, my $chunk, 65536);
        if (!$r) { $sel->remove($fh); next }
        $data{$fh} .= $chunk;
        if ($data{$fh} =~ /data: \[DONE\]/) { $done{$fh} = 1; $sel->remove($fh) }
    }
}
my $elapsed = time - $t0;
is(scalar(keys %done), $n, "$n concurrent streams completed");
cmp_ok($elapsed, '<', 4, sprintf('all finished in %.2f s (each takes ~2 s upstream)', $elapsed));
close $_ for @socks;

$t->cleanup;
done_testing;
