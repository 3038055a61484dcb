# What the gateway sends each hosted provider (review 2026-12-01, fixes 4,
# 5, 6, 10, 11): each provider's rewrite table reaches the fake as its
# real API accepts it (the fakes of t/mock/provider.js refuse what the
# real ones refuse, in their own shapes); Groq's n > 1 and DeepInfra's
# named tool_choice are refused with an OpenAI-style 400; a stream's
# usage reaches a client that asked for it as exactly one
# {"choices":[],"usage"} chunk before [DONE], and one that did not gets
# no usage and no metadata-only event; OpenRouter's attribution goes only
# with llm_app_url; and the usage billed is the provider's.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;
use Digest::SHA;

plan skip_all => 'openssl not installed' unless `which openssl` =~ /\S/;

my $t = LLMTest->new;
my $d = $t->dir;

# mock ids: the fakes only compare them
my %p = (
    fireworks => 'accounts/fireworks/models/fake-model',
    deepinfra => 'fake/deepinfra-model',
    openrouter => 'fake/openrouter-model',
    mistral => 'mistral-small-latest',
    groq => 'fake-groq-model',
);
my %base = %LLMTest::PROVIDER_BASE;
my %expect = LLMTest::provider_expect(\%p, title => 'Our App');

# two fakes: one expects attribution, the other none at all
my $fp = $t->start_providers(\%expect, 'a');
my %plain = %expect;
$plain{openrouter} = { %{ $expect{openrouter} }, referer => undef, title => undef };
my $fp2 = $t->start_providers(\%plain, 'b');

sub models {
    my ($port) = @_;
    join "\n", map {
        "llm_model p-$_ { backend https://127.0.0.1:$port/$base{$_} provider=$_ model=$p{$_} "
            . 'api_key_env=LLMT_KEY_' . uc($_) . ' price=0.60/0.60; }'
    } sort keys %p;
}

my $gw = $t->start_nginx(
    http => "llm_ssl_trusted_certificate @{[ $t->provider_ca ]}; llm_app_url https://gateway.example/app;\n"
        . "llm_app_title \"Our App\";\n" . models($fp),
    server => 'location /v1/ { llm_gateway; }',
);

sub last_seen {
    my ($name, $port) = @_;
    my $out = `curl -s --cacert @{[ $t->provider_ca ]} https://127.0.0.1:@{[$port // $fp]}/_last/$name`;
    return json_of($out) // {};
}

sub ask {
    my ($name, %o) = @_;
    my ($st, $h, $b) = chat($gw, key => 'sk-client', model => "p-$name", %o);
    return ($st, $b, last_seen($name)->{body} // {});
}

# ---------------------------------------------------------------- Mistral
{
    my ($st, $b, $sent) = ask('mistral', seed => 42);
    is($st, 200, 'mistral: seed accepted') or diag($b);
    is($sent->{random_seed}, 42, 'mistral: seed sent as random_seed');
    ok(!exists $sent->{seed}, 'mistral: no seed');

    ($st, $b, $sent) = ask('mistral', max_completion_tokens => 50);
    is($st, 200, 'mistral: max_completion_tokens accepted') or diag($b);
    is($sent->{max_tokens}, 50, 'mistral: sent as max_tokens, the same bound');
    ok(!exists $sent->{max_completion_tokens}, 'mistral: no max_completion_tokens');

    ($st, $b, $sent) = ask('mistral', user => 'u-1');
    is($st, 200, 'mistral: user accepted') or diag($b);
    ok(!exists $sent->{user}, 'mistral: user left out');

    ($st, $b, $sent) = ask('mistral', logprobs => JSON::PP::true, top_logprobs => 2,
        logit_bias => { 50256 => -100 });
    is($st, 200, 'mistral: logprobs, top_logprobs, logit_bias accepted') or diag($b);
    ok(!exists $sent->{$_}, "mistral: $_ left out") for qw(logprobs top_logprobs logit_bias);

    ($st, $b, $sent) = ask('mistral', messages => [
        { role => 'system', content => 'be brief' },
        { role => 'user', name => 'alice', content => 'hi' }]);
    is($st, 200, 'mistral: messages[].name accepted') or diag($b);
    ok(!exists $sent->{messages}[1]{name}, 'mistral: the name left out');
    is($sent->{messages}[1]{content}, 'hi', 'mistral: the message otherwise whole');
    is($sent->{messages}[0]{content}, 'be brief', 'mistral: other messages as they were');

    # a tool's message keeps its name: Mistral's ToolMessage has one
    ($st, $b, $sent) = ask('mistral', messages => [
        { role => 'user', name => 'alice', content => 'weather?' },
        { role => 'assistant', content => '', tool_calls => [{ id => 'call1', type => 'function',
            function => { name => 'weather', arguments => '{}' } }] },
        { role => 'tool', tool_call_id => 'call1', name => 'weather', content => 'sunny' }]);
    is($st, 200, 'mistral: a tool message with its name accepted') or diag($b);
    ok(!exists $sent->{messages}[0]{name}, 'mistral: the user\'s name left out');
    is($sent->{messages}[2]{name}, 'weather', 'mistral: the tool message keeps its name');

    ($st, $b, $sent) = ask('mistral', stop => undef, top_p => undef);
    is($st, 200, 'mistral: null values accepted') or diag($b);
    ok(!exists $sent->{stop} && !exists $sent->{top_p}, 'mistral: null members left out');

    ($st, $b, $sent) = ask('mistral', temperature => 2);
    is($st, 200, 'mistral: temperature 2 accepted') or diag($b);
    is($sent->{temperature}, 1.5, 'mistral: temperature clamped to 1.5');
    ($st, $b, $sent) = ask('mistral', temperature => 0.7);
    is($sent->{temperature}, 0.7, 'mistral: a lower temperature as it was');

    ($st, $b, $sent) = ask('mistral', stream => JSON::PP::true,
        stream_options => { include_usage => JSON::PP::true });
    is($st, 200, 'mistral: a stream with stream_options accepted') or diag($b);
    ok(!exists $sent->{stream_options}, 'mistral: stream_options left out');

    # the fake does refuse: a forbidden member straight to it gets its 422
    my $raw = `curl -s --cacert @{[ $t->provider_ca ]} -H 'Authorization: Bearer $expect{mistral}{key}' -d '{"model":"$p{mistral}","messages":[],"seed":1}' https://127.0.0.1:$fp/$base{mistral}/chat/completions`;
    like($raw, qr/"extra_forbidden".*"seed"/, 'the fake Mistral refuses seed with its own 422');
}

# ---------------------------------------------------------------- Groq
{
    my ($st, $b, $sent) = ask('groq', n => 1, content => 'one choice');
    is($st, 200, 'groq: n 1 served') or diag($b);
    ($st, $b, $sent) = ask('groq', n => 2, content => 'two choices');
    is($st, 400, 'groq: n 2 refused');
    my $e = json_of($b) // {};
    is($e->{error}{param}, 'n', 'groq: the error names n');
    is($e->{error}{type}, 'invalid_request_error', 'groq: OpenAI error type');
    like($e->{error}{message}, qr/'n'.*groq/, 'groq: the message says why') or diag($b);
    is($sent->{messages}[0]{content}, 'one choice', 'groq: n 2 never reached the provider');

    ($st, $b, $sent) = ask('groq', logprobs => JSON::PP::true, top_logprobs => 1,
        logit_bias => { 1 => 1 }, messages => [{ role => 'user', name => 'bob', content => 'hi' }]);
    is($st, 200, 'groq: logprobs, logit_bias, top_logprobs, name accepted') or diag($b);
    ok(!exists $sent->{$_}, "groq: $_ left out") for qw(logprobs top_logprobs logit_bias);
    ok(!exists $sent->{messages}[0]{name}, 'groq: messages[].name left out');
}

# ---------------------------------------------------------------- Fireworks
{
    my ($st, $b, $sent) = ask('fireworks', max_tokens => 8000);
    is($st, 200, 'fireworks: a non-streamed max_tokens 8000 served') or diag($b);
    is($sent->{max_tokens}, 4096, 'fireworks: clamped to 4096');
    ($st, $b, $sent) = ask('fireworks', max_completion_tokens => 5000);
    is($st, 200, 'fireworks: max_completion_tokens 5000 served') or diag($b);
    is($sent->{max_completion_tokens}, 4096, 'fireworks: clamped to 4096 too');
    ($st, $b, $sent) = ask('fireworks', max_tokens => 8000, stream => JSON::PP::true);
    is($st, 200, 'fireworks: a stream of 8000') or diag($b);
    is($sent->{max_tokens}, 8000, 'fireworks: a stream is not clamped');
    ($st, $b, $sent) = ask('fireworks', max_tokens => 100);
    is($sent->{max_tokens}, 100, 'fireworks: a small bound as it was');
}

# the bound the gateway sets itself (a key's max_tokens cap) is clamped
# too, and never raised: the tenant's cap still holds
{
    my $capped = $t->start_nginx(
        http => "llm_ssl_trusted_certificate @{[ $t->provider_ca ]};\n"
            . 'llm_api_key ' . Digest::SHA::sha256_hex('sk-capped') . " capped max_tokens=8000;\n"
            . 'llm_api_key ' . Digest::SHA::sha256_hex('sk-small') . " small max_tokens=300;\n" . models($fp),
        server => 'location /v1/ { llm_gateway; llm_auth on; }');
    my ($st, $h, $b) = chat($capped, key => 'sk-capped', model => 'p-fireworks');
    is($st, 200, 'fireworks: a key capped at 8000, no max_tokens asked: served') or diag($b);
    is(last_seen('fireworks')->{body}{max_tokens}, 4096, 'fireworks: the cap sent clamped to 4096');
    ($st, $h, $b) = chat($capped, key => 'sk-small', model => 'p-fireworks');
    is(last_seen('fireworks')->{body}{max_tokens}, 300, 'fireworks: a cap under 4096 as it was');
    ($st, $h, $b) = chat($capped, key => 'sk-small', model => 'p-mistral', max_completion_tokens => 200);
    is(last_seen('mistral')->{body}{max_tokens}, 200, 'mistral: a renamed bound stays the one reserved');
}

# ---------------------------------------------------------------- DeepInfra
{
    my @tools = (tools => [{ type => 'function', function => { name => 'f', parameters => { type => 'object' } } }]);
    my ($st, $b, $sent) = ask('deepinfra', @tools, tool_choice => 'auto');
    is($st, 200, 'deepinfra: tool_choice auto served') or diag($b);
    is($sent->{tool_choice}, 'auto', 'deepinfra: auto as it was');
    ($st, $b) = ask('deepinfra', @tools, tool_choice => 'required');
    is($st, 400, 'deepinfra: tool_choice required refused');
    is((json_of($b) // {})->{error}{param}, 'tool_choice', 'deepinfra: the error names tool_choice');
    ($st, $b) = ask('deepinfra', @tools, tool_choice => { type => 'function', function => { name => 'f' } });
    is($st, 400, 'deepinfra: a named function refused');
    ($st, $b, $sent) = ask('deepinfra', max_completion_tokens => 64);
    is($st, 200, 'deepinfra: max_completion_tokens served') or diag($b);
    is($sent->{max_tokens}, 64, 'deepinfra: sent as max_tokens');
    ok(!exists $sent->{max_completion_tokens}, 'deepinfra: no max_completion_tokens');
}

# ---------------------------------------------------------------- stream usage
sub stream {
    my ($name, $usage, %o) = @_;
    my ($st, $h, $b) = chat($gw, key => 'sk-client', model => "p-$name", stream => JSON::PP::true,
        $usage ? (stream_options => { include_usage => JSON::PP::true }) : (), %o);
    is($st, 200, "$name stream (include_usage " . ($usage ? 'asked' : 'not asked') . ')') or diag($b);
    my @ev = sse_events($b);
    is($ev[-1], '[DONE]', "$name: ends in [DONE]");
    pop @ev;
    return map { json_of($_) // { unparsed => $_ } } @ev;
}

sub usage_chunks { grep { ref $_->{choices} eq 'ARRAY' && !@{ $_->{choices} } && $_->{usage} } @_ }

for my $case (['mistral'], ['groq'], ['openrouter'], ['groq', content => 'USAGE_NO_CHOICES']) {
    my ($name, %o) = @$case;
    my $what = $o{content} ? "$name (usage frame without choices)" : $name;
    my @ev = stream($name, 1, %o);
    my @u = usage_chunks(@ev);
    is(scalar @u, 1, "$what: exactly one usage chunk") or diag(explain(\@ev));
    is_deeply($u[0] && { map { $_ => $u[0]{usage}{$_} } qw(prompt_tokens completion_tokens total_tokens) },
        { prompt_tokens => 7, completion_tokens => 3, total_tokens => 10 }, "$what: the provider's counts");
    ok(@u && $ev[-1] == $u[0], "$what: the usage chunk is the last before [DONE]");
    is($u[0] && $u[0]{object}, 'chat.completion.chunk', "$what: a chunk as OpenAI's");
    ok(!(grep { !exists $_->{choices} } @ev), "$what: every event has choices");
    my $text = join '', map { map { $_->{delta}{content} // '' } @{ $_->{choices} // [] } } @ev;
    is($text, "hello from $name", "$what: the content whole");

    @ev = stream($name, 0, %o);
    ok(!(grep { $_->{usage} } @ev), "$what, not asked: no usage");
    ok(!(grep { !exists $_->{choices} || !@{ $_->{choices} } } @ev),
       "$what, not asked: no event without choices") or diag(explain(\@ev));
    $text = join '', map { map { $_->{delta}{content} // '' } @{ $_->{choices} // [] } } @ev;
    is($text, "hello from $name", "$what, not asked: the content whole");
}

# billed as the provider counted, streamed or not
my @lines = grep { /model=p-/ } split /\n/, $t->access_log($gw);
my @bad = grep { / 200 / && !/ptok=7 ctok=3 / } @lines;
ok(@lines >= 25 && !@bad, 'every answer accounted with the provider\'s usage') or diag(scalar(@lines) . "\n" . join "\n", @bad);

# ---------------------------------------------------------------- attribution
{
    my $h = last_seen('openrouter')->{headers};
    is($h->{'http-referer'}, 'https://gateway.example/app', 'openrouter: HTTP-Referer');
    is($h->{'x-openrouter-title'}, 'Our App', 'openrouter: X-OpenRouter-Title from llm_app_title');
    is($h->{'x-title'}, 'Our App', 'openrouter: the legacy X-Title too');
    ok(!exists last_seen('groq')->{headers}{'x-title'}, 'no title to other providers');

    my $gw2 = $t->start_nginx(http => "llm_ssl_trusted_certificate @{[ $t->provider_ca ]};\n" . models($fp2),
        server => 'location /v1/ { llm_gateway; }');
    my ($st, $hh, $b) = chat($gw2, key => 'sk-client', model => 'p-openrouter');
    is($st, 200, 'openrouter without llm_app_url: served') or diag($b);
    $h = last_seen('openrouter', $fp2)->{headers};
    ok(!exists $h->{$_}, "openrouter without llm_app_url: no $_") for qw(http-referer x-openrouter-title x-title);
}

# ---------------------------------------------------------------- nginx -t
for my $case (
    ['llm_app_title "Our App";', qr/"llm_app_title" needs "llm_app_url"/],
    ['llm_app_url https://a.example; llm_app_title "a\nb";',
     qr/"llm_app_title" directive must be one line/],
    ['llm_app_url https://a.example; llm_app_title "";', qr/"llm_app_title" directive must be 1 to 128/],
    ['llm_app_url https://a.example; llm_app_title ' . ('x' x 129) . ';',
     qr/"llm_app_title" directive must be 1 to 128/],
    ['llm_app_url https://a.example; llm_app_title a; llm_app_title b;', qr/"llm_app_title" directive is duplicate/],
    ['llm_app_url ftp://a.example;', qr/"llm_app_url" directive must be an http/],
) {
    my ($failed, $out) = $t->start_nginx(http => "$case->[0]\nllm_model m { backend http://127.0.0.1:1/v1; }",
        server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
    ok($failed, "nginx -t fails: $case->[0]");
    like($out, $case->[1], 'the message names the directive') or diag($out);
}
my ($failed, $out) = $t->start_nginx(
    http => "llm_app_url https://a.example; llm_app_title \"Our App\";\nllm_model m { backend http://127.0.0.1:1/v1; }",
    server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
ok(!$failed, 'llm_app_title with llm_app_url: nginx -t passes') or diag($out);

my $all = $t->error_log($gw) . $t->access_log($gw);
ok(!(grep { index($all, $_->{key}) >= 0 } values %expect), 'no provider key in the logs');

$t->cleanup;
done_testing;
