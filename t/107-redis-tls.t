# llm_redis over TLS: rediss:// verified against a CA of the test's own
# (the server's name and chain), a wrong CA refused with a clear log line,
# an ACL user over TLS, client certificates, llm_redis_ssl_verify off, and
# what nginx -t refuses.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $d = $t->dir;

my @ca = $t->make_ca('ca');
my @other_ca = $t->make_ca('other-ca');
my @srv = $t->make_cert('server', \@ca, san => 'DNS:localhost,IP:127.0.0.1');
my @client = $t->make_cert('client', \@ca, client => 1);

my %tls = (cert => $srv[0], key => $srv[1], ca => $ca[0]);
my $rp = $t->start_redis(tls => { %tls, auth_clients => 'no' });
my $cli = $t->redis_tls_cli($rp, $ca[0]);
is($t->redis_cli($cli, 'PING'), 'PONG',
    'redis-cli --tls with the CA talks to the TLS-only Redis');
$t->add_tenant($cli, 'acme', 'sk-acme', rpm => 3);

my $model = "llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }";
my $server = 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }';

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
    my ($redis, %o) = @_;
    my ($failed, $out) = $t->start_nginx(http => "$redis $model",
        server => $server, expect_fail => 1, %o);
    if ($failed) {
        fail("nginx -t accepts $redis");
        diag($out);
        return;
    }
    return $t->start_nginx(http => "$redis $model", server => $server, %o);
}

# 1. verified TLS to 127.0.0.1, matched against the IP SAN
my $gw = gateway("llm_redis rediss://127.0.0.1:$rp timeout=300ms;"
    . " llm_redis_ssl_trusted_certificate $ca[0];");
my @codes = map { (ask($gw))[0] } 1 .. 4;
is("@codes", '200 200 200 429',
    'rediss:// with the right CA: tenant read and rpm of 3 enforced')
    or $gw && diag($t->error_log($gw));
# the tenant and its key are 2 keys; the quota's own make more
my @keys = split /\n/, $t->redis_cli($cli, 'KEYS', 'llm:*');
cmp_ok(scalar @keys, '>', 2, 'the quota keys were written over TLS');

# 2. a CA that did not sign the server's certificate: no Redis, 503
my $secret = 'tls-s3cret-' . int(rand(1e9));
my $pw = "$d/redis.pw";
open my $fh, '>', $pw or die $!;
print $fh "$secret\n";
close $fh;
my $gw2 = gateway("llm_redis rediss://127.0.0.1:$rp password_file=$pw"
    . " timeout=300ms; llm_redis_ssl_trusted_certificate $other_ca[0];");
my ($code) = ask($gw2);
is($code, 503, 'a wrong CA: 503 under fail-closed');
ok(wait_until(sub { $gw2 && $t->error_log($gw2) =~ /llm: redis.*certificate/i }, 5),
    'the failed verification is logged as such')
    or $gw2 && diag($t->error_log($gw2));
unlike($gw2 ? $t->error_log($gw2) : '', qr/\Q$secret\E/, 'and without the password');

# 3. an ACL user with a password file, over TLS, in database 2; the
# default user off, so only that AUTH reaches anything
$t->redis_cli($cli, 'ACL', 'SETUSER', 'gw', 'on', ">$secret", '~*', '&*',
    '+@all');
$t->redis_cli($cli, 'ACL', 'SETUSER', 'default', 'off');
my $gwcli = [@$cli, '--user', 'gw', '--pass', $secret, '--no-auth-warning',
    '-n', 2];
$t->add_tenant($gwcli, 'acme', 'sk-acme', rpm => 3);
my $gw3 = gateway("llm_redis rediss://gw\@127.0.0.1:$rp/2 password_file=$pw"
    . " timeout=300ms; llm_redis_ssl_trusted_certificate $ca[0];");
@codes = map { (ask($gw3))[0] } 1 .. 4;
is("@codes", '200 200 200 429',
    'rediss://gw@host/2 with password_file: the ACL user over TLS')
    or $gw3 && diag($t->error_log($gw3));
unlike($gw3 ? $t->error_log($gw3) : '', qr/\Q$secret\E/, 'the password is never logged');

# 4. a Redis that asks for a client certificate
my $rp2 = $t->start_redis(tls => { %tls, auth_clients => 'yes' });
my $cli2 = $t->redis_tls_cli($rp2, $ca[0], cert => $client[0],
    key => $client[1]);
is($t->redis_cli($cli2, 'PING'), 'PONG',
    'redis-cli with the client certificate talks to it');
$t->add_tenant($cli2, 'acme', 'sk-acme', rpm => 3);
my $gw4 = gateway("llm_redis rediss://127.0.0.1:$rp2 timeout=300ms;"
    . " llm_redis_ssl_trusted_certificate $ca[0];"
    . " llm_redis_ssl_certificate $client[0];"
    . " llm_redis_ssl_certificate_key $client[1];");
($code) = ask($gw4);
is($code, 200, 'with llm_redis_ssl_certificate: served')
    or $gw4 && diag($t->error_log($gw4));
# nginx's OpenSSL layer logs the server's alert at crit: expected here
my $gw5 = gateway("llm_redis rediss://127.0.0.1:$rp2 timeout=300ms;"
    . " llm_redis_ssl_trusted_certificate $ca[0];",
    log_ok => qr/\[crit\].*alert certificate required/);
($code) = ask($gw5);
is($code, 503, 'without a client certificate: Redis refuses it, 503');

# 5. verification off: the wrong CA does not matter
my $gw6 = gateway("llm_redis rediss://127.0.0.1:$rp2 timeout=300ms;"
    . " llm_redis_ssl_trusted_certificate $other_ca[0];"
    . " llm_redis_ssl_verify off;"
    . " llm_redis_ssl_certificate $client[0];"
    . " llm_redis_ssl_certificate_key $client[1];");
($code) = ask($gw6);
is($code, 200, 'llm_redis_ssl_verify off: the wrong CA is not checked')
    or $gw6 && diag($t->error_log($gw6));

# 6. what nginx -t refuses, naming the directive
sub conf {
    my ($redis) = @_;
    return "load_module modules/ngx_http_llm_module.so;\n"
        . "events {}\nhttp { $model $redis\n"
        . " server { listen 127.0.0.1:@{[LLMTest::free_port()]};"
        . " $server } }\n";
}
my ($failed, $out) = $t->check_conf(conf("llm_redis rediss://127.0.0.1:$rp;"
    . " llm_redis_ssl_trusted_certificate $ca[0];"
    . " llm_redis_ssl_certificate $client[0];"));
ok($failed, 'nginx -t refuses a certificate without its key');
like($out, qr/llm_redis_ssl_certificate_key/, '... naming the key directive');

($failed, $out) = $t->check_conf(conf("llm_redis rediss://127.0.0.1:$rp;"));
ok($failed, 'nginx -t refuses rediss:// verified against no CA');
like($out, qr/llm_redis_ssl_trusted_certificate/,
    '... naming llm_redis_ssl_trusted_certificate');

$t->cleanup;
done_testing();
