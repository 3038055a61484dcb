# llm_redis with a host name, resolved through nginx's resolver (a DNS
# responder of the test's own, t/lib/DNSMock.pm): requests are served, a
# name that does not resolve is a 503 with the name in the log, the
# gateway follows the name to another address after a reconnect, and over
# TLS the name is what the certificate is verified against.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $dns = $t->start_dns('redis.test' => '127.0.0.1');

# the responder itself, before nginx relies on it
is(LLMTest::dns_query($dns, 'redis.test'), '127.0.0.1',
    'the DNS responder answers redis.test with 127.0.0.1');
is(LLMTest::dns_query($dns, 'nowhere.test'), '',
    'and NXDOMAIN for another name');

my $rp = $t->start_redis;
$t->add_tenant($rp, 'acme', 'sk-acme', rpm => 3);

my $model = "llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }";
my $server = 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }';
# valid=1s: the name is asked again soon after a reconnect
my $resolver = "resolver 127.0.0.1:$dns valid=1s ipv6=off;";

sub ask {
    my ($port) = @_;
    return (0) unless $port;
    return http_request($port, 'POST', '/v1/chat/completions',
        { 'Content-Type' => 'application/json',
          Authorization => 'Bearer sk-acme' },
        '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"hi"}]}');
}

# a gateway, or undef (and a failed test) when nginx -t refuses the
# configuration, so that the rest still runs
sub gateway {
    my ($redis) = @_;
    my $http = "$resolver $redis $model";
    my ($failed, $out) = $t->start_nginx(http => $http, server => $server,
        expect_fail => 1);
    if ($failed) {
        fail("nginx -t accepts $redis");
        diag($out);
        return;
    }
    return $t->start_nginx(http => $http, server => $server);
}

sub log_of { $_[0] ? $t->error_log($_[0]) : '' }

# nginx's own resolver gets its answers from the responder: a proxy_pass
# to redis.test, which only the resolver can turn into the mock's address
my $plain = $t->start_nginx(http => $resolver,
    server => 'location /dns { set $h redis.test;'
        . " proxy_pass http://\$h:$up/_stats; }");
my ($st) = http_request($plain, 'GET', '/dns');
is($st, 200, 'nginx resolves redis.test through the responder')
    or diag($t->error_log($plain));
$t->stop_nginx($plain);

# a name for Redis, resolved by nginx's resolver
my $gw = gateway("llm_redis redis://redis.test:$rp timeout=300ms;");
my @codes = map { (ask($gw))[0] } 1 .. 4;
is("@codes", '200 200 200 429',
    'redis://redis.test: tenant read and rpm of 3 enforced')
    or diag(log_of($gw));

# a name nobody knows: no Redis, the fail-closed answer
my $gw2 = gateway("llm_redis redis://nowhere.test:$rp timeout=300ms;");
my ($code) = ask($gw2);
is($code, 503, 'a name that does not resolve: 503 under fail-closed');
ok(wait_until(sub { log_of($gw2) =~ /llm: redis.*nowhere\.test/ }, 5),
    'the failed resolution is logged with the name')
    or diag(log_of($gw2));

# Redis moves: the same port on 127.0.0.2 (all of 127/8 is lo), the name
# pointed there, the first one killed; the gateway must ask the name
# again when it reconnects, not keep the address it had
my $moved = $t->start_redis(port => $rp, bind => '127.0.0.2');
my $cli2 = ['-h', '127.0.0.2', '-p', $rp];
$t->add_tenant($cli2, 'acme', 'sk-acme', rpm => 3);
$t->set_dns('redis.test' => '127.0.0.2');
is(LLMTest::dns_query($dns, 'redis.test'), '127.0.0.2',
    'the responder now answers 127.0.0.2');
$t->stop_redis($rp);
# a 200 can only come from the new Redis: the old one is gone, and its
# quota was used up
ok(wait_until(sub { (ask($gw))[0] == 200 }, 10),
    'after the first Redis is killed, the gateway follows the name to the'
    . ' new address') or diag(log_of($gw));
my @keys = split /\n/, $t->redis_cli($cli2, 'KEYS', 'llm:*') // '';
cmp_ok(scalar @keys, '>', 2, 'the quota keys are in the new Redis');

# TLS with a name: the certificate's DNS SAN must be that name
$t->set_dns('redis.test' => '127.0.0.1');
my @ca = $t->make_ca('ca');
my @good = $t->make_cert('redis-test', \@ca, san => 'DNS:redis.test');
my @bad = $t->make_cert('other-test', \@ca, san => 'DNS:other.test');
my $tp = $t->start_redis(tls => { cert => $good[0], key => $good[1],
    ca => $ca[0] });
my $tp2 = $t->start_redis(tls => { cert => $bad[0], key => $bad[1],
    ca => $ca[0] });
for my $p ($tp, $tp2) {
    my $cli = $t->redis_tls_cli($p, $ca[0]);
    $t->add_tenant($cli, 'acme', 'sk-acme', rpm => 3);
}
my $gw3 = gateway("llm_redis rediss://redis.test:$tp timeout=300ms;"
    . " llm_redis_ssl_trusted_certificate $ca[0];");
($code) = ask($gw3);
is($code, 200, 'rediss://redis.test with a certificate for DNS:redis.test:'
    . ' served') or diag(log_of($gw3));
my $gw4 = gateway("llm_redis rediss://redis.test:$tp2 timeout=300ms;"
    . " llm_redis_ssl_trusted_certificate $ca[0];");
($code) = ask($gw4);
is($code, 503, 'a certificate only for DNS:other.test: 503');
ok(wait_until(sub { log_of($gw4) =~ /llm: redis.*certificate/i }, 5),
    'the name mismatch is logged as a certificate failure')
    or diag(log_of($gw4));

$t->cleanup;
done_testing();
