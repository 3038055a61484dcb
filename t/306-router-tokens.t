# Real tokens: with "tokenizer" in an llm_model, the router's context guard
# and the quota's reservation count the messages' text in the model's own
# tokens (llama.cpp's SPM vocabulary, the one the demo models carry),
# where bytes / 3 is off both ways: digits are a token each, plain English
# some four bytes a token.  And nginx -t checks the file.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IPC::Open2;
use LLMTest;

my $cache = $ENV{LLM_CACHE_DIR} // "$ENV{HOME}/.cache/nginx-llm-gateway";
my $vocab = $ENV{LLM_MODEL_SMALL}
    // "$cache/llama-src/models/ggml-vocab-llama-spm.gguf";
plan skip_all => "no SPM vocabulary at $vocab (./config.sh worker makes it)"
    unless -f $vocab;

my $t = LLMTest->new;
my $bin = $t->build_tool('tok_count', 't/tokenizer/tok_count.c',
                         'ngx_module/ngx_http_llm_tokenizer.c')
    or BAIL_OUT('tok_count does not build');
my $pid = open2(my $from, my $to, $bin, $vocab) or BAIL_OUT('tok_count');
$to->autoflush(1);
sub tokens {
    print $to unpack('H*', $_[0]), "\n";
    my $line = <$from> // die 'tok_count';
    return (split ' ', $line)[0];
}

my $up = $t->start_mock;
my $rp = $t->start_redis;
sub http {
    my ($tok) = @_;
    my $line = $tok ? "tokenizer $vocab;" : '';
    return "llm_redis 127.0.0.1:$rp;
    llm_model mixtral-8x7b {
        context_window 1000; $line
        backend http://127.0.0.1:$up/v1 model=backend-8x7b price=0.60/0.60;
    }
    llm_model mixtral-8x22b {
        context_window 2000; $line
        backend http://127.0.0.1:$up/v1 model=backend-8x22b price=1.20/1.20;
    }
    llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b;";
}
my $server = 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }';
my $real = $t->start_nginx(http => http(1), server => $server);
my $bytes = $t->start_nginx(http => http(0), server => $server);
$t->add_tenant($rp, 'a', 'sk-a');

my $digits = '0123456789' x 130;                  # a token a digit
my $prose = join ' ', ('The committee met on Tuesday and agreed that the '
    . 'new schedule should start in spring.') x 40;
my $huge = '0123456789' x 210;
my ($nd, $np, $nh) = map { tokens($_) } $digits, $prose, $huge;
cmp_ok($nd, '>', 1000 - 40, "1,300 digits are $nd tokens");
cmp_ok($np * 3.5, '<', length $prose,
       length($prose) . " bytes of English are $np tokens");

sub route {
    my ($port, $text) = @_;
    my ($st, $h, $b) = post($port, '/v1/chat/completions',
        { model => 'auto', max_tokens => 16,
          messages => [{ role => 'user', content => $text }] },
        key => 'sk-a');
    return ($st, $h->{'x-llm-route'} // '', $b);
}

my ($st, $route) = route($real, $digits);
is($st, 200, 'digits: answered');
like($route, qr/^mixtral-8x22b; reason=context/,
     "digits: $nd tokens do not fit 8x7B's 1000: the strong model");
(undef, $route) = route($bytes, $digits);
unlike($route, qr/reason=context/,
       'without the tokenizer, bytes / 3 would have sent them cheap');

($st, $route) = route($real, $prose);
is($st, 200, 'prose: answered');
unlike($route, qr/reason=context/,
       "prose: $np tokens fit 8x7B: no context rule");
(undef, $route) = route($bytes, $prose);
like($route, qr/^mixtral-8x22b; reason=context/,
     'without the tokenizer, bytes / 3 would have sent it strong');

my $b;
($st, $route, $b) = route($real, $huge);
is($st, 400, "$nh tokens fit neither model: 400");
like($b, qr/"code":\s*"context_length_exceeded"/, 'context_length_exceeded');
like($b, qr/you requested (at least )?\d+ tokens/, 'with the count');

# the quota's reservation, which a tenant's per-minute limit refuses with
# its size: the model's tokens where there were bytes
$t->add_tenant($rp, 'small', 'sk-small', tpm => 100);
sub reserved {
    my ($port) = @_;
    my ($st, undef, $b) = post($port, '/v1/chat/completions',
        { model => 'mixtral-8x7b', max_tokens => 16,
          messages => [{ role => 'user', content => $prose }] },
        key => 'sk-small');
    is($st, 429, 'a request over the tenant\'s tokens per minute: 429');
    return ($b =~ /it may need (\d+) tokens/)[0];
}
my $with = reserved($real);
my $without = reserved($bytes);
is($without - $with, length($prose) - $np,
   "the reservation, $with tokens, counts the prompt's $np tokens where it "
   . "counted its bytes ($without)");

# nginx -t: a file that is no GGUF, a missing one, a duplicate
my $bad = $t->dir . '/bad.gguf';
open my $fh, '>', $bad or die;
print $fh "not a gguf\n";
close $fh;
for my $case (
    ["tokenizer $bad;", qr/invalid "tokenizer" of "llm_model" "m": .*\Q$bad\E/],
    ["tokenizer /nonexistent.gguf;", qr/invalid "tokenizer" of "llm_model" "m"/],
    ["tokenizer $vocab; tokenizer $vocab;", qr/"tokenizer" is duplicate/],
    ["tokenizer;", qr/invalid number of arguments in "tokenizer"/],
) {
    my ($failed, $out) = $t->start_nginx(
        http => "llm_model m { backend http://127.0.0.1:$up/v1; $case->[0] }",
        server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
    ok($failed, "nginx -t fails: $case->[0]");
    like($out, $case->[1], 'and says why') or diag($out);
}

close $to;
waitpid $pid, 0;
$t->cleanup;
done_testing;
