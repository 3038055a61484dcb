# Long prompts end to end: real llama-server workers with the models'
# context windows (32768 and 65536 tokens) behind the router.  The counts
# are the large worker's own tokenizer's (POST /tokenize).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

plan skip_all => 'LLAMA_SERVER, LLM_MODEL_SMALL or LLM_MODEL_LARGE unset'
    unless $ENV{LLAMA_SERVER} && $ENV{LLM_MODEL_SMALL} && $ENV{LLM_MODEL_LARGE};

my $t = LLMTest->new;
my $small = $t->start_llama($ENV{LLM_MODEL_SMALL}, 'tiny-8x7b', 32768);
my $large = $t->start_llama($ENV{LLM_MODEL_LARGE}, 'tiny-8x22b', 65536);
# as ./config.sh run: each model counts its own tokens, the learned router
my $model = "$LLMTest::ROOT/bench/routing/router.model";
my $gw = $t->start_nginx(
    http => "llm_model mixtral-8x7b { context_window 32768;
                 tokenizer $ENV{LLM_MODEL_SMALL};
                 backend http://127.0.0.1:$small/v1 model=tiny-8x7b; }
             llm_model mixtral-8x22b { context_window 65536;
                 tokenizer $ENV{LLM_MODEL_LARGE};
                 backend http://127.0.0.1:$large/v1 model=tiny-8x22b; }
             llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b
                        weights=$model max_quality_loss=7%;",
    # prompt processing of 38K tokens takes a minute or more
    server => 'location /v1/ { llm_gateway; llm_first_byte_timeout 900s;
                   llm_total_timeout 1800s; }',
);

sub tokens_of {
    my ($port, $text) = @_;
    my ($st, $h, $b) = http_request($port, 'POST', '/tokenize',
        { 'Content-Type' => 'application/json' },
        JSON::PP->new->encode({ content => $text }), timeout => 120);
    my $j = json_of($b) or return -1;
    return scalar @{ $j->{tokens} || [] };
}

# words and numbers
sub text_of {
    my ($bytes) = @_;
    my @w = qw(the quiet river runs past old stone houses where people walk
               in the morning light);
    my ($s, $i) = ('', 0);
    while (length $s < $bytes) {
        $s .= $w[$i % @w] . ' ';
        $s .= (1000 + $i * 7) . ' ' if $i % 5 == 0;
        $i++;
    }
    return $s;
}

my $long = text_of(113_000);
my $ntok = tokens_of($large, $long);
cmp_ok($ntok, '>', 33_000, "long prompt: $ntok tokens, over 33K");
cmp_ok($ntok, '<', 60_000, 'long prompt: under 60K');

my ($st, $h, $b) = chat($gw, model => 'auto', content => $long,
    max_tokens => 4, timeout => 1800);
is($st, 200, '38K tokens: 200') or diag(substr($b // '', 0, 500));
like($h->{'x-llm-route'} // '', qr/^mixtral-8x22b; reason=context/,
    '38K tokens: routed to 8x22b for its context');
my $j = json_of($b) // {};
is($j->{object}, 'chat.completion', '38K tokens: a chat.completion');
is($j->{model}, 'tiny-8x22b', '38K tokens: served by the large worker');
# the chat template adds its own few tokens
my $pt = $j->{usage}{prompt_tokens} // 0;
ok($pt >= $ntok && $pt < $ntok + 64, "38K tokens: prompt_tokens $pt");

($st, $h, $b) = chat($gw, model => 'auto', content => $long,
    max_tokens => 4, stream => JSON::PP::true, timeout => 1800);
is($st, 200, '38K tokens streamed: 200');
like($h->{'x-llm-route'} // '', qr/^mixtral-8x22b; reason=context/,
    '38K tokens streamed: routed to 8x22b');
my @ev = sse_events($b);
is($ev[-1], '[DONE]', '38K tokens streamed: ends with [DONE]');

# a 20K-token prompt fits the small worker's 32K slot (asked of it by
# name: the router's choice for it is the complexity rule's, not the
# context's)
my $mid = 'Summarize this. ' . text_of(60_000);
my $mtok = tokens_of($large, $mid);
cmp_ok($mtok, '>', 15_000, "20K prompt: $mtok tokens");
cmp_ok($mtok, '<', 30_000, '20K prompt: under the small window');
($st, $h, $b) = chat($gw, model => 'mixtral-8x7b', content => $mid,
    max_tokens => 4, timeout => 1800);
is($st, 200, '20K tokens on 8x7B: 200') or diag(substr($b // '', 0, 500));
is((json_of($b) // {})->{model}, 'tiny-8x7b', '20K tokens: the small worker');
($st, $h) = chat($gw, model => 'auto', content => $mid, max_tokens => 4,
    timeout => 1800);
is($st, 200, '20K tokens through the router: 200');
like($h->{'x-llm-route'} // '', qr/; reason=complexity; score=/,
     '20K tokens: fits both windows, the complexity rule decides')
    and diag("20K tokens: $h->{'x-llm-route'}");

my $huge = ('All happy families are alike; each unhappy family is unhappy '
    . 'in its own way. ') x 4000;
cmp_ok(length $huge, '>', 300_000, 'huge prompt: over 300 KB');
($st, $h, $b) = chat($gw, model => 'auto', content => $huge, max_tokens => 4,
    timeout => 120);
is($st, 400, 'over 64K tokens: 400');
my $e = json_of($b) // {};
is($e->{error}{code}, 'context_length_exceeded', 'over 64K: context_length_exceeded');
# the line is written when the connection closes; give a loaded machine
# time
ok(wait_until(sub { $t->access_log($gw) =~ /^[^\n]* 400 [^\n]*backend=-/m },
        30),
    'over 64K: no backend reached') or diag($t->access_log($gw));

$t->cleanup;
done_testing;
