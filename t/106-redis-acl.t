# llm_redis with an ACL user: redis://user@host:port/db, the password from
# a file (never from the address, never logged), and the errors nginx -t
# gives for what is not served yet.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Digest::SHA qw(sha256_hex);
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $rp = $t->start_redis;
my $secret = 'gw-s3cret-' . int(rand(1e9));

# an ACL user for the gateway; the default user is then switched off, so
# that only an AUTH with that user reaches anything
$t->redis_cli($rp, 'ACL', 'SETUSER', 'gw', 'on', ">$secret", '~*', '&*',
    '+@all');
$t->redis_cli($rp, 'ACL', 'SETUSER', 'default', 'off');

sub gw_cli {
    my ($db, @args) = @_;
    open my $fh, '-|', 'redis-cli', '-p', $rp, '--user', 'gw', '--pass',
        $secret, '--no-auth-warning', '-n', $db, @args or die $!;
    local $/;
    my $out = <$fh> // '';
    $out =~ s/\s+\z//;
    return $out;
}

like(`redis-cli -p $rp PING 2>&1`, qr/NOAUTH|NOPERM|auth/i,
    'the default user is off: Redis answers nobody without AUTH');

# the tenant in database 3, where the address points
gw_cli(3, 'HSET', LLMTest::rkey(LLMTest::KEY_TENANT, 'acme'),
    created => time, rpm => 3);
gw_cli(3, 'HSET', LLMTest::rkey(LLMTest::KEY_API_KEY, sha256_hex('sk-acme')),
    tenant => 'acme', revoked => 0);

my $pw = $t->dir . '/redis.pw';
open my $fh, '>', $pw or die $!;
print $fh "$secret\n";
close $fh;
my $bad = $t->dir . '/bad.pw';
open $fh, '>', $bad or die $!;
print $fh "not-the-password\n";
close $fh;

my $model = "llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }";
my $server = 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }';

my $gw = $t->start_nginx(
    http => "llm_redis redis://gw\@127.0.0.1:$rp/3 password_file=$pw"
        . " timeout=300ms; $model",
    server => $server);

sub ask {
    my ($port) = @_;
    return http_request($port, 'POST', '/v1/chat/completions',
        { 'Content-Type' => 'application/json',
          Authorization => 'Bearer sk-acme' },
        '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"hi"}]}');
}

my @codes = map { (ask($gw))[0] } 1 .. 4;
is("@codes", '200 200 200 429',
    'redis://gw@host/3 with password_file: keys, tenant and rpm of 3 '
    . 'read and enforced in database 3') or diag($t->error_log($gw));
like(gw_cli(3, 'KEYS', 'llm:*'), qr/llm:/, 'the quota keys are in database 3');
unlike($t->error_log($gw), qr/\Q$secret\E/, 'the password is never logged');

# the wrong password: AUTH fails, the request gets the fail-closed answer
my $gw2 = $t->start_nginx(
    http => "llm_redis redis://gw\@127.0.0.1:$rp/3 password_file=$bad"
        . " timeout=300ms; $model",
    server => $server);
my ($code) = ask($gw2);
is($code, 503, 'a wrong password: 503 under fail-closed');
ok(wait_until(sub { $t->error_log($gw2) =~ /redis 127\.0\.0\.1:\d+: AUTH failed: WRONGPASS/ },
    5), 'the failed AUTH is logged with Redis\'s reason');
unlike($t->error_log($gw2), qr/not-the-password/,
    'and without the password');

# the refused AUTH is tried again: once Redis takes that password, the
# same gateway is served without a reload
$t->redis_cli($rp, '--user', 'gw', '--pass', $secret, '--no-auth-warning',
    'ACL', 'SETUSER', 'gw', '>not-the-password');
my $last;
# (rpm 3 was spent above: Redis answering shows as a 429)
ok(wait_until(sub { ($last = (ask($gw2))[0]) == 429 }, 10),
    'a refused AUTH is retried: Redis answers once it takes the password')
    or diag("last: $last");

# what nginx -t refuses, naming the directive
my $one = $t->dir . '/two-lines.pw';
open $fh, '>', $one or die $!;
print $fh "a\nb\n";
close $fh;
my $empty = $t->dir . '/empty.pw';
open $fh, '>', $empty or die $!;
close $fh;

for my $case (
    ["redis://gw:$secret\@127.0.0.1:$rp", qr/"llm_redis" takes no password in its address/],
    ["rediss://127.0.0.1:$rp", qr/"llm_redis" with TLS and "llm_redis_ssl_verify on" needs "llm_redis_ssl_trusted_certificate"/],
    ["redis-cluster://127.0.0.1:$rp/3", qr/"llm_redis": a Redis Cluster has database 0 only/],
    ["redis-sentinel://127.0.0.1:$rp", qr/"llm_redis" needs the primary's name/],
    ["memcache://127.0.0.1:$rp", qr/"llm_redis" does not know "memcache:\/\/" addresses/],
    ["127.0.0.1:$rp password=$secret", qr/"llm_redis" takes no password in the configuration/],
    ["redis://127.0.0.1:$rp,127.0.0.1:1", qr/more than one address is for redis-sentinel/],
    ["redis://redis.invalid:$rp", qr/host "redis.invalid" is a name: it needs a "resolver"/],
    ["redis://gw\@127.0.0.1:$rp", qr/"llm_redis" user "gw" needs "password_file=" or "password_env="/],
    ["redis://127.0.0.1:$rp password_file=/nonexistent/pw", qr/"llm_redis" cannot open password_file "\/nonexistent\/pw"/],
    ["redis://127.0.0.1:$rp password_file=$empty", qr/cannot read a password from password_file/],
    ["redis://127.0.0.1:$rp password_file=$one", qr/password_file ".*" must hold one line/],
    ["redis://127.0.0.1:$rp/x", qr/invalid "llm_redis" address/],
    ["127.0.0.1:$rp user=a\x01b", qr/invalid "llm_redis" parameter/],
) {
    my ($arg, $re) = @$case;
    my ($failed, $out) = $t->start_nginx(http => "$model llm_redis $arg;",
        server => $server, expect_fail => 1);
    ok($failed, "nginx -t refuses llm_redis $arg");
    like($out, $re, "... and says why");
    unlike($out, qr/\Q$secret\E/, '... without the password') if $arg =~ /\Q$secret\E/;
}

$t->cleanup;
done_testing();
