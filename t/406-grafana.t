# The Grafana dashboard of docs/: every query in it names metrics the
# gateway exports, with labels those metrics have, checked against a
# running gateway's /metrics after a little traffic of each kind.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;
use Prometheus qw(parse_prometheus sum_of);

my $ROOT = $LLMTest::ROOT;
my $FILE = "$ROOT/docs/grafana-dashboard.json";

# PromQL's functions and aggregations, and Grafana's variable queries
my %FUNCS = map { $_ => 1 } qw(
    abs absent absent_over_time acos acosh asin asinh atan atanh avg
    avg_over_time bottomk ceil changes clamp clamp_max clamp_min cos cosh
    count count_over_time count_values day_of_month day_of_week
    day_of_year days_in_month deg delta deriv exp floor group
    histogram_avg histogram_count histogram_fraction histogram_quantile
    histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta
    increase irate label_join label_replace last_over_time limitk
    limit_ratio ln log10 log2 mad_over_time max max_over_time min
    min_over_time minute month pi predict_linear present_over_time quantile
    quantile_over_time rad rate resets round scalar sgn sin sinh sort
    sort_by_label sort_by_label_desc sort_desc sqrt stddev stddev_over_time
    stdvar stdvar_over_time sum sum_over_time tan tanh time timestamp topk
    vector year);
my %KEYWORDS = map { $_ => 1 } qw(and or unless bool offset group_left
    group_right atan2 Inf NaN inf nan);
my $AGGR = qr/\b(?:sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk
    |quantile|count_values|limitk|limit_ratio)\b/x;
my $ID = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
# labels Prometheus adds to every series it scrapes, not the gateway's
my %TARGET = (instance => 1, job => 1);
# Grafana's own variables
my %BUILTIN = map { $_ => 1 } qw(__rate_interval __interval __interval_ms
    __range __range_s __range_ms __dashboard __from __to);

# what a PromQL expression names: metrics, the labels of its matchers
# ([metric, label]), its aggregations' labels ([[labels], [metrics]]),
# the labels of on/ignoring/group_left, the variables it uses, and the
# identifiers that are none of those
sub analyse {
    my ($e) = @_;
    my %a = (metrics => [], matchers => [], groups => [], joins => [],
             vars => [], unknown => []);
    push @{ $a{vars} }, $1 // $2 // $3
        while $e =~ /\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]/g;
    $e =~ s/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/""/g;
    $e =~ s/\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]//g;
    # selectors' matchers, then ranges and subqueries
    while ($e =~ /($ID)?\s*\{([^{}]*)\}/g) {
        my ($metric, $in) = ($1 // '', $2);
        for my $m (split /,/, $in) {
            next unless $m =~ /\S/;
            if ($m =~ /^\s*($ID)\s*(?:=~|!~|!=|=)\s*""\s*$/) {
                push @{ $a{matchers} }, [$metric, $1];
            } else {
                push @{ $a{unknown} }, "matcher '$m'";
            }
        }
    }
    $e =~ s/\{[^{}]*\}/ /g;
    $e =~ s/\[[^\]]*\]/ /g;
    # aggregations: by (...) before or after the parenthesised argument
    while ($e =~ /$AGGR\s*(?:(?:by|without)\s*\(([^()]*)\)\s*)?\(/g) {
        my $labels = $1 // '';
        my ($start, $depth, $i) = (pos($e), 1, pos($e));
        for (; $i < length($e) && $depth; $i++) {
            my $c = substr($e, $i, 1);
            $depth++ if $c eq '(';
            $depth-- if $c eq ')';
        }
        my $arg = substr($e, $start, $i - $start - 1);
        $labels .= ",$1" if substr($e, $i) =~ /^\s*(?:by|without)\s*\(([^()]*)\)/;
        my @l = grep { length } map { s/^\s+|\s+$//gr } split /,/, $labels;
        my @m = $arg =~ /\b(llm_[a-zA-Z0-9_:]*)/g;
        push @{ $a{groups} }, [\@l, \@m] if @l;
        pos($e) = $start;
    }
    while ($e =~ s/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)/ /) {
        my ($kw, $in) = ($1, $2);
        next if $kw eq 'by' || $kw eq 'without';
        push @{ $a{joins} }, grep { length } map { s/^\s+|\s+$//gr } split /,/, $in;
    }
    # numbers and durations are not names
    $e =~ s/(?<![\w.])(?:\d+(?:ms|[smhdwy]))+(?![\w.])/ /g;
    $e =~ s/(?<![\w.])(?:0x[0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])/ /g;
    while ($e =~ /($ID)(\s*\()?/g) {
        my ($name, $call) = ($1, $2);
        if ($call) {
            push @{ $a{unknown} }, "function $name" unless $FUNCS{$name};
        } elsif ($name =~ /^llm_/) {
            push @{ $a{metrics} }, $name;
        } elsif (!$KEYWORDS{$name}) {
            push @{ $a{unknown} }, "name $name";
        }
    }
    return \%a;
}

# the labels of each metric as the module's sources print them: the
# format strings of ngx_http_llm_key(...) and of ngx_http_llm_metrics_count
sub source_labels {
    my %l;
    for my $f (glob "$ROOT/ngx_module/*.c") {
        open my $fh, '<', $f or die "$f: $!";
        my $src = do { local $/; <$fh> };
        $src =~ s/"\s+"//g;    # "a" "b" is "ab"
        while ($src =~ /"(llm_[a-z0-9_]+)\{((?:[^"\\]|\\.)*?)\}/g) {
            my ($name, $in) = ($1, $2);
            $l{$name}{$1} = 1 while $in =~ /([a-zA-Z_]\w*)=\\"/g;
        }
    }
    return \%l;
}

# what is wrong with an expression, against a scrape: a list of sentences
my ($scrape, %series, $src);

sub metric_of {
    my ($name) = @_;
    my $t = $scrape->{types};
    return ($name, '') if $t->{$name} && $t->{$name} ne 'histogram';
    return ($1, $2) if $name =~ /^(.*)_(bucket|sum|count)$/
        && ($t->{$1} // '') eq 'histogram';
    return;
}

sub has_label {
    my ($name, $label) = @_;
    return 1 if $TARGET{$label};
    return $series{$name}{$label} if $series{$name};
    my ($base, $suffix) = metric_of($name) or return 0;
    return 1 if $suffix eq 'bucket' && $label eq 'le';
    return $src->{$base}{$label};
}

sub problems {
    my ($expr, %vars) = @_;
    my $a = analyse($expr);
    my @p = map { "not PromQL: $_" } @{ $a->{unknown} };
    my %used;
    for my $n (@{ $a->{metrics} }) {
        next if $used{$n}++;
        if (($scrape->{types}{$n} // '') eq 'histogram') {
            push @p, "$n is a histogram: it has _bucket, _sum, _count";
        } elsif (!(my @m = metric_of($n))) {
            push @p, "$n is not exported";
        }
    }
    push @p, "a selector without a metric name"
        if grep { $_->[0] eq '' } @{ $a->{matchers} };
    for (@{ $a->{matchers} }) {
        my ($n, $l) = @$_;
        push @p, "$n has no label $l" if $n ne '' && !has_label($n, $l);
    }
    for (@{ $a->{groups} }) {
        my ($labels, $metrics) = @$_;
        for my $n (@$metrics) {
            push @p, map { "$n has no label $_ (by)" }
                grep { !has_label($n, $_) } @$labels;
        }
    }
    for my $l (@{ $a->{joins} }) {
        push @p, "no metric of the expression has the label $l (on)"
            unless grep { has_label($_, $l) } @{ $a->{metrics} };
    }
    push @p, map { "the variable \$$_ is not defined" }
        grep { !$BUILTIN{$_} && !$vars{$_} } @{ $a->{vars} };
    return @p;
}

# a variable's query: label_values(selector, label) or query_result(expr)
sub variable_problems {
    my ($q, %vars) = @_;
    if ($q =~ /^\s*label_values\((.*),\s*($ID)\s*\)\s*$/s) {
        my ($sel, $label) = ($1, $2);
        my @p = problems($sel, %vars);
        my @m = @{ analyse($sel)->{metrics} };
        push @p, "label_values of no metric" unless @m;
        push @p, map { "$_ has no label $label" }
            grep { !has_label($_, $label) } @m;
        return @p;
    }
    return problems($1, %vars) if $q =~ /^\s*query_result\((.*)\)\s*$/s;
    return ("a variable query this test does not know: $q");
}

# ---------------------------------------------------------------- the file

open my $fh, '<', $FILE or die "$FILE: $!";
my $d = eval { JSON::PP->new->decode(do { local $/; <$fh> }) };
ok($d, 'the dashboard is JSON') or diag($@);
$d //= {};
cmp_ok($d->{schemaVersion} // 0, '>=', 36, "schemaVersion $d->{schemaVersion}");
ok((grep { $_->{name} eq 'DS_PROMETHEUS' && $_->{type} eq 'datasource'
           && $_->{pluginId} eq 'prometheus' } @{ $d->{__inputs} // [] }),
   'a DS_PROMETHEUS datasource input');

my (@exprs, %ids, @bad_ds);
my $ds_ok = sub {
    my ($ds, $where) = @_;
    push @bad_ds, $where unless ref $ds eq 'HASH'
        && ($ds->{uid} // '') eq '${DS_PROMETHEUS}';
};
my $walk;
$walk = sub {
    for my $p (@_) {
        $ids{ $p->{id} // 'none' }++;
        $ds_ok->($p->{datasource}, "panel '$p->{title}'")
            unless ($p->{type} // '') eq 'row';
        for my $t (@{ $p->{targets} // [] }) {
            $ds_ok->($t->{datasource}, "a target of '$p->{title}'");
            push @exprs, [$p->{title}, $t->{expr}] if defined $t->{expr};
        }
        $walk->(@{ $p->{panels} // [] });
    }
};
$walk->(@{ $d->{panels} // [] });
cmp_ok(scalar @exprs, '>=', 20, scalar(@exprs) . ' panel queries');
is_deeply(\@bad_ds, [], 'every panel and query reads ${DS_PROMETHEUS}');
is_deeply([grep { $ids{$_} > 1 || $_ eq 'none' } sort keys %ids], [],
          'panel ids are there and unique');

my (%vars, @varq);
for my $v (@{ $d->{templating}{list} // [] }) {
    $vars{ $v->{name} } = 1;
    next unless $v->{type} eq 'query';
    $ds_ok->($v->{datasource}, "variable $v->{name}");
    my $q = ref $v->{query} ? $v->{query}{query} : $v->{query};
    push @varq, [$v->{name}, $q];
    push @varq, [$v->{name}, $v->{definition}]
        if defined $v->{definition} && $v->{definition} ne $q;
}
ok($vars{$_}, "a variable $_") for qw(model backend tenant);
is_deeply(\@bad_ds, [], 'the variables read ${DS_PROMETHEUS} too');

# ---------------------------------------------------------------- traffic

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp;
        llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1 price=0.60/1.80; }
        llm_model mixtral-8x22b { backend http://127.0.0.1:$up/v1 model=big price=2.00/6.00; }
        llm_model broken { backend http://127.0.0.1:$up/s500/v1; }
        llm_router auto cheap=mixtral-8x7b strong=mixtral-8x22b;",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; llm_cache on; }
               location = /metrics { llm_metrics; }',
);
$t->add_tenant($rp, 'a', 'sk-a');
$t->add_tenant($rp, 'b', 'sk-b');

my %t50 = (max_tokens => 50);
my @res = parallel_requests([
    (map { chat_request($gw, %t50, key => 'sk-a', content => "plain $_") } 1 .. 3),
    (map { chat_request($gw, %t50, key => 'sk-b', model => 'mixtral-8x22b',
                        content => "big $_") } 1 .. 2),
    (map { chat_request($gw, %t50, key => 'sk-a', content => "stream $_",
                        stream => JSON::PP::true) } 1 .. 2),
    post_request($gw, '/v1/chat/completions', '{"model": ', key => 'sk-a'),
    chat_request($gw, %t50, key => 'sk-a', model => 'broken'),
    chat_request($gw, %t50, key => 'sk-x'),
    chat_request($gw, %t50, key => 'sk-b', model => 'auto',
                 content => 'What is the capital of France?'),
], timeout => 30);
my %st;
$st{ $_->[0] }++ for @res;
is_deeply(\%st, { 200 => 8, 400 => 1, 401 => 1, 502 => 1 },
          'answers, a bad JSON, a bad key, a bad gateway');

# a miss, stored after its answer went out, then a hit
my @cached = (%t50, key => 'sk-a', content => 'cached', temperature => 0);
is((chat($gw, @cached))[0], 200, 'a cache miss');
ok(wait_until(sub { my $k = $t->redis_cli($rp, 'KEYS', key_prefix(KEY_CACHE) . '*');
                    defined $k && $k =~ /\Q@{[key_prefix(KEY_CACHE)]}/ }, 5),
   'the miss is stored');
is((chat($gw, @cached))[0], 200, 'a cache hit');

my $body;
wait_until(sub {
    (undef, undef, $body) = http_request($gw, 'GET', '/metrics');
    my $m = eval { parse_prometheus($body) } or return 0;
    return sum_of($m, 'llm_requests_total') >= 13
        && sum_of($m, 'llm_cache_requests_total', result => 'hit') >= 1;
}, 5);
$scrape = eval { parse_prometheus($body) };
ok($scrape, 'the metrics parse') or diag($@);
$scrape //= { types => {}, samples => [] };
is(sum_of($scrape, 'llm_requests_total'), 13, 'every request counted');
is(sum_of($scrape, 'llm_cache_requests_total', result => 'hit'), 1, 'the hit counted');
is(sum_of($scrape, 'llm_route_total', reason => 'explicit'), 10,
   'explicit choices counted');
is(sum_of($scrape, 'llm_route_total') - 10, 1, 'the routed one counted');

for my $s (@{ $scrape->{samples} }) {
    $series{ $s->[0] }{$_} = 1 for keys %{ $s->[1] };
    $series{ $s->[0] } //= {};
}
$src = source_labels();

# the sources' labels, which stand in for metrics with no series yet, are
# the scrape's where there are series
for my $name (sort keys %{ $scrape->{types} }) {
    my $h = $scrape->{types}{$name} eq 'histogram';
    my $have = $series{ $h ? "${name}_bucket" : $name } or next;
    my %want = (%{ $src->{$name} // {} }, $h ? (le => 1) : ());
    is_deeply([sort keys %$have], [sort keys %want],
              "$name: the sources' labels are the scrape's");
}

# ---------------------------------------------------------------- the check

# the check itself catches a wrong metric, label, function or variable
for (['sum(rate(lm_requests_total[5m]))', 'a metric without its l'],
     ['sum(rate(llm_request_total[5m]))', 'a metric not exported'],
     ['rate(llm_upstream_ttfb_seconds[5m])', 'a histogram without a suffix'],
     ['histogram_quantile(0.9, sum by (le) (rate(llm_request_duration_seconds_buckets[5m])))',
      'a histogram with a wrong suffix'],
     ['rate(llm_requests_total{modle="x"}[5m])', 'a wrong matcher label'],
     ['sum by (tenant) (rate(llm_requests_total[5m]))', 'a wrong by label'],
     ['sum(rate(llm_errors_total[5m])) by (model)', 'a wrong trailing by label'],
     ['sum by (model) (rte(llm_requests_total[5m]))', 'a wrong function'],
     ['sum(rate(llm_requests_total{model=~"$modle"}[5m]))', 'an undefined variable'],
     ['sum(rate({model="x"}[5m]))', 'no metric name'],
     ['sum(rate(llm_requests_total[5m])) / on (tenant) sum(rate(llm_errors_total[5m]))',
      'a wrong on label']) {
    my ($e, $what) = @$_;
    ok(scalar(problems($e, %vars)), "caught: $what") or diag($e);
}
ok(scalar(variable_problems('label_values(llm_errors_total, model)')),
   'caught: a variable of a label the metric lacks');
is_deeply([problems('histogram_quantile(0.99, sum by (le, backend) '
    . '(rate(llm_upstream_ttfb_seconds_bucket{backend=~"$backend"}[$__rate_interval])))'
    . ' * 3600 / 1e6 > bool 0.5', backend => 1)], [], 'a good one passes');

my %named;
for (@exprs) {
    my ($title, $e) = @$_;
    $named{$_} = 1 for @{ analyse($e)->{metrics} };
    is_deeply([problems($e, %vars)], [], "$title: $e");
}
for (@varq) {
    my ($name, $q) = @$_;
    $named{$_} = 1 for @{ analyse($q =~ s/^\s*\w+\(//r)->{metrics} };
    is_deeply([variable_problems($q, %vars)], [], "variable $name: $q");
}
my %base = map { ((metric_of($_))[0] // $_) => 1 } keys %named;
my @unused = grep { !$base{$_} } sort keys %{ $scrape->{types} };
note("exported, not on the dashboard: @unused") if @unused;
my @quiet = grep { !$series{$_} } sort keys %named;
note("named, no series in this traffic (labels from the sources): @quiet")
    if @quiet;

$t->cleanup;
done_testing;
