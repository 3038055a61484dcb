# A strict parser of the Prometheus text exposition format (0.0.4), for the
# tests: it dies on anything the format does not allow, and checks that
# histograms are whole (cumulative buckets, +Inf equal to _count).
package Prometheus;
use strict;
use warnings;
use Exporter 'import';
our @EXPORT_OK = qw(parse_prometheus sum_of);

my $NAME = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
my $LABEL = qr/[a-zA-Z_][a-zA-Z0-9_]*/;
my $NUM = qr/[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN/;

sub _labels {
    my ($s, $line) = @_;
    my %l;
    while (length $s) {
        $s =~ s/^($LABEL)="((?:[^"\\\n]|\\[\\"n])*)"// or die "bad label set at '$s' in: $line\n";
        my ($k, $v) = ($1, $2);
        die "duplicate label $k in: $line\n" if exists $l{$k};
        $v =~ s/\\n/\n/g;
        $v =~ s/\\(["\\])/$1/g;
        $l{$k} = $v;
        last unless length $s;
        $s =~ s/^,// or die "labels not separated by a comma in: $line\n";
    }
    return \%l;
}

# returns { types => {name => type}, samples => [[name, {labels}, value]] }
sub parse_prometheus {
    my ($text) = @_;
    die "the exposition does not end in a newline\n" unless $text =~ /\n\z/;
    my (%type, %help, @samples, %seen);
    for my $line (split /\n/, $text) {
        next if $line eq '';
        if ($line =~ /^#\s*(HELP|TYPE)\s+($NAME)\s*(.*)$/) {
            my ($kind, $name, $rest) = ($1, $2, $3);
            if ($kind eq 'TYPE') {
                die "bad type '$rest' in: $line\n"
                    unless $rest =~ /^(counter|gauge|histogram|summary|untyped)$/;
                die "TYPE of $name given twice\n" if $type{$name};
                die "TYPE of $name after its samples\n" if $seen{$name};
                $type{$name} = $rest;
            } else {
                die "HELP of $name given twice\n" if exists $help{$name};
                $help{$name} = $rest;
            }
            next;
        }
        next if $line =~ /^#/;
        $line =~ /^($NAME)(?:\{(.*)\})?\s+($NUM)(?:\s+-?\d+)?$/ or die "bad sample line: $line\n";
        my ($name, $ls, $v) = ($1, $2 // '', $3);
        my $labels = _labels($ls, $line);
        my $base = $name;
        if ($name =~ /^(.*)_(bucket|sum|count)$/ && ($type{$1} // '') eq 'histogram') {
            $base = $1;
            die "a histogram bucket without le: $line\n" if $2 eq 'bucket' && !defined $labels->{le};
        }
        $seen{$base} = 1;
        my $t = $type{$base} // 'untyped';
        die "a counter below zero: $line\n" if $t eq 'counter' && $v < 0;
        my $id = $name . '{' . join(',', map { "$_=$labels->{$_}" } sort keys %$labels) . '}';
        die "sample given twice: $line\n" if $seen{"s:$id"}++;
        push @samples, [$name, $labels, $v + 0];
    }
    # histograms: cumulative buckets ending in +Inf == _count
    my %h;
    for my $s (@samples) {
        my ($name, $l, $v) = @$s;
        next unless $name =~ /^(.*)_(bucket|count)$/ && ($type{$1} // '') eq 'histogram';
        my %k = %$l;
        my $le = delete $k{le};
        my $id = $1 . '{' . join(',', map { "$_=$k{$_}" } sort keys %k) . '}';
        if ($2 eq 'count') { $h{$id}{count} = $v } else { push @{ $h{$id}{b} }, [$le, $v] }
    }
    for my $id (keys %h) {
        my @b = sort { ($a->[0] eq '+Inf' ? 9e99 : $a->[0]) <=> ($b->[0] eq '+Inf' ? 9e99 : $b->[0]) } @{ $h{$id}{b} || [] };
        die "histogram $id has no +Inf bucket\n" unless @b && $b[-1][0] eq '+Inf';
        for my $i (1 .. $#b) {
            die "histogram $id buckets are not cumulative\n" if $b[$i][1] < $b[$i - 1][1];
        }
        die "histogram $id: +Inf bucket != _count\n" unless defined $h{$id}{count} && $b[-1][1] == $h{$id}{count};
    }
    return { types => \%type, samples => \@samples };
}

# the sum of the samples named $name whose labels match %want
sub sum_of {
    my ($m, $name, %want) = @_;
    my $sum = 0;
    S: for my $s (@{ $m->{samples} }) {
        next unless $s->[0] eq $name;
        for (keys %want) { next S unless ($s->[1]{$_} // '') eq $want{$_} }
        $sum += $s->[2];
    }
    return $sum;
}

1;
