# Hosted providers' errors, as each one sends them: a model retired
# upstream fails over and parks its backend for hours; the request's own
# 403s (context overflow, moderation) reach the client and open no
# circuit; rate limits park on fractional, millisecond and Groq reset
# headers, or a second without any; an error inside a 200 stream is no
# answer to cache; Mistral's error shapes reach the client as OpenAI's.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

plan skip_all => 'openssl not installed' unless `which openssl` =~ /\S/;

my $t = LLMTest->new;
my $d = $t->dir;

my %p = (
    together => 'mistralai/Mixtral-8x7B-Instruct-v0.1',
    fireworks => 'accounts/fireworks/models/mixtral-8x7b-instruct',
    deepinfra => 'mistralai/Mixtral-8x22B-Instruct-v0.1',
    openrouter => 'mistralai/mixtral-8x22b-instruct',
    mistral => 'mistral-small-latest',
    groq => 'llama-3.3-70b-versatile',
);
my %base = %LLMTest::PROVIDER_BASE;
my %expect = LLMTest::provider_expect(\%p);

my $fp = $t->start_providers(\%expect);

# a logical model: its backends in order, the first the cheapest
sub model {
    my ($name, @prov) = @_;
    my $price = 10;
    return "llm_model $name { " . join(' ', map {
        $price += 10;
        "backend https://127.0.0.1:$fp/$base{$_} provider=$_ model=$p{$_} "
            . 'api_key_env=LLMT_KEY_' . uc($_) . " price=0.$price/0.$price;"
    } @prov) . " }";
}

my $rp = $t->start_redis;
$t->add_tenant($rp, 'a', 'sk-a');

my $gw = $t->start_nginx(
    http => join("\n", "llm_ssl_trusted_certificate @{[ $t->provider_ca ]}; llm_app_url https://gateway.example/app;",
        "llm_redis 127.0.0.1:$rp;",
        "llm_breaker failures=3 cooldown=30s;",
        model('retired-groq', qw(groq together)),
        model('retired-fireworks', qw(fireworks deepinfra)),
        model('retired-mistral', qw(mistral together)),
        model('ctx', qw(together deepinfra)),
        model('moderation', qw(openrouter deepinfra)),
        model('auth', qw(fireworks deepinfra)),
        model('frac', qw(together deepinfra)),
        model('none', qw(mistral deepinfra)),
        model('groq-reset', qw(groq deepinfra)),
        model('s503', qw(openrouter deepinfra)),
        model('ms', qw(together deepinfra)),
        model('flex', qw(groq deepinfra)),
        model('credits', qw(openrouter deepinfra)),
        model('meta', qw(openrouter)),
        model('mid', qw(openrouter)),
        model('xgroq', qw(groq)),
        model('echo', qw(groq deepinfra)),
        model('tools', qw(groq deepinfra)),
        model('redirect', qw(together)),
        model('mistral', qw(mistral))),
    server => 'location /v1/ { llm_gateway; }
               location /c/v1/ { llm_gateway; llm_auth on; llm_cache on; llm_cache_policy any; }
               location = /metrics { llm_metrics; }',
);

sub last_seen {
    my ($name) = @_;
    my $out = `curl -s --cacert @{[ $t->provider_ca ]} https://127.0.0.1:$fp/_last/$name`;
    my $j = json_of($out) // {};
    my $m = $j->{body}{messages} // [];
    return @$m ? $m->[-1]{content} : '';
}

sub ask {
    my ($model, $content, %o) = @_;
    return chat($gw, model => $model, content => $content, %o);
}

# a model retired upstream: fail over, then the backend is skipped
for my $case (['retired-groq', 'groq', 'together'], ['retired-fireworks', 'fireworks', 'deepinfra'],
              ['retired-mistral', 'mistral', 'together']) {
    my ($m, $first, $second) = @$case;
    my $tag = "$m-" . int(rand 1e9);
    my ($st, $h, $b) = ask($m, "__retired__ $tag");
    is($st, 200, "$m: a retired model fails over") or diag($b);
    is(json_of($b)->{choices}[0]{message}{content}, "hello from $second", "$m: the second backend answered");
    is(last_seen($first), "__retired__ $tag", "$m: the first was asked");
    ($st, $h, $b) = ask($m, "next $tag");
    is($st, 200, "$m: the next request served");
    is(last_seen($first), "__retired__ $tag", "$m: the retired backend is parked, not asked again");
    is(last_seen($second), "next $tag", "$m: the second serves it");
}
my $err = $t->error_log($gw);
like($err, qr/\[error\].*backend "https:\/\/127\.0\.0\.1:$fp\/groq\/openai\/v1\/chat\/completions" retired model "$p{groq}" \(HTTP 400\)/,
     'an ERROR log line names the backend and the model');
like($err, qr/\[error\].*retired model "\Q$p{fireworks}\E" \(HTTP 404\)/, 'Fireworks\' 404 NOT_FOUND too');

# a request's 403s answer the client and open no circuit (llm_breaker 3)
for my $i (1 .. 5) {
    my ($st, $h, $b) = ask('ctx', "__ctx403__ $i");
    is($st, 403, "context overflow 403 #$i reaches the client") or diag($b);
    like(json_of($b)->{error}{message} // '', qr/max_new_tokens/, "#$i: the provider's message");
    unlike(last_seen('deepinfra'), qr/__ctx403__/, "#$i: no failover burnt on it");
}
{
    my ($st, $h, $b) = ask('ctx', 'after the 403s');
    is($st, 200, 'a normal request after five 403s');
    is(last_seen('together'), 'after the 403s', 'still served by the same backend: its circuit is closed');
}
for my $i (1 .. 4) {
    my ($st, $h, $b) = ask('moderation', "__moderation403__ $i");
    is($st, 403, "moderation 403 #$i reaches the client") or diag($b);
}
{
    my ($st, $h, $b) = ask('moderation', 'clean');
    is($st, 200, 'after four moderation 403s');
    is(last_seen('openrouter'), 'clean', 'OpenRouter still serves: no circuit opened');
}

# a 403 about the key is the backend's: fail over
{
    my ($st, $h, $b) = ask('auth', '__auth403__ k');
    is($st, 200, 'an auth 403 fails over') or diag($b);
    is(last_seen('deepinfra'), '__auth403__ k', 'to the second backend');
}

# rate limits: each parks its backend, so the next request goes elsewhere
for my $case (['frac', 'together', '__429frac__', 'Retry-After: 1.5'],
              ['none', 'mistral', '__429none__', 'no header at all'],
              ['groq-reset', 'groq', '__429groq__', 'x-ratelimit-reset-*'],
              ['s503', 'openrouter', '__503retry__', '503 with Retry-After'],
              ['ms', 'together', '__429ms__', 'retry-after-ms']) {
    my ($m, $first, $mark, $what) = @$case;
    my ($st, $h, $b) = ask($m, "$mark $m");
    is($st, 200, "$what: fails over") or diag($b);
    ($st, $h, $b) = ask($m, "then $m");
    is($st, 200, "$what: next request served");
    is(last_seen($first), "$mark $m", "$what: the limited backend is parked");
    is(last_seen('deepinfra'), "then $m", "$what: the other serves");
}
# the backend's other faults fail over
for my $case (['flex', 'groq', '__flex498__', 'Groq 498'], ['credits', 'openrouter', '__credits402__', '402 credits']) {
    my ($m, $first, $mark, $what) = @$case;
    my ($st, $h, $b) = ask($m, "$mark $m");
    is($st, 200, "$what: fails over") or diag($b);
    is(last_seen('deepinfra'), "$mark $m", "$what: to the second backend");
}

# the park is short: 1.5 s, then the backend is asked again
sleep 2;
{
    my ($st) = ask('frac', 'later');
    is($st, 200, 'after the Retry-After');
    is(last_seen('together'), 'later', 'a fractional Retry-After parked 1.5 s, not hours');
}

# an error inside a 200 stream: not cached, counted broken
for my $case (['mid', 'openrouter', '__midstream_error__'], ['xgroq', 'groq', '__xgroq_error__']) {
    my ($m, $prov, $mark) = @$case;
    my $q = "$mark " . int(rand 1e9);
    my @h = (key => 'sk-a', stream => JSON::PP::true);
    my ($st, $h, $b) = chat($gw, path => '/c/v1/chat/completions', model => $m, content => $q, @h);
    is($st, 200, "$m: the stream began");
    like($b, qr/partial/, "$m: its content relayed");
    my $seen = `curl -s --cacert @{[ $t->provider_ca ]} https://127.0.0.1:$fp/_last/$prov`;
    ($st, $h, $b) = chat($gw, path => '/c/v1/chat/completions', model => $m, content => $q, @h);
    isnt($h->{'x-llm-cache'} // '', 'HIT', "$m: the failed stream was not cached");
    # the log line is written after the answer: waited for
    my $misses = sub { scalar(() = $t->access_log($gw) =~ /model=$m .*cache=MISS/g) };
    wait_until(sub { $misses->() >= 2 }, 3);
    is($misses->(), 2, "$m: both were misses");
}
like($t->error_log($gw), qr/sent an error mid-stream/, 'a mid-stream error is logged');

# a 400 quoting the client's own words about a model parks nothing: a
# tenant's member named "model does not exist" must not retire Groq
for my $i (1 .. 2) {
    my ($st, $h, $b) = ask('echo', "__echo400__ $i");
    is($st, 400, "an echoed 400 #$i reaches the client") or diag($b);
    unlike(last_seen('deepinfra'), qr/__echo400__/, "#$i: no failover on it");
}
{
    my ($st) = ask('echo', 'after the echo');
    is($st, 200, 'a normal request after the echoed 400s');
    is(last_seen('groq'), 'after the echo', 'Groq still serves it: not parked as retired');
}

# an error the request caused, inside streams: four of them open no circuit
# (llm_breaker failures=3)
for my $i (1 .. 4) {
    my ($st, $h, $b) = ask('tools', "__tool_use_failed__ $i", stream => JSON::PP::true);
    is($st, 200, "tool_use_failed stream #$i began");
}
{
    my ($st) = ask('tools', 'after the tool errors', stream => JSON::PP::true);
    is($st, 200, 'a normal stream after them');
    is(last_seen('groq'), 'after the tool errors', 'Groq still serves: the request\'s errors opened no circuit');
}
like($t->error_log($gw), qr/sent an error mid-stream, caused by the request/,
     'logged as the request\'s');

# a normal stream on the same location is cached: the check above means something
{
    my $q = 'cache me ' . int(rand 1e9);
    my @h = (key => 'sk-a', stream => JSON::PP::true, path => '/c/v1/chat/completions', model => 'redirect');
    chat($gw, content => $q, @h);
    my ($st, $h) = chat($gw, content => $q, @h);
    is($h->{'x-llm-cache'}, 'HIT', 'a whole stream is cached');
}

# a silently redirected model
{
    my ($st, $h, $b) = ask('redirect', '__redirect_model__');
    is($st, 200, 'a redirected model still answers');
    like($t->error_log($gw), qr/\[warn\].*answered for model "mistralai\/Mistral-Small-24B-Instruct-2501", asked for "\Q$p{together}\E"/,
         'the other model is logged');
}

# Mistral's shapes, in OpenAI's
{
    my ($st, $h, $b) = ask('mistral', '__mistral422__');
    is($st, 422, 'Mistral 422 passes on');
    my $e = json_of($b)->{error};
    ok($e && !ref $e->{message}, 'as {"error":{...}} with a string message') or diag($b);
    is($e->{message}, 'Extra inputs are not permitted', 'the detail\'s text');
    is($e->{param}, 'stream_options', 'the field');
    is($e->{code}, 'extra_forbidden', 'the detail\'s type');
    like($h->{'content-type'}, qr/application\/json/, 'JSON');
    ok(!exists json_of($b)->{object}, 'not Mistral\'s top level');

    ($st, $h, $b) = ask('mistral', '__mistral400__');
    is($st, 400, 'Mistral 400');
    $e = json_of($b)->{error};
    is($e->{message}, 'Invalid temperature', 'message');
    is($e->{type}, 'invalid_request_error', 'type');
    is($e->{param}, 'temperature', 'param');
    ok(exists $e->{code} && !defined $e->{code}, 'code null');
}

# a body that is not JSON, and one in OpenAI's shape already
{
    my ($st, $h, $b) = ask('mistral', '__html400__');
    is($st, 400, 'an HTML 400 passes on');
    is(json_of($b)->{error}{message}, 'The model backend returned HTTP 400.', 'as a JSON error') or diag($b);
    like($h->{'content-type'}, qr/application\/json/, 'typed JSON');

    ($st, $h, $b) = ask('meta', '__meta400__');
    is($st, 400, 'OpenRouter 400');
    is(json_of($b)->{error}{metadata}{provider_name}, 'X', 'OpenAI\'s shape passes as it is, metadata kept');
}

# the metrics
{
    my ($st, $h, $b) = http_request($gw, 'GET', '/metrics');
    like($b, qr/^llm_backend_retired_total\{backend="127\.0\.0\.1:$fp"\} [3-9]/m, 'llm_backend_retired_total');
    like($b, qr/^llm_backend_model_mismatch_total\{backend="127\.0\.0\.1:$fp"\} [1-9]/m,
         'llm_backend_model_mismatch_total');
    like($b, qr/^llm_backend_attempts_total\{backend="127\.0\.0\.1:$fp",outcome="broken"\} [2-9]/m,
         'the failed streams counted broken');
}

$t->cleanup;
done_testing;
