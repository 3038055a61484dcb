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

my $cost = 'x-llm-cost-usd';

# 11 prompt tokens and 5 completion tokens from the mock
cases({ port => $gw },
    { name => 'plain answer: 11 x $0.60 + 5 x $1.80 per 1M = 15.6 '
          . 'micro-dollars, rounded up',
      chat => { model => 'm', content => 'one' },
      status => 200, header => { $cost => '0.000016' },
      check => sub {
          my ($name, $st, $h, $b) = @_;
          is($h->{'content-length'}, length($b),
              "$name: a held answer has its Content-Length");
          is(json_of($b)->{usage}{prompt_tokens}, 11, "$name: body intact");
      } },
    { name => '11 x 0.15 + 5 x 0.60 = 4.65 micro-dollars: 0.000005',
      chat => { model => 'cheapest', content => 'one' },
      header => { $cost => '0.000005' } },
    { name => '11 x $1000 + 900 x $3000 per 1M = $2.711',
      chat => { model => 'dear', content => 'MOCK:{"tokens":900}',
                max_tokens => 1000 },
      header => { $cost => '2.711000' } },
    { name => 'off by default', path => '/plain/v1/chat/completions',
      chat => { model => 'm', content => 'one' }, header => { $cost => undef } },

    # too large to hold: served whole, without the header
    { name => 'an answer over llm_max_response_body goes without the header',
      chat => { model => 'm', content => 'MOCK:{"size":100000}' },
      status => 200, header => { $cost => undef },
      check => sub {
          my ($name, $st, $h, $b) = @_;
          is(length(content_of($b, $h) // ''), 100000, "$name: and whole");
      } },

    # held, so a backend that breaks mid-body is failed over
    { name => 'first backend broke mid-body: the second answered, at its prices',
      chat => { model => 'flaky', content => 'x' },
      status => 200, header => { $cost => '0.000016' },
      check => sub { ok(json_of($_[3]), "$_[0]: a whole JSON body") } },

    # an error is not held, and costs nothing
    { name => 'a backend 400 passes through',
      chat => { model => 'm', content => 'MOCK:{"status":400}' },
      status => 400 },
);

# streams: a trailer after the last chunk
{
    my $body = chat_request($gw, model => 'm', content => 'stream me',
        stream => JSON::PP::true)->[4];
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
my %c = (model => 'm', temperature => 0);
cases({ port => $gw },
    { name => 'a miss', chat => { %c, content => 'cached' } },
    { name => 'a hit costs 0 by default', chat => { %c, content => 'cached' },
      header => { 'x-llm-cache' => 'HIT', $cost => '0.000000' } },
    { name => 'a miss at half', path => '/half/v1/chat/completions',
      chat => { %c, content => 'cached half' } },
    { name => 'llm_cache_charge 50: half of 16, rounded up',
      path => '/half/v1/chat/completions',
      chat => { %c, content => 'cached half' }, header => { $cost => '0.000008' } },
    { name => 'a streamed hit has it as a header',
      path => '/half/v1/chat/completions',
      chat => { %c, content => 'cached half', stream => JSON::PP::true },
      header => { $cost => '0.000008' } },
);

$t->cleanup;
done_testing;
