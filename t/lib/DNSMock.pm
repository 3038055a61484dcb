# A DNS responder for the tests, core Perl only: perl DNSMock.pm PORT FILE.
# UDP on 127.0.0.1:PORT; A queries for a name in FILE ("name address" a
# line, re-read at each query so a test can move a name) get that address
# with a TTL of 1 s; other names get NXDOMAIN, other types an empty answer.
package DNSMock;
use strict;
use warnings;
use IO::Socket::INET;

sub answers {
    my ($file) = @_;
    my %a;
    open my $fh, '<', $file or return {};
    while (<$fh>) {
        my ($n, $ip) = split;
        $a{lc $n} = $ip if $ip;
    }
    return \%a;
}

sub reply {
    my ($q, $file) = @_;
    return unless length $q >= 12;
    my ($id, $flags) = unpack('n2', $q);
    # the question: labels from offset 12, then type and class
    my ($off, @labels) = (12);
    while ($off < length $q) {
        my $len = ord substr($q, $off, 1);
        last if $len == 0;
        push @labels, substr($q, $off + 1, $len);
        $off += 1 + $len;
    }
    return if $off + 5 > length $q;
    my $question = substr($q, 12, $off + 5 - 12);
    my ($type) = unpack('n', substr($q, $off + 1, 2));
    my $name = lc join '.', @labels;
    my $ip = answers($file)->{$name};
    # QR, opcode of the query, AA, RD copied
    my $rflags = 0x8400 | ($flags & 0x0100);
    my @an;
    if (!defined $ip) {
        $rflags |= 3;
    } elsif ($type == 1) {
        @an = (pack('n', 0xc00c) . pack('n2 N n', 1, 1, 1, 4)
            . pack('C4', split /\./, $ip));
    }
    return pack('n6', $id, $rflags, 1, scalar @an, 0, 0) . $question
        . join('', @an);
}

unless (caller) {
    my ($port, $file) = @ARGV;
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $port, Proto => 'udp') or die "dns: bind $port: $!";
    $| = 1;
    print "dns on $port\n";
    while (1) {
        my $peer = $s->recv(my $q, 512) // next;
        my $r = reply($q, $file) // next;
        $s->send($r, 0, $peer);
        print "query ", length $q, " bytes answered\n";
    }
}

1;
