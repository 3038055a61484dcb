# End to end against the real components: llama-server with generated
# models behind the gateway, and the official openai npm package in front.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

plan skip_all => 'LLAMA_SERVER and LLM_MODEL_SMALL unset (./config.sh test sets them)'
    unless $ENV{LLAMA_SERVER} && $ENV{LLM_MODEL_SMALL};

my $t = LLMTest->new;
my $small = $t->start_llama($ENV{LLM_MODEL_SMALL}, 'tiny-8x7b');
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp;
             llm_model mixtral-8x7b { backend http://127.0.0.1:$small/v1 model=tiny-8x7b; }",
    server => 'location /v1/ { llm_gateway; }
               location /c/v1/ { llm_gateway; llm_cache on; llm_cache_policy any; }',
);
my ($st, $h, $b) = chat($gw, content => 'Hello there', max_tokens => 10);
is($st, 200, 'llama-server non-stream: 200');
my $j = json_of($b);
ok(length($j->{choices}[0]{message}{content} // '') > 0, 'generated text');
is($j->{model}, 'tiny-8x7b', 'served by the backend model');
cmp_ok($j->{usage}{completion_tokens} // 0, '>', 0, 'usage: completion tokens');
cmp_ok($j->{usage}{completion_tokens} // 99, '<=', 10, 'max_tokens honoured');
cmp_ok($j->{usage}{prompt_tokens} // 0, '>', 0, 'usage: prompt tokens');
my $ctok = $j->{usage}{completion_tokens} // 'none';
ok(wait_until(sub { $t->access_log($gw) =~ /ctok=$ctok / }, 5), 'log has the real usage');

($st, $h, $b) = chat($gw, content => 'Hello there', max_tokens => 6,
    stream => JSON::PP::true);
is($st, 200, 'llama-server stream: 200');
my @ev = sse_events($b);
is($ev[-1], '[DONE]', 'stream ends with [DONE]');
my @content = grep { my $c = json_of($_); $c && @{ $c->{choices} || [] } && defined $c->{choices}[0]{delta}{content} } @ev;
cmp_ok(scalar @content, '>=', 1, 'content chunks streamed');
ok(!(grep { /"usage"/ } @ev), 'usage chunk hidden from a client that did not ask');
ok(wait_until(sub { $t->access_log($gw) =~ /ptok=\d+ ctok=[1-6] / }, 5),
    'the gateway read usage from the stream');

# the cache in front of a real worker: a stream stored, then replayed
my @cached = (path => '/c/v1/chat/completions', content => 'Tell me about caches',
    max_tokens => 12, temperature => 0);
my ($st1, $h1, $b1) = chat($gw, @cached, stream => JSON::PP::true);
is($h1->{'x-llm-cache'}, 'MISS', 'llama stream: MISS');
my ($st2, $h2, $b2) = chat($gw, @cached, stream => JSON::PP::true);
is($h2->{'x-llm-cache'}, 'HIT', 'llama stream: HIT');
my $text = content_of($b1, $h1);
ok(length($text) > 0, 'llama generated text');
is(content_of($b2, $h2), $text, 'the replay is the generated text');
my ($st3, $h3, $b3) = chat($gw, @cached);
is($h3->{'x-llm-cache'}, 'HIT', 'llama stream stored, asked as JSON: HIT');
is(content_of($b3, $h3), $text, 'same text as JSON');

# the official SDK
SKIP: {
    my $node_path = $ENV{NODE_PATH} // "$LLMTest::ROOT/node_modules";
    skip 'openai npm package not installed', 13 unless -d "$node_path/openai";
    my $out = `NODE_PATH=$node_path node $FindBin::Bin/e2e/openai_client.js http://127.0.0.1:$gw/v1 sk-unused mixtral-8x7b 2>&1`;
    my $r = json_of((split /\n/, $out)[-1] // '');
    ok($r && !$r->{fatal}, 'openai SDK ran') or diag($out);
    ok(length($r->{plain}{content} // '') > 0, 'SDK non-stream content');
    cmp_ok($r->{plain}{usage}{completion_tokens} // 0, '>', 0, 'SDK non-stream usage');
    ok(length($r->{stream}{content} // '') > 0, 'SDK stream content');
    cmp_ok($r->{stream}{usage}{completion_tokens} // 0, '>', 0, 'SDK stream usage (include_usage)');
    ok($r->{stream}{finish}, 'SDK stream finish_reason');
    is($r->{error}{status}, 404, 'SDK sees the 404 for an unknown model');
    is($r->{error}{code}, 'model_not_found', 'SDK parses the error code');

    # twice through the cache: the second run reads replays
    my @runs = map {
        my $o = `NODE_PATH=$node_path node $FindBin::Bin/e2e/openai_client.js http://127.0.0.1:$gw/c/v1 sk-unused mixtral-8x7b 2>&1`;
        json_of((split /\n/, $o)[-1] // '') // { fatal => $o };
    } 1 .. 2;
    ok(!$runs[1]{fatal}, 'SDK on cache replays ran') or diag(explain($runs[1]));
    is($runs[1]{plain}{content}, $runs[0]{plain}{content}, 'SDK: cached JSON content');
    is($runs[1]{stream}{content}, $runs[0]{stream}{content}, 'SDK: replayed stream content');
    is_deeply($runs[1]{stream}{usage}, $runs[0]{stream}{usage}, 'SDK: replayed usage chunk');
    is($runs[1]{stream}{finish}, $runs[0]{stream}{finish}, 'SDK: replayed finish_reason');
}

$t->cleanup;
done_testing;
