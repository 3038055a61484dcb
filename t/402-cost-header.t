# llm_cost_header: x-llm-cost-usd on plain answers (held until whole, so
# a backend that breaks mid-body fails over), as a trailer on streams, on
# cache hits; cost arithmetic in integer micro-dollars, rounded up.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp;
        llm_model m { backend http://127.0.0.1:$up/v1 price=0.60/1.80; }
        llm_model cheapest { backend http://127.0.0.1:$up/v1 price=0.15/0.60; }
        llm_model dear { backend http://127.0.0.1:$up/v1 price=1000/3000; }
        llm_model flaky { backend http://127.0.0.1:$up/disconnect/v1 price=9/9;
                          backend http://127.0.0.1:$up/v1 price=0.60/1.80; }",
    server => 'location /v1/ { llm_gateway; llm_cost_header on; llm_cache on;
                               llm_max_response_body 64k; }
               location /half/v1/ { llm_gateway; llm_cost_header on; llm_cache on;
                                    llm_cache_charge 50; }
               location /plain/v1/ { llm_gateway; }',
);

sub post {
    my ($path, $body) = @_;
    return http_request($gw, 'POST', "$path/chat/completions",
        { 'Content-Type' => 'application/json' }, encode_json($body));
}
sub chat { my ($model, $text, %o) = @_; { model => $model, messages => [{ role => 'user', content => $text }], %o } }

# 11 prompt tokens and 5 completion tokens from the mock
my ($st, $h, $b) = post('/v1', chat('m', 'one'));
is($st, 200, 'plain answer');
is($h->{'x-llm-cost-usd'}, '0.000016', '11 x $0.60 + 5 x $1.80 per 1M = 15.6 micro-dollars, rounded up');
is($h->{'content-length'}, length($b), 'a held answer has its Content-Length');
is(json_of($b)->{usage}{prompt_tokens}, 11, 'body intact');
($st, $h) = post('/v1', chat('cheapest', 'one'));
is($h->{'x-llm-cost-usd'}, '0.000005', '11 x 0.15 + 5 x 0.60 = 4.65 micro-dollars: 0.000005');
($st, $h) = post('/v1', chat('dear', 'MOCK:{"tokens":900}', max_tokens => 1000));
is($h->{'x-llm-cost-usd'}, '2.711000', '11 x $1000 + 900 x $3000 per 1M = $2.711');
($st, $h) = post('/plain/v1', chat('m', 'one'));
ok(!exists $h->{'x-llm-cost-usd'}, 'off by default');

# too large to hold: served whole, without the header
($st, $h, $b) = post('/v1', chat('m', 'MOCK:{"size":100000}'));
is($st, 200, 'an answer over llm_max_response_body');
ok(!exists $h->{'x-llm-cost-usd'}, 'goes without the header');
is(length(json_of($b)->{choices}[0]{message}{content} // ''), 100000, 'and whole');

# held, so a backend that breaks mid-body is failed over
($st, $h, $b) = post('/v1', chat('flaky', 'x'));
is($st, 200, 'first backend broke mid-body: the second answered');
is($h->{'x-llm-cost-usd'}, '0.000016', 'at the second backend\'s prices');
ok(json_of($b), 'a whole JSON body');

# an error is not held, and costs nothing
($st, $h) = post('/v1', chat('m', 'MOCK:{"status":400}'));
is($st, 400, 'a backend 400 passes through');

# streams: a trailer after the last chunk
{
    my $body = encode_json(chat('m', 'stream me', stream => JSON::PP::true));
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $gw) or die;
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . "TE: trailers\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
    local $/;
    my $raw = <$s>;
    like($raw, qr/\r\n0\r\nx-llm-cost-usd: 0\.000016\r\n\r\n\z/i, 'stream: the cost as a trailer');
    like($raw, qr/data: \[DONE\]/, 'stream intact');
}

# cache hits: charged llm_cache_charge of the first cost
post('/v1', chat('m', 'cached', temperature => 0));
($st, $h) = post('/v1', chat('m', 'cached', temperature => 0));
is($h->{'x-llm-cache'}, 'HIT', 'HIT');
is($h->{'x-llm-cost-usd'}, '0.000000', 'a hit costs 0 by default');
post('/half/v1', chat('m', 'cached half', temperature => 0));
($st, $h) = post('/half/v1', chat('m', 'cached half', temperature => 0));
is($h->{'x-llm-cost-usd'}, '0.000008', 'llm_cache_charge 50: half of 16, rounded up');
($st, $h) = post('/half/v1', chat('m', 'cached half', temperature => 0, stream => JSON::PP::true));
is($h->{'x-llm-cost-usd'}, '0.000008', 'a streamed hit has it as a header');

$t->cleanup;
done_testing;
