# The response cache against a client that tries to freeze or bloat a
# worker: canonical keys of huge objects (H5), tool calls of many deltas
# (M4), large entries replayed to slow readers (M3), and a stored {}
# (L11).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_RCVBUF IPPROTO_TCP
              inet_aton pack_sockaddr_in);
use Time::HiRes qw(sleep);
use LLMTest;

# members of the large object of H5: the attack's 100000, which request
# parsing now refuses at once, and the most it accepts in one object
my $H5_ATTACK = 100_000;
my $H5_KEYS = 1024;

# bytes of tool-call arguments for M4, and per delta
my $M4_ARGS = 3_000_000;
my $M4_DELTA = 60;

# bytes of the entry of M3, and its slow readers
my $M3_SIZE = 2_000_000;
my $M3_READERS = 8;

# how long a test waits for an answer that should come at once
my $PROMPT = 15;

# under AddressSanitizer freed memory stays resident for a while
my $SAN = ($ENV{LLM_PRELOAD} // '') =~ /asan/;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;

my $tp = free_port();
LLMTest::_spawn('cache-mock', {}, 'sh', '-c',
    "exec node $LLMTest::ROOT/t/mock/cache.js --port $tp >"
    . $t->dir . "/cache-mock.log 2>&1");
wait_until(sub { eval { (http_request($tp, 'GET', '/_stats'))[0] == 200 } },
           10) or die "the tool-call mock did not start";

my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }
             llm_model tools { backend http://127.0.0.1:$tp/v1; }",
    server => "
        location /v1/ { llm_gateway; llm_auth on; llm_cache on;
                        llm_cache_max_entry 4m; llm_max_response_body 8m;
                        llm_max_request_body 2m; }",
);

$t->add_tenant($rp, 'a', 'sk-a');
$t->add_tenant($rp, 'l11', 'sk-l11');

my $n = 0;
sub uniq { 'q' . ++$n . '-' . $$ }

# a chat request, with key sk-a unless given
sub ask {
    my ($body, %o) = @_;
    return post($gw, '/v1/chat/completions', $body,
        key => $o{key} // 'sk-a', timeout => $o{timeout} // 30);
}

sub req {
    my ($text, %o) = @_;
    return { model => 'mixtral-8x7b', temperature => 0,
             messages => [{ role => 'user', content => $text }], %o };
}

sub upstream { $t->mock_stats($up)->{requests} }

# the pieces of a streamed answer: content, tool-call arguments, events
sub stream_of {
    my ($b) = @_;
    my %s = (content => '', args => '', ids => {}, done => 0, usage => undef,
             finish => undef, bad => 0);
    for my $e (sse_events($b)) {
        if ($e eq '[DONE]') { $s{done}++; next }
        my $j = json_of($e) or do { $s{bad}++; next };
        $s{ids}{ $j->{id} } = 1;
        $s{usage} = $j->{usage} if $j->{usage};
        for my $c (@{ $j->{choices} || [] }) {
            $s{content} .= $c->{delta}{content} // '';
            for my $tc (@{ $c->{delta}{tool_calls} || [] }) {
                $s{args} .= $tc->{function}{arguments} // '';
            }
            $s{finish} = $c->{finish_reason} if $c->{finish_reason};
        }
    }
    return \%s;
}

# a socket with a small receive buffer, so the kernel holds little
sub slow_socket {
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 4096) or die "setsockopt: $!";
    connect($s, pack_sockaddr_in($gw, inet_aton('127.0.0.1')))
        or die "connect: $!";
    binmode $s;
    return $s;
}

sub send_request {
    my ($s, $body) = @_;
    my $req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        . "Connection: close\r\nContent-Type: application/json\r\n"
        . "Authorization: Bearer sk-a\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n" . $body;
    syswrite($s, $req) == length($req) or die "write: $!";
}

# ------------------------------------------------------------------- H5

# a large request, and once it is in, a small one beside it on the same
# worker: the large one's status, the small one's, the large one's
# headers and body
sub beside {
    my ($body, $wait) = @_;
    my $s = slow_socket();
    send_request($s, $body);
    sleep $wait;
    my ($mst) = http_request($gw, 'GET', '/v1/models',
                             { Authorization => 'Bearer sk-a' }, undef,
                             timeout => $PROMPT);
    my $raw = '';
    my $sel = IO::Select->new($s);
    my $end = time + $PROMPT;
    while (time < $end && $sel->can_read($end - time)) {
        sysread($s, my $buf, 65536) or last;
        $raw .= $buf;
    }
    close $s;
    my ($st, $hd, $b) = LLMTest::parse_response($raw);
    return ($st, $mst, $hd, $b);
}

# four letters from a to z: N keys in descending order
sub h5_keys {
    my ($n) = @_;
    my @keys;
    for my $i (reverse 0 .. $n - 1) {
        my ($k, $v) = ('', $i);
        for (1 .. 4) { $k = chr(97 + $v % 26) . $k; $v = int($v / 26) }
        push @keys, $k;
    }
    return @keys;
}

{
    # the attack itself: refused while parsing, before any sort
    my @keys = h5_keys($H5_ATTACK);
    my $obj = '{' . join(',', map { "\"$_\":0" } @keys) . '}';
    my $body = '{"model":"mixtral-8x7b","temperature":0,'
        . '"messages":[{"role":"user","content":"' . uniq() . '"}],'
        . '"metadata":' . $obj . '}';
    my ($st, $mst, undef, $b) = beside($body, 0.5);
    is($st, 400, "H5: one object of $H5_ATTACK keys in descending order "
       . "is refused promptly");
    like((json_of($b) // {})->{error}{param} // '', qr/^metadata/,
         'H5: the refusal names the object');
    is($mst, 200, 'H5: a request sent beside it, to the same worker, is '
       . 'answered promptly');
}

{
    my @keys = h5_keys($H5_KEYS);

    my $text = uniq();
    my $json = sub {
        my @k = @_;
        my $obj = '{' . join(',', map { "\"$_\":0" } @k) . '}';
        return '{"model":"mixtral-8x7b","temperature":0,'
            . '"messages":[{"role":"user","content":"' . $text . '"}],'
            . '"metadata":' . $obj . '}';
    };

    my $desc = $json->(@keys);
    ok(length($desc) < 1024 * 1024, "H5: the request is under 1 MB");

    my %h = ('Content-Type' => 'application/json',
             Authorization => 'Bearer sk-a');

    my ($st, $mst, $hd) = beside($desc, 1);

    is($st, 200, "H5: a cacheable request with one object of "
       . "$H5_KEYS keys in descending order is answered promptly");
    is($hd->{'x-llm-cache'}, 'MISS', 'H5: it was a miss');
    is($mst, 200, 'H5: a request sent while it is worked on, to the same '
       . 'worker, is answered promptly too');

    # the canonical form is the one entries were stored under before
    require Digest::SHA;
    my $str = sub { my ($tag, $v) = @_; $tag . length($v) . ":$v" };
    my $canon = $str->('m', 'mixtral-8x7b') . '{'
        . $str->('k', 'messages') . '[{' . $str->('k', 'content')
        . $str->('s', $text) . $str->('k', 'role') . $str->('s', 'user')
        . '}]' . $str->('k', 'metadata') . '{'
        . join('', map { $str->('k', $_) . 'n0;' } sort @keys) . '}'
        . $str->('k', 'temperature') . 'n0;}';
    is($t->redis_cli($rp, 'EXISTS',
                     rkey(KEY_CACHE, 'a', Digest::SHA::sha256_hex($canon))), 1,
       'H5: the key of the large object is the one of the same canonical '
       . 'form as before');

    # the same object in ascending order has the same key
    my $before = upstream();
    ($st, $hd) = http_request($gw, 'POST', '/v1/chat/completions', \%h,
                                 $json->(reverse @keys), timeout => $PROMPT);
    is($st, 200, 'H5: the same object in another order is answered');
    is($hd->{'x-llm-cache'}, 'HIT',
       'H5: member order does not change the key of a large object');
    is(upstream(), $before, 'H5: ... and the backend is not asked again');
}

# ------------------------------------------------------------------- M4

{
    my $mock = 'MOCK:' . encode_json({ args => $M4_ARGS,
                                       delta => $M4_DELTA });
    my $body = { model => 'tools', temperature => 0, stream => JSON::PP::true,
                 messages => [{ role => 'user', content => $mock }] };

    my ($st, $h, $b) = ask($body, timeout => $PROMPT);
    is($st, 200, "M4: a stream with a tool call of "
       . int($M4_ARGS / $M4_DELTA) . " deltas is relayed promptly");
    is($h->{'x-llm-cache'}, 'MISS', 'M4: a miss');
    like(substr($b, -100),
         qr/"finish_reason":"tool_calls".*data: \[DONE\]\n\n\z/s,
         'M4: the stream is relayed to its end');

    # the arguments as the mock makes them
    my $unit = join '', 'a' .. 'z', 0 .. 9;
    my $fill = $M4_ARGS - length('{"data":""}');
    my $args = '{"data":"' . substr($unit x (int($fill / 36) + 1), 0, $fill)
        . '"}';

    my $before = $t->mock_stats($tp)->{requests};
    ($st, $h, $b) = ask($body, timeout => $PROMPT);
    my $s = stream_of($b);
    is($h->{'x-llm-cache'}, 'HIT', 'M4: the stream was stored');
    is($t->mock_stats($tp)->{requests}, $before, 'M4: no backend request');
    ok($s->{args} eq $args, 'M4: the stream replay carries the arguments '
       . 'exactly');
    is($s->{finish}, 'tool_calls', 'M4: with its finish reason');
    is($s->{done}, 1, 'M4: and one [DONE]');
    is($s->{bad}, 0, 'M4: every event is JSON');

    delete $body->{stream};
    ($st, $h, $b) = ask($body, timeout => $PROMPT);
    my $j = json_of($b);
    is($h->{'x-llm-cache'}, 'HIT', 'M4: the JSON form is a hit too');
    ok($j && $j->{choices}[0]{message}{tool_calls}[0]{function}{arguments}
       eq $args, 'M4: the JSON replay carries the arguments exactly');
    is($j && $j->{choices}[0]{message}{tool_calls}[0]{id}, 'call_1',
       'M4: and the call\'s id');
}

# ------------------------------------------------------------------- M3

# a stream replay without its id and time
sub normal {
    my ($b) = @_;
    $b =~ s/"id":"chatcmpl-[0-9a-f]+","object":"chat.completion.chunk",
            "created":\d+/ID/gx;
    return $b;
}

sub first_bytes {
    my ($s) = @_;
    my $buf = '';
    IO::Select->new($s)->can_read(10) and sysread($s, $buf, 1024);
    return $buf;
}

# reads every socket to its end; returns the raw answers
sub read_all {
    my ($first, @s) = @_;
    my %raw = map { ($_ => $first->[$_]) } 0 .. $#s;
    my %fd = map { (fileno($s[$_]) => $_) } 0 .. $#s;
    my $sel = IO::Select->new(@s);
    my $end = time + 60;
    while ($sel->count && time < $end) {
        for my $fh ($sel->can_read(1)) {
            my $got = sysread($fh, my $buf, 65536);
            if ($got) { $raw{ $fd{ fileno $fh } } .= $buf; next }
            $sel->remove($fh);
        }
    }
    close $_ for @s;
    return map { $raw{$_} } 0 .. $#s;
}

{
    my $text = uniq();
    my $mock = 'MOCK:' . encode_json({ size => $M3_SIZE });
    my $plain = req($mock, messages => [
        { role => 'user', content => $text },
        { role => 'user', content => $mock }]);

    my ($st, $h, $b) = ask($plain);
    is($st, 200, 'M3: a large answer');
    my $expect = json_of($b)->{choices}[0]{message}{content};
    is(length $expect, $M3_SIZE, "M3: of $M3_SIZE bytes");

    my $stream = { %$plain, stream => JSON::PP::true,
                   stream_options => { include_usage => JSON::PP::true } };

    # once fast, for the size of the replay and to warm the worker up
    ($st, $h, $b) = ask($stream);
    is($h->{'x-llm-cache'}, 'HIT', 'M3: the entry is stored');
    my $replay = length $b;
    my $fs = stream_of($b);
    ok($fs->{content} eq $expect && $fs->{done} == 1 && $fs->{bad} == 0
       && $fs->{usage} && $fs->{finish} eq 'stop' && keys %{ $fs->{ids} } == 1,
       'M3: a fast replay is correct, with usage and [DONE]');
    my $fast = normal($b);
    ($st, $h, $b) = ask($plain);
    is(json_of($b) && json_of($b)->{choices}[0]{message}{content}, $expect,
       'M3: a fast JSON replay is correct');

    my ($pid) = $t->worker_pids($gw);
    my $base = LLMTest::rss_kb($pid);

    my @s = map { slow_socket() } 1 .. $M3_READERS;
    send_request($_, encode_json($stream)) for @s;

    # each reads the first bytes only, and then nothing for a while
    my @first = map { first_bytes($_) } @s;
    sleep 2;

    my $grown = LLMTest::rss_kb($pid) - $base;
    SKIP: {
    skip 'M3: RSS says nothing under ASan, which keeps freed memory', 1
        if $SAN;
    ok($grown < $replay / 1024,
       "M3: $M3_READERS slow readers of a replay of "
       . int($replay / 1024) . " KB grow the worker by less than one "
       . "replay together (by $grown KB)");
    }

    # the same replay as the fast one, but for its id and time
    my $ok = 0;
    for my $raw (read_all(\@first, @s)) {
        my ($rst, $rh, $rb) = LLMTest::parse_response($raw);
        my %ids = map { ($_ => 1) } $rb =~ /"id":"(chatcmpl-[0-9a-f]+)"/g;
        diag("slow stream reader: status $rst, " . length($rb) . " bytes")
            unless $rst == 200 && length $rb == $replay;
        $ok++ if $rst == 200 && keys %ids == 1
                 && normal($rb) eq $fast;
    }
    is($ok, $M3_READERS, 'M3: every slow reader gets its replay whole and '
       . 'correct, with usage and [DONE]');

    # readers that go away in the middle of their replays
    @s = map { slow_socket() } 1 .. 4;
    my $i = 0;
    send_request($_, encode_json($i++ % 2 ? $stream : $plain)) for @s;
    first_bytes($_) for @s;
    close $_ for @s;
    sleep 0.5;
    ($st, $h, $b) = ask($stream);
    is(normal($b), $fast, 'M3: after readers left in the middle of their '
       . 'replays, the entry replays as before');

    # JSON replays, slowly read
    $base = LLMTest::rss_kb($pid);
    @s = map { slow_socket() } 1 .. $M3_READERS + 2;
    send_request($_, encode_json($plain)) for @s;
    @first = map { first_bytes($_) } @s;
    sleep 2;
    $grown = LLMTest::rss_kb($pid) - $base;
    SKIP: {
    skip 'M3: RSS says nothing under ASan, which keeps freed memory', 1
        if $SAN;
    ok($grown < 2 * $M3_SIZE / 1024,
       'M3: ' . ($M3_READERS + 2) . ' slow readers of a large JSON replay '
       . "grow the worker by less than two copies of it (by $grown KB)");
    }

    $ok = 0;
    for my $raw (read_all(\@first, @s)) {
        my ($rst, $rh, $rb) = LLMTest::parse_response($raw);
        my $j = json_of($rb);
        $ok++ if $rst == 200 && $j && $j->{choices}[0]{message}{content}
                 eq $expect && $rh->{'content-length'} == length $rb;
    }
    is($ok, $M3_READERS + 2, 'M3: every slow JSON reader gets the answer '
       . 'whole, with its Content-Length');
}

# ------------------------------------------------------------------ L11

{
    my $body = req(uniq());
    my ($st, $h, $b) = ask($body, key => 'sk-l11');
    is($h->{'x-llm-cache'}, 'MISS', 'L11: a miss stores an entry');

    my @keys = grep { !/:lock$/ } split /\s+/,
        $t->redis_cli($rp, '--scan', '--pattern', rkey(KEY_CACHE, 'l11', '*'));
    is(scalar @keys, 1, 'L11: the entry is found');
    $t->redis_cli($rp, 'SET', $keys[0], "LLMC1 1 1 0\n{}");

    ($st, $h, $b) = ask($body, key => 'sk-l11');
    is($h->{'x-llm-cache'}, 'HIT', 'L11: a hit on a stored {}');
    my $j = json_of($b);
    ok($j, 'L11: a stored {} is replayed as valid JSON');
    is($j && $j->{object}, 'chat.completion', 'L11: with its object');
    is($h->{'content-length'}, length $b, 'L11: and its Content-Length');

    ($st, $h, $b) = ask({ %$body, stream => JSON::PP::true },
                         key => 'sk-l11');
    my $s = stream_of($b);
    is($st, 200, 'L11: the stream replay of a stored {}');
    is($s->{done}, 1, 'L11: ... ends with [DONE]');
    is($s->{bad}, 0, 'L11: ... and every event is JSON');
}

$t->stop_nginx($gw);

done_testing;
