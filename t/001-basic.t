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

cases({ port => $gw },
    { name => 'non-stream', chat => { content => 'MOCK:{"tokens":4}' },
      status => 200, header => { 'content-type' => qr{^application/json} },
      content => 't0 t1 t2 t3 ',
      check => sub {
          my ($name, $st, $h, $b) = @_;
          is(json_of($b)->{usage}{completion_tokens}, 4,
              "$name: usage passed through");
          my $s = $t->mock_stats($up);
          is($s->{last_body}{model}, 'up-small',
              "$name: model rewritten for the backend");
          ok(!exists $s->{last_body}{stream_options},
              "$name: no stream_options on a plain request");
      } },
    { name => 'stream, client did not ask for usage',
      chat => { stream => JSON::PP::true, content => 'MOCK:{"tokens":3}' },
      status => 200, header => { 'content-type' => qr{^text/event-stream} },
      content => 't0 t1 t2 ', no_match => qr/"usage"/,
      check => sub {
          my ($name, $st, $h, $b) = @_;
          is((sse_events($b))[-1], '[DONE]', "$name: [DONE] kept");
          ok($t->mock_stats($up)->{last_body}{stream_options}{include_usage},
              "$name: include_usage asked upstream");
      } },
    { name => 'stream, client asked for usage',
      chat => { stream => JSON::PP::true,
                stream_options => { include_usage => JSON::PP::true },
                content => 'MOCK:{"tokens":3}' },
      check => sub {
          my ($name, $st, $h, $b) = @_;
          my ($u) = grep { /"usage"/ } sse_events($b);
          ok($u, "$name: usage chunk kept");
          is(json_of($u)->{usage}{completion_tokens}, 3,
              "$name: usage numbers");
      } },
);

# log variables
my $log = $t->access_log($gw);
like($log, qr/model=mixtral-8x7b backend=127\.0\.0\.1:$up ustatus=200 ptok=11 ctok=3 ttfb=\d+\.\d{3}/,
    'log variables');

# models
cases({ port => $gw },
    { name => 'models', method => 'GET', path => '/v1/models', status => 200,
      check => sub {
          my ($name, $st, $h, $b) = @_;
          my $j = json_of($b);
          is($j->{object}, 'list', "$name: a list");
          is($j->{data}[0]{id}, 'mixtral-8x7b', "$name: model id");
          is($j->{data}[0]{object}, 'model', "$name: model object");
      } },
);

$t->cleanup;
done_testing;
