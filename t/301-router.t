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

# the model id the backend answered with
sub served_by {
    my ($want) = @_;
    return sub {
        is((json_of($_[3]) // {})->{model}, $want, "$_[0]: served by $want");
    };
}

# the score in x-llm-route
sub score_of { (($_[0]{'x-llm-route'} // '') =~ /score=([\d.]+)/)[0] }

$t->add_tenant($rp, 'c', 'sk-c', models => 'mixtral-8x7b,auto');
$t->add_tenant($rp, 'f', 'sk-f', force_model => 'mixtral-8x22b');
$t->add_tenant($rp, 'n', 'sk-n', models => 'mixtral-8x7b');
$t->add_tenant($rp, 'o', 'sk-o', models => 'something-else');
$t->add_tenant($rp, 'al', 'sk-al', models => 'mixtral-8x7b');

cases({ port => $gw, key => 'sk-a', chat => { max_tokens => 20 } },
    # aliases and explicit models
    { name => 'explicit model',
      chat => { model => 'mixtral-8x7b', content => 'hello' },
      header => { 'x-llm-route' => 'mixtral-8x7b; reason=explicit' },
      check => served_by('backend-8x7b') },
    { name => 'Together\'s id is an alias, resolved to the logical model',
      chat => { model => 'mistralai/Mixtral-8x7B-Instruct-v0.1',
                content => 'hello' },
      status => 200,
      header => { 'x-llm-route' => 'mixtral-8x7b; reason=explicit' },
      check => served_by('backend-8x7b') },
    { name => 'Mistral\'s 8x22B id',
      chat => { model => 'open-mixtral-8x22b', content => 'hello' },
      header => { 'x-llm-route' => qr/^mixtral-8x22b; / } },
    { name => 'an unknown name is still 404',
      chat => { model => 'mixtral-8x7b-typo', content => 'hello' },
      status => 404 },

    # complexity
    { name => 'auto: a simple question: the cheap model',
      chat => { model => 'auto', content => 'What is the capital of France?' },
      status => 200,
      header => { 'x-llm-route' => 'mixtral-8x7b; reason=complexity; score=0.00' },
      check => served_by('backend-8x7b') },
    { name => 'auto: a proof: the strong model',
      chat => { model => 'auto',
                content => 'Prove that there are infinitely many primes, step by step.' },
      header => { 'x-llm-route' => qr/^mixtral-8x22b; reason=complexity; score=(\d\.\d\d)$/ },
      check => sub {
          my ($name, $st, $h) = @_;
          my $score = score_of($h);
          cmp_ok($score, '>=', 0.15, "$name: score $score over the threshold");
          served_by('backend-8x22b')->(@_);
      } },
    { name => 'auto: tools: the strong model',
      chat => { model => 'auto', content => 'What is the weather in Paris?',
                tools => [{ type => 'function', function => { name => 'weather',
                    parameters => { type => 'object', properties => {} } } }] },
      header => { 'x-llm-route' => qr/^mixtral-8x22b; reason=complexity/ } },
    { name => 'auto: code: the strong model',
      chat => { model => 'auto',
                content => 'Write a Python function that merges two sorted lists.' },
      header => { 'x-llm-route' => qr/^mixtral-8x22b; / } },

    # context windows: 1000 and 2000 tokens here, bytes / 3 per prompt token
    { name => 'auto: too long for the cheap model: the strong one',
      chat => { model => 'auto', content => 'hello ' x 500 },
      header => { 'x-llm-route' => 'mixtral-8x22b; reason=context' } },
    { name => 'auto: too long for both',
      chat => { model => 'auto', content => 'hello ' x 1100 },
      status => 400, code => 'context_length_exceeded', param => 'messages' },

    # tenant policy
    { name => 'a tenant allowed only the cheap model gets it', key => 'sk-c',
      chat => { model => 'auto',
                content => 'Prove the Pythagorean theorem step by step.' },
      header => { 'x-llm-route' => 'mixtral-8x7b; reason=tenant_policy' } },
    { name => 'and a prompt too long for it is refused', key => 'sk-c',
      chat => { model => 'auto', content => 'hello ' x 500 },
      status => 400, code => 'context_length_exceeded' },
    { name => 'a forced model', key => 'sk-f',
      chat => { model => 'auto', content => 'hi' },
      header => { 'x-llm-route' => 'mixtral-8x22b; reason=tenant_forced' } },
    { name => '"auto" needs no place in the list: it picks among the allowed',
      key => 'sk-n', chat => { model => 'auto', content => 'hi' },
      header => { 'x-llm-route' => 'mixtral-8x7b; reason=tenant_policy' } },
    { name => 'a tenant allowed neither model', key => 'sk-o',
      chat => { model => 'auto', content => 'hi' }, status => 404 },
    { name => 'an alias of an allowed model is allowed', key => 'sk-al',
      chat => { model => 'mistralai/Mixtral-8x7B-Instruct-v0.1',
                content => 'hi' },
      status => 200 },
    { name => 'an alias of a model not allowed is not', key => 'sk-al',
      chat => { model => 'open-mixtral-8x22b', content => 'hi' },
      status => 404 },
);

# --- budget: at 80% of the day's budget, the cheap model
my $day = strftime('%Y%m%d', gmtime);
$t->add_tenant($rp, 'b', 'sk-b', budget_day_usd => '1.00');
$t->redis_cli($rp, 'HSET', rkey(KEY_SPEND_DAY, 'b', $day), 'settled', 850000);
my $hard = 'Prove that the square root of 2 is irrational, step by step.';
cases({ port => $gw, key => 'sk-b', path => '/q/v1/chat/completions',
        chat => { model => 'auto', content => $hard, max_tokens => 20 } },
    { name => 'budget tenant: first request', status => 200,
      header => { 'x-llm-route' => qr/^mixtral-8x22b; reason=complexity/ } },
    { name => 'budget tenant: at 85% spent: the cheap model',
      header => { 'x-llm-route' => 'mixtral-8x7b; reason=budget' } },
    { name => 'budget tenant: at 10% spent, seen', chat => { content => 'hi' },
      before => sub {
          $t->redis_cli($rp, 'HSET', rkey(KEY_SPEND_DAY, 'b', $day),
              'settled', 100000);
      } },
    { name => 'budget tenant: at 10%: complexity again',
      header => { 'x-llm-route' => qr/^mixtral-8x22b; reason=complexity/ } },
);

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
cases({ port => $gw2 },
    { name => 'no max_tokens (the prompt alone must fit), a weights file and '
          . 'a router named "smart"',
      chat => { model => 'smart', content => $hard },
      status => 200,
      header => { 'x-llm-route' => qr/^mixtral-8x7b; reason=complexity/ } },
);

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
