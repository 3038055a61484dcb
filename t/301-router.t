# Model choice: aliases, the router model and each of its rules in order
# (tenant policy, context windows, budget, complexity), the x-llm-route
# header and log variables, and router configuration errors.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(strftime);
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $http = "llm_redis 127.0.0.1:$rp;
    llm_model mixtral-8x7b {
        context_window 1000;
        alias mistralai/Mixtral-8x7B-Instruct-v0.1 open-mixtral-8x7b;
        backend http://127.0.0.1:$up/v1 model=backend-8x7b price=0.70/0.70;
    }
    llm_model mixtral-8x22b {
        context_window 2000;
        alias open-mixtral-8x22b;
        backend http://127.0.0.1:$up/v1 model=backend-8x22b price=2.00/6.00;
    }";
my $gw = $t->start_nginx(
    http => "$http llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b;",
    server => 'location /v1/ { llm_gateway; llm_auth on; }
               location /q/v1/ { llm_gateway; llm_auth on; llm_quota on;
                                 llm_default_max_tokens 50; }',
);
$t->add_tenant($rp, 'a', 'sk-a');

sub chat {
    my ($model, $content, %o) = @_;
    my $key = delete $o{key} // 'sk-a';
    my $path = delete $o{path} // '/v1';
    my ($st, $h, $b) = http_request($gw, 'POST', "$path/chat/completions",
        { 'Content-Type' => 'application/json', Authorization => "Bearer $key" },
        encode_json({ model => $model, max_tokens => 20,
                      messages => [{ role => 'user', content => $content }], %o }));
    return ($st, $h, json_of($b) // {});
}

# --- aliases and explicit models
my ($st, $h, $j) = chat('mixtral-8x7b', 'hello');
is($h->{'x-llm-route'}, 'mixtral-8x7b; reason=explicit', 'explicit model: route header');
is($j->{model}, 'backend-8x7b', 'the backend\'s model id went upstream');
($st, $h, $j) = chat('mistralai/Mixtral-8x7B-Instruct-v0.1', 'hello');
is($st, 200, 'Together\'s id is an alias');
is($h->{'x-llm-route'}, 'mixtral-8x7b; reason=explicit', 'alias resolved to the logical model');
is($j->{model}, 'backend-8x7b', 'and to its backend\'s id');
($st, $h) = chat('open-mixtral-8x22b', 'hello');
like($h->{'x-llm-route'}, qr/^mixtral-8x22b; /, 'Mistral\'s 8x22B id');
($st) = chat('mixtral-8x7b-typo', 'hello');
is($st, 404, 'an unknown name is still 404');

# --- complexity
($st, $h, $j) = chat('auto', 'What is the capital of France?');
is($st, 200, 'auto: 200');
is($h->{'x-llm-route'}, 'mixtral-8x7b; reason=complexity; score=0.00',
   'a simple question: the cheap model');
is($j->{model}, 'backend-8x7b', 'served by the cheap backend');
($st, $h, $j) = chat('auto', 'Prove that there are infinitely many primes, step by step.');
like($h->{'x-llm-route'}, qr/^mixtral-8x22b; reason=complexity; score=(\d\.\d\d)$/,
     'a proof: the strong model');
my ($score) = ($h->{'x-llm-route'} // '') =~ /score=([\d.]+)/;
cmp_ok($score, '>=', 0.15, "score $score over the threshold");
is($j->{model}, 'backend-8x22b', 'served by the strong backend');
($st, $h) = chat('auto', 'What is the weather in Paris?',
    tools => [{ type => 'function', function => { name => 'weather',
        parameters => { type => 'object', properties => {} } } }]);
like($h->{'x-llm-route'}, qr/^mixtral-8x22b; reason=complexity/, 'tools: the strong model');
($st, $h) = chat('auto', 'Write a Python function that merges two sorted lists.');
like($h->{'x-llm-route'}, qr/^mixtral-8x22b; /, 'code: the strong model');

# --- context windows: 1000 and 2000 tokens here, bytes / 3 per prompt token
($st, $h) = chat('auto', 'hello ' x 500);
is($h->{'x-llm-route'}, 'mixtral-8x22b; reason=context',
   'too long for the cheap model: the strong one');
($st, $h, $j) = chat('auto', 'hello ' x 1100);
is($st, 400, 'too long for both: 400');
is($j->{error}{code}, 'context_length_exceeded', 'context_length_exceeded');
is($j->{error}{param}, 'messages', 'param messages');

# --- tenant policy
$t->add_tenant($rp, 'c', 'sk-c', models => 'mixtral-8x7b,auto');
($st, $h) = chat('auto', 'Prove the Pythagorean theorem step by step.', key => 'sk-c');
is($h->{'x-llm-route'}, 'mixtral-8x7b; reason=tenant_policy',
   'a tenant allowed only the cheap model gets it');
($st, $h, $j) = chat('auto', 'hello ' x 500, key => 'sk-c');
is($st, 400, 'and a prompt too long for it is refused');
is($j->{error}{code}, 'context_length_exceeded', 'with context_length_exceeded');
$t->add_tenant($rp, 'f', 'sk-f', force_model => 'mixtral-8x22b');
($st, $h) = chat('auto', 'hi', key => 'sk-f');
is($h->{'x-llm-route'}, 'mixtral-8x22b; reason=tenant_forced', 'a forced model');
$t->add_tenant($rp, 'n', 'sk-n', models => 'mixtral-8x7b');
($st, $h, $j) = chat('auto', 'hi', key => 'sk-n');
is($h->{'x-llm-route'}, 'mixtral-8x7b; reason=tenant_policy',
   '"auto" needs no place in the list: it picks among the allowed');
$t->add_tenant($rp, 'o', 'sk-o', models => 'something-else');
($st, $h, $j) = chat('auto', 'hi', key => 'sk-o');
is($st, 404, 'a tenant allowed neither model: 404');
$t->add_tenant($rp, 'al', 'sk-al', models => 'mixtral-8x7b');
($st) = chat('mistralai/Mixtral-8x7B-Instruct-v0.1', 'hi', key => 'sk-al');
is($st, 200, 'an alias of an allowed model is allowed');
($st) = chat('open-mixtral-8x22b', 'hi', key => 'sk-al');
is($st, 404, 'an alias of a model not allowed is not');

# --- budget: at 80% of the day's budget, the cheap model
my $day = strftime('%Y%m%d', gmtime);
$t->add_tenant($rp, 'b', 'sk-b', budget_day_usd => '1.00');
$t->redis_cli($rp, 'HSET', rkey(KEY_SPEND_DAY, 'b', $day), 'settled', 850000);
my $hard = 'Prove that the square root of 2 is irrational, step by step.';
($st, $h) = chat('auto', $hard, key => 'sk-b', path => '/q/v1');
is($st, 200, 'budget tenant: admitted');
like($h->{'x-llm-route'}, qr/^mixtral-8x22b; reason=complexity/,
     'first request: this worker has not seen the spend yet');
($st, $h) = chat('auto', $hard, key => 'sk-b', path => '/q/v1');
is($h->{'x-llm-route'}, 'mixtral-8x7b; reason=budget', 'at 85% spent: the cheap model');
$t->redis_cli($rp, 'HSET', rkey(KEY_SPEND_DAY, 'b', $day), 'settled', 100000);
chat('auto', 'hi', key => 'sk-b', path => '/q/v1');
($st, $h) = chat('auto', $hard, key => 'sk-b', path => '/q/v1');
like($h->{'x-llm-route'}, qr/^mixtral-8x22b; reason=complexity/, 'at 10%: complexity again');

like($t->access_log($gw), qr/route=budget score=-/, '$llm_route in the log');
like($t->access_log($gw), qr/route=complexity score=0\.\d\d/, '$llm_route_score in the log');

# --- weights from a file
my $wf = $t->dir . '/weights';
open my $fh, '>', $wf or die;
print $fh "# all cheap unless it needs tools\nthreshold 0.9\ntools 1.0\n";
close $fh;
my $gw2 = $t->start_nginx(
    http => "$http llm_router smart cheap=mixtral-8x7b strong=mixtral-8x22b weights=$wf;",
    server => 'location /v1/ { llm_gateway; }',
);
($st, $h) = http_request($gw2, 'POST', '/v1/chat/completions',
    { 'Content-Type' => 'application/json' },
    encode_json({ model => 'smart', messages => [{ role => 'user', content => $hard }] }));
is($st, 200, 'no max_tokens: the prompt alone must fit');
like($h->{'x-llm-route'}, qr/^mixtral-8x7b; reason=complexity/, 'a weights file and a router named "smart"')
    or diag("$st " . explain($h));

# --- configuration errors
for my $case (
    ["$http llm_router auto cheap=mixtral-8x7b strong=nope;", qr/"llm_router" names an unknown model/],
    ["$http llm_router auto cheap=mixtral-8x7b;", qr/"llm_router" needs cheap=MODEL and strong=MODEL/],
    ["$http llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b weights=/nonexistent;", qr/"llm_router" weights: cannot open/],
    ["$http llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b budget=150%;", qr/invalid "llm_router" budget/],
    ["$http llm_router mixtral-8x7b cheap=mixtral-8x7b strong=mixtral-8x22b;", qr/"llm_router" "mixtral-8x7b" is also an "llm_model"/],
    ["$http llm_model other { alias open-mixtral-8x7b; backend http://127.0.0.1:1/v1; }", qr/"alias" "open-mixtral-8x7b" of "llm_model" "other" already names a model/],
) {
    my ($failed, $out) = $t->start_nginx(http => $case->[0],
        server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
    ok($failed, 'nginx -t fails');
    like($out, $case->[1], 'message names the directive') or diag($out);
}
open $fh, '>', $wf or die;
print $fh "colour 1\n";
close $fh;
my ($failed, $out) = $t->start_nginx(
    http => "$http llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b weights=$wf;",
    server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
like($out, qr/unknown feature "colour"/, 'a bad weights file fails nginx -t');

$t->cleanup;
done_testing;
