# llm-admin and issue 11: secrets off the command line (L11), the tenant
# ids of the cache scopes (L2), the max_n limit, and tenants the gateway
# accepts (M7).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha256_hex);
use LLMTest;

my $t = LLMTest->new;
my $rp = $t->start_redis(args => ['--requirepass', 'pw-s3cret']);
my $tool = "$LLMTest::ROOT/redis/llm-admin";

sub q_ { my $a = shift; $a =~ s/'/'\\''/g; "'$a'" }

# runs llm-admin with an environment prefix and an optional stdin
sub admin {
    my ($env, $stdin, @args) = @_;
    my $cmd = join ' ', map { q_($_) } @args;
    my $in = defined $stdin ? 'printf %s ' . q_($stdin) . ' | ' : '';
    my $out = `$in env $env $tool -p $rp $cmd 2>&1`;
    return ($? >> 8, $out);
}

my $file = $t->dir . '/redis-password';
open my $fh, '>', $file or die;
print $fh "pw-s3cret\n";
close $fh;

my ($rc, $out) = admin('-u REDISCLI_AUTH', undef, qw(tenant show acme));
ok($rc != 0 && $out =~ /NOAUTH/, 'L11: without the password Redis refuses')
    or diag($out);

($rc, $out) = admin('REDISCLI_AUTH=pw-s3cret', undef,
    qw(tenant create acme --rpm 10 --max-n 4));
is($rc, 0, 'L11: the password from REDISCLI_AUTH') or diag($out);

($rc, $out) = admin('-u REDISCLI_AUTH', undef, '--password-file', $file,
    qw(tenant show acme));
is($rc, 0, 'L11: the password from --password-file') or diag($out);
like($out, qr/^max_n = 4$/m, 'max_n: llm-admin stores and shows --max-n');

($rc, $out) = admin('-u REDISCLI_AUTH', "pw-s3cret\n", '--password-file', '-',
    qw(tenant list));
is($rc, 0, 'L11: the password from stdin (--password-file -)') or diag($out);
like($out, qr/^acme$/m, 'L11: and it works');

($rc, $out) = admin('-u REDISCLI_AUTH', undef, '-a', 'pw-s3cret',
    qw(tenant set acme --max-n none));
is($rc, 0, 'L11: -a still works') or diag($out);

($rc, $out) = admin('REDISCLI_AUTH=pw-s3cret', undef, qw(tenant set acme --max-n two));
isnt($rc, 0, 'max_n: --max-n wants a whole number');

($rc, $out) = admin('REDISCLI_AUTH=pw-s3cret', undef, qw(key issue acme));
is($rc, 0, 'key issue') or diag($out);
my ($key) = $out =~ /^(sk-llm-\S+)$/m;
ok($key, 'a key was printed');

($rc, $out) = admin('REDISCLI_AUTH=pw-s3cret', "$key\n", qw(key revoke -));
is($rc, 0, 'L11: key revoke - reads the key from stdin') or diag($out);
my $rev = `REDISCLI_AUTH=pw-s3cret redis-cli -p $rp HGET @{[rkey(KEY_API_KEY, sha256_hex($key))]} revoked`;
chomp $rev;
is($rev, '1', 'L11: the key read from stdin is revoked');

($rc, $out) = admin('REDISCLI_AUTH=pw-s3cret', '', qw(key revoke -));
isnt($rc, 0, 'L11: key revoke - with nothing on stdin fails');

for my $id ('-', '*') {
    ($rc, $out) = admin('REDISCLI_AUTH=pw-s3cret', undef, 'tenant', 'create', $id);
    isnt($rc, 0, "L2: llm-admin refuses the tenant id '$id'");
}
my $exists = `REDISCLI_AUTH=pw-s3cret redis-cli -p $rp EXISTS @{[rkey(KEY_TENANT, '-')]}`;
chomp $exists;
is($exists, '0', 'L2: no tenant "-" was written');

my %h = split /\n/, `REDISCLI_AUTH=pw-s3cret redis-cli -p $rp HGETALL @{[rkey(KEY_TENANT, 'acme')]}`;
ok($h{created}, 'M7: tenant create writes the created field the gateway requires');

done_testing;
