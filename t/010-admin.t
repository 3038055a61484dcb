# The admin tool: tenants, keys (shown once, stored hashed), revocation,
# limits, usage arithmetic, input validation; and the gateway accepts what
# it writes.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha256_hex);
use LLMTest;

my $t = LLMTest->new;
my $rp = $t->start_redis;
my $tool = "$LLMTest::ROOT/redis/llm-admin";

sub admin {
    my $cmd = join ' ', map { my $a = $_; $a =~ s/'/'\\''/g; "'$a'" } @_;
    my $out = `$tool -p $rp $cmd 2>&1`;
    return ($? >> 8, $out);
}

my ($rc, $out) = admin('tenant', 'create', 'acme', '--rpm', 60, '--tpm', 10000,
    '--budget-day', '2.50', '--models', 'mixtral-8x7b,mixtral-8x22b');
is($rc, 0, 'tenant create') or diag $out;
($rc) = admin(qw(tenant create acme));
isnt($rc, 0, 'create twice fails');
my %h = split /\n/, $t->redis_cli($rp, 'HGETALL', rkey(KEY_TENANT, 'acme'));
is($h{rpm}, 60, 'rpm stored');
is($h{budget_day_usd}, '2.50', 'budget stored as given');
is($h{models}, 'mixtral-8x7b,mixtral-8x22b', 'models stored');

($rc, $out) = admin(qw(tenant set acme --rpm none --max-tokens 512));
is($rc, 0, 'tenant set');
%h = split /\n/, $t->redis_cli($rp, 'HGETALL', rkey(KEY_TENANT, 'acme'));
ok(!exists $h{rpm}, '"none" removes a limit');
is($h{max_tokens}, 512, 'max_tokens set');

($rc, $out) = admin(qw(tenant set acme --cache any --force-model mixtral-8x22b));
is($rc, 0, 'tenant set --cache --force-model') or diag $out;
%h = split /\n/, $t->redis_cli($rp, 'HGETALL', rkey(KEY_TENANT, 'acme'));
is($h{cache}, 'any', 'cache policy stored');
is($h{force_model}, 'mixtral-8x22b', 'forced model stored');
($rc) = admin(qw(tenant set acme --cache sometimes));
isnt($rc, 0, '--cache takes off, deterministic or any');
($rc) = admin(qw(tenant set acme --force-model a,b));
isnt($rc, 0, '--force-model takes one model');
admin(qw(tenant set acme --cache none --force-model none));

($rc, $out) = admin(qw(key issue acme --label ci));
is($rc, 0, 'key issue');
my ($key) = $out =~ /^(sk-llm-[A-Za-z0-9]{40})$/m;
ok($key, 'a key printed once') or diag $out;
my $hash = sha256_hex($key);
is($t->redis_cli($rp, 'HGET', rkey(KEY_API_KEY, $hash), 'tenant'), 'acme', 'stored by its SHA-256');
my $dump = join "\n", map { "$_ " . ($t->redis_cli($rp, 'DUMP', $_) // '') }
    split /\n/, $t->redis_cli($rp, 'KEYS', '*');
unlike($dump, qr/\Q$key\E/, 'the raw key is nowhere in Redis');
($rc, $out) = admin(qw(key list acme));
like($out, qr/\Q${\ substr($hash, 0, 12)}\E.*\bci\b/, 'key list shows hash prefix and label');

# the gateway accepts the key, then refuses it once revoked
my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp; llm_auth_cache_ttl 100ms;
             llm_model mixtral-8x7b { backend http://127.0.0.1:" . $t->start_mock . "/v1; }",
    server => 'location /v1/ { llm_gateway; llm_auth on; llm_quota on; }');
my @req = ('POST', '/v1/chat/completions',
    { 'Content-Type' => 'application/json', Authorization => "Bearer $key" },
    '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"hi"}]}');
is((http_request($gw, @req))[0], 200, 'issued key works');
($rc, $out) = admin('key', 'revoke', $key);
is($rc, 0, 'revoke by raw key');
ok(wait_until(sub { (http_request($gw, @req))[0] == 401 }, 2), 'revoked key refused');

# usage arithmetic: exact micro-dollars
$t->redis_cli($rp, 'DEL', rkey(KEY_USAGE, 'acme', '20250101'));
$t->redis_cli($rp, 'HSET', rkey(KEY_USAGE, 'acme', '20250101'),
    'mixtral-8x7b|h:1|requests', 3, 'mixtral-8x7b|h:1|prompt_tokens', 30,
    'mixtral-8x7b|h:1|completion_tokens', 12, 'mixtral-8x7b|h:1|cost_micro_usd', 1234567,
    'mixtral-8x22b|h:2|requests', 1, 'mixtral-8x22b|h:2|cost_micro_usd', 999999,
    'mixtral-8x22b|h:2|cached', 1);
($rc, $out) = admin(qw(usage acme --day 20250101));
is($rc, 0, 'usage');
like($out, qr/mixtral-8x7b\s+h:1\s+3\s+30\s+12\s+1\.234567\s+0/, 'per model and backend');
like($out, qr/mixtral-8x22b\s+h:2\s+1\s+0\s+0\s+0\.999999\s+1/, 'cached counted');
like($out, qr/TOTAL\s+4\s+30\s+12\s+2\.234566\s+1/, 'totals exact');
($rc, $out) = admin(qw(usage acme --month 202501));
like($out, qr/TOTAL\s+4\s+30\s+12\s+2\.234566/, 'month sums its days');

# bad input
for my $bad (['tenant', 'create', "bad id"], ['tenant', 'create', 'x', '--rpm', '12abc'],
    ['tenant', 'create', 'x', '--budget-day', '1.2345678'], ['tenant', 'create', "a\r\nFLUSHALL"],
    ['key', 'issue', 'nobody'], ['tenant', 'set', 'acme', '--models', 'a b'],
    ['usage', 'acme', '--day', '2025'])
{
    ($rc, $out) = admin(@$bad);
    isnt($rc, 0, "rejected: @$bad");
}
is($t->redis_cli($rp, 'EXISTS', rkey(KEY_TENANT, 'acme')), 1, 'nothing flushed');

($rc, $out) = admin(qw(tenant delete acme));
is($rc, 0, 'tenant delete');
is($t->redis_cli($rp, 'HGET', rkey(KEY_API_KEY, $hash), 'revoked'), 1, 'its keys revoked');

# cache purge: by scope, with SCAN; locks of answers being written stay
$t->redis_cli($rp, 'SET', $_, 'x') for rkey(KEY_CACHE, 'acme2', 'aa'),
    rkey(KEY_CACHE_LOCK, 'acme2', 'aa'), rkey(KEY_CACHE, 'other', 'bb'),
    rkey(KEY_CACHE, '*', 'cc'), rkey(KEY_CACHE, '-', 'dd'),
    rkey(KEY_CACHE, 'acme', 'ee');
($rc, $out) = admin(qw(cache purge --tenant acme2));
is($rc, 0, 'cache purge --tenant') or diag $out;
like($out, qr/^1 cached answers purged$/m, 'one entry of acme2');
is($t->redis_cli($rp, 'EXISTS', rkey(KEY_CACHE_LOCK, 'acme2', 'aa')), 1, 'its lock stays');
is($t->redis_cli($rp, 'EXISTS', rkey(KEY_CACHE, 'acme', 'ee')), 1, 'acme is not acme2');
($rc, $out) = admin(qw(cache purge --shared));
like($out, qr/^1 cached answers purged$/m, 'purge --shared: the "*" scope only');
is($t->redis_cli($rp, 'EXISTS', rkey(KEY_CACHE, 'other', 'bb')), 1, 'a "*" in the pattern is literal');
($rc, $out) = admin(qw(cache purge --anonymous));
like($out, qr/^1 cached answers purged$/m, 'purge --anonymous');
($rc, $out) = admin(qw(cache purge --all));
like($out, qr/^2 cached answers purged$/m, 'purge --all: the rest');
is($t->redis_cli($rp, 'EXISTS', rkey(KEY_CACHE_LOCK, 'acme2', 'aa')), 1, 'locks still stay');
for my $bad (['cache', 'purge'], ['cache', 'purge', '--tenant', 'a*'],
             ['cache', 'purge', '--tenant'], ['cache', 'flush', '--all']) {
    ($rc) = admin(@$bad);
    isnt($rc, 0, "rejected: @$bad");
}

$t->cleanup;
done_testing;
