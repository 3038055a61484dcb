# Non-stream and stream through the gateway to the mock upstream.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $gw = $t->start_nginx(
    http => "llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 model=up-small; }",
    server => 'location /v1/ { llm_gateway; }',
);
my %json = ('Content-Type' => 'application/json');

# non-stream
my ($st, $h, $b) = http_request($gw, 'POST', '/v1/chat/completions', \%json,
    LLMTest::chat_body(content => 'MOCK:{"tokens":4}'));
is($st, 200, 'non-stream 200');
like($h->{'content-type'}, qr{^application/json}, 'json content type');
my $j = json_of($b);
is($j->{choices}[0]{message}{content}, 't0 t1 t2 t3 ', 'content passed through');
is($j->{usage}{completion_tokens}, 4, 'usage passed through');

my $s = $t->mock_stats($up);
is($s->{last_body}{model}, 'up-small', 'model rewritten for the backend');
ok(!exists $s->{last_body}{stream_options}, 'no stream_options on a plain request');

# stream, client did not ask for usage
($st, $h, $b) = http_request($gw, 'POST', '/v1/chat/completions', \%json,
    LLMTest::chat_body(stream => JSON::PP::true, content => 'MOCK:{"tokens":3}'));
is($st, 200, 'stream 200');
like($h->{'content-type'}, qr{^text/event-stream}, 'event-stream content type');
my @ev = sse_events($b);
is($ev[-1], '[DONE]', '[DONE] kept');
my $text = join '', map { my $c = json_of($_); $c ? ($c->{choices}[0]{delta}{content} // '') : '' } @ev;
is($text, 't0 t1 t2 ', 'streamed content');
ok(!(grep { /"usage"/ } @ev), 'usage chunk stripped when not asked for');
$s = $t->mock_stats($up);
ok($s->{last_body}{stream_options}{include_usage}, 'include_usage asked upstream');

# stream, client asked for usage
($st, $h, $b) = http_request($gw, 'POST', '/v1/chat/completions', \%json,
    LLMTest::chat_body(stream => JSON::PP::true, stream_options => { include_usage => JSON::PP::true },
        content => 'MOCK:{"tokens":3}'));
@ev = sse_events($b);
my ($u) = grep { /"usage"/ } @ev;
ok($u, 'usage chunk kept when asked for');
is(json_of($u)->{usage}{completion_tokens}, 3, 'usage numbers');

# log variables
my $log = $t->access_log($gw);
like($log, qr/model=mixtral-8x7b backend=127\.0\.0\.1:$up ustatus=200 ptok=11 ctok=3 ttfb=\d+\.\d{3}/,
    'log variables');

# models
($st, $h, $b) = http_request($gw, 'GET', '/v1/models');
is($st, 200, 'models 200');
$j = json_of($b);
is($j->{object}, 'list', 'models list');
is($j->{data}[0]{id}, 'mixtral-8x7b', 'model id');
is($j->{data}[0]{object}, 'model', 'model object');

$t->cleanup;
done_testing;
