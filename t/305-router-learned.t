# The learned router: bench/route-train.c trains deterministically, the
# committed model is what the committed corpus and code train, its test
# split meets the targets, the gateway scores every request exactly as the
# trainer does, max_quality_loss picks the threshold, and nginx -t refuses
# a model of another feature layout.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use File::Compare;
use LLMTest;

my $t = LLMTest->new;
my $root = $LLMTest::ROOT;
my $dir = $t->dir;
my $model = "$root/bench/routing/router.model";
my $bin = $t->build_tool('route-train', 'bench/route-train.c',
                         'ngx_module/ngx_http_llm_features.c',
                         'ngx_module/ngx_http_llm_classifier.c')
    or BAIL_OUT('route-train does not build');

my @corpus = (glob("$root/bench/routing/corpus/*.jsonl"),
              "$root/bench/routing/prompts.tsv",
              "$root/bench/routing/heldout.tsv");

sub train {
    my $o = `$bin @_ @corpus`;
    is($?, 0, "route-train @_ runs") or diag($o);
    return $o;
}

# --- the corpus
my (%lang, %split, %cat, %ids, @test);
for my $f (grep { /\.jsonl$/ } @corpus) {
    open my $fh, '<', $f or die "$f: $!";
    while (<$fh>) {
        my $l = decode_json($_);
        $ids{$l->{id}}++;
        $lang{$l->{lang}}++;
        $split{$l->{split}}++;
        $cat{$l->{category}}++;
        push @test, $l if $l->{split} eq 'test';
    }
}
my $n = 0;
$n += $_ for values %split;
cmp_ok($n + 204 + 85, '>=', 1500, "the corpus has $n prompts besides the "
       . "204 and 85 of the older sets");
is(scalar(grep { $ids{$_} > 1 } keys %ids), 0, 'its ids are unique');
cmp_ok($lang{$_} // 0, '>=', 100, "$_: " . ($lang{$_} // 0) . ' prompts')
    for qw(en fr it de es);
cmp_ok($cat{$_} // 0, '>=', 40, "$_: " . ($cat{$_} // 0) . ' prompts')
    for qw(chat support code longdoc translation extraction reasoning math
           tools multiturn);
cmp_ok($split{$_} // 0, '>=', 200, "$_ split: " . ($split{$_} // 0))
    for qw(train val test);

# --- training is deterministic given a seed, and the committed model is
# what the committed corpus trains
train('-s', 7, '-o', "$dir/a.model");
train('-s', 7, '-o', "$dir/b.model");
is(compare("$dir/a.model", "$dir/b.model"), 0,
   'the same seed trains the same model, byte for byte');
train('-s', 8, '-o', "$dir/c.model");
isnt(compare("$dir/a.model", "$dir/c.model"), 0, 'another seed, another model');
my $out = train('-o', "$dir/d.model");
is(compare("$dir/d.model", $model), 0,
   'bench/routing/router.model is what ./config.sh route-train writes')
    or diag('retrain it: ./config.sh route-train');

# --- the committed model on the test split, with the gateway's own loader
$out = `$bin -v -q 7 -e $model @corpus`;
is($?, 0, 'route-train -e runs');
my ($test) = $out =~ /^(test: .*?)\n  category/ms;
diag($test);
my ($lost) = $test =~ /needs-strong sent to the cheap model:\s+([\d.]+)%/;
my ($wasted) = $test =~ /cheap-is-fine sent to the strong model:\s+([\d.]+)%/;
my ($captured) = $test =~ /saving captured:\s+([\d.]+)% by cost/;
# the targets (docs/routing.md gives today's figures: 8.2%, 24.0% and
# 71.7%)
cmp_ok($lost, '<=', 10, "test split: $lost% of needs-strong prompts sent cheap");
cmp_ok($wasted, '<=', 25, "test split: $wasted% of cheap-is-fine sent strong");
cmp_ok($captured, '>=', 60, "test split: $captured% of the achievable saving");
my ($threshold) = $out =~ /max_quality_loss=7%: threshold ([\d.]+)/;
my %p = map { (split /\t/)[1, 3] } grep { /^p\t/ } split /\n/, $out;

# --- the gateway scores as the trainer does
my $up = $t->start_mock;
my $http = "
    llm_model mixtral-8x7b {
        context_window 32768;
        backend http://127.0.0.1:$up/v1 model=backend-8x7b price=0.60/0.60;
    }
    llm_model mixtral-8x22b {
        context_window 65536;
        backend http://127.0.0.1:$up/v1 model=backend-8x22b price=1.20/1.20;
    }";
my $gw = $t->start_nginx(
    http => "$http llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b "
          . "weights=$model max_quality_loss=7%;",
    server => 'location /v1/ { llm_gateway; }
               client_max_body_size 4m;',
);

my ($same, $agree, $sent) = (0, 0, 0);
my @pick = grep { defined $p{$_->{id}} } @test;
@pick = @pick[map { int($_ * @pick / 60) } 0 .. 59] if @pick > 60;
for my $l (@pick) {
    my %req = (%{ $l->{request} }, model => 'auto', max_tokens => 16);
    my ($st, $h) = post($gw, '/v1/chat/completions', \%req);
    $sent++;
    next unless $st == 200;
    my ($m, $score) = ($h->{'x-llm-route'} // '')
        =~ /^(\S+); reason=complexity; score=([\d.]+)$/ or next;
    my $want = $p{$l->{id}} >= $threshold ? 'mixtral-8x22b' : 'mixtral-8x7b';
    $agree++ if $m eq $want;
    $same++ if abs($score - $p{$l->{id}}) <= 0.005 + 1e-9;
}
cmp_ok($sent, '>=', 50, "$sent test-split prompts sent through the gateway");
is($agree, $sent, 'each routed as the trainer routes it');
is($same, $sent, 'each with the score the trainer gives it');

# the quality knob: 0% loss sends a borderline prompt strong that 50% sends
# cheap; the thresholds come from the model's calibration
my ($lo) = `$bin -q 0 -e $model @corpus` =~ /threshold ([\d.]+)/;
my ($hi) = `$bin -q 50 -e $model @corpus` =~ /threshold ([\d.]+)/;
cmp_ok($lo, '<', $hi, "max_quality_loss 0%: threshold $lo; 50%: $hi");
my ($mid) = grep { $p{$_->{id}} > $lo && $p{$_->{id}} < $hi } @test;
SKIP: {
    skip 'no test prompt between the two thresholds', 2 unless $mid;
    for my $c ([0, 'mixtral-8x22b'], [50, 'mixtral-8x7b']) {
        my $g = $t->start_nginx(
            http => "$http llm_router auto cheap=mixtral-8x7b "
                  . "strong=mixtral-8x22b weights=$model "
                  . "max_quality_loss=$c->[0]%;",
            server => 'location /v1/ { llm_gateway; }
                       client_max_body_size 4m;');
        my ($st, $h) = post($g, '/v1/chat/completions',
            { %{ $mid->{request} }, model => 'auto', max_tokens => 16 });
        like($h->{'x-llm-route'} // '', qr/^\Q$c->[1]\E; reason=complexity/,
             "max_quality_loss=$c->[0]%: $c->[1]");
    }
}

# --- what nginx -t refuses
sub model_with {
    my ($name, $edit) = @_;
    open my $in, '<', $model or die;
    my $text = do { local $/; <$in> };
    $text = $edit->($text);
    open my $o, '>', "$dir/$name" or die;
    print $o $text;
    close $o;
    return "$dir/$name";
}
my $other = model_with('other-layout', sub {
    $_[0] =~ s/^layout v1;hash=16;/layout v1;hash=18;/m; $_[0] });
my $badw = model_with('bad-weight', sub { "$_[0]w 99999999 1\n" });
my $nocal = model_with('no-calibration', sub {
    $_[0] =~ s/^p .*\n//mg; $_[0] });
my $legacy = "$dir/legacy";
open my $fh, '>', $legacy or die;
print $fh "threshold 0.5\n";
close $fh;
my $r = 'llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b';
for my $case (
    ["$r weights=$other;", qr/"llm_router" weights: "\Q$other\E" was trained on the feature layout "v1;hash=18;.*train it again/],
    ["$r weights=$badw;", qr/"llm_router" weights: .* line \d+: "w INDEX WEIGHT" expected/],
    ["$r weights=$nocal max_quality_loss=5%;", qr/"llm_router" max_quality_loss: the model has no calibration/],
    ["$r weights=$legacy max_quality_loss=5%;", qr/"llm_router" max_quality_loss needs the weights= of a learned model/],
    ["$r weights=$model max_quality_loss=60%;", qr/invalid "llm_router" max_quality_loss "max_quality_loss=60%"/],
    ["$r weights=$model max_quality_loss=5;", qr/invalid "llm_router" max_quality_loss/],
    ["$r weights=$model weights=$model;", qr/"llm_router" directive has duplicate "weights"/],
) {
    my ($failed, $o) = $t->start_nginx(http => "$http $case->[0]",
        server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
    ok($failed, 'nginx -t fails');
    like($o, $case->[1], 'and says why') or diag($o);
}
my ($failed) = $t->start_nginx(http => "$http $r weights=$nocal;",
    server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
ok(!$failed, 'without max_quality_loss, the file\'s own threshold serves');

$t->cleanup;
done_testing;
