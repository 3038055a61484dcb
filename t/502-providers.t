# Hosted providers: each one's exact request shape (URL, key, model id,
# stream_options, attribution, as the review of 2026-12-01 found them),
# over TLS verified against a CA made here,
# over HTTP/2; usage read however each provider sends it; keys from the
# environment or a file, never the client's, never logged.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

plan skip_all => 'openssl not installed' unless `which openssl` =~ /\S/;

my $t = LLMTest->new;
my $d = $t->dir;

# ids the fakes only compare; which Mixtral ids each provider still
# serves, and when the others were retired, is in docs/directives.md
my %p = (
    together => 'mistralai/Mixtral-8x7B-Instruct-v0.1',
    fireworks => 'accounts/fireworks/models/mixtral-8x7b-instruct',
    deepinfra => 'mistralai/Mixtral-8x22B-Instruct-v0.1',
    openrouter => 'mistralai/mixtral-8x7b-instruct',
    mistral => 'mistral-small-latest',
    groq => 'llama-3.3-70b-versatile',
);
my %base = %LLMTest::PROVIDER_BASE;
my %expect = LLMTest::provider_expect(\%p);
# one key from a file instead
open my $kf, '>', "$d/groq.key" or die;
print $kf "  $expect{groq}{key}\n";
close $kf;
delete $ENV{LLMT_KEY_GROQ};

my $fp = $t->start_providers(\%expect);

sub models {
    join "\n", map {
        my $key = $_ eq 'groq' ? "api_key_file=$d/groq.key" : 'api_key_env=LLMT_KEY_' . uc $_;
        "llm_model p-$_ { backend https://127.0.0.1:$fp/$base{$_} provider=$_ model=$p{$_} $key price=0.60/0.60; }"
    } sort keys %p;
}

my $gw = $t->start_nginx(
    http => "llm_ssl_trusted_certificate @{[ $t->provider_ca ]}; llm_app_url https://gateway.example/app;\n" . models(),
    server => 'location /v1/ { llm_gateway; }',
);

sub last_seen {
    my ($name) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$fp") or return {};
    close $s;
    my $out = `curl -s --cacert @{[ $t->provider_ca ]} https://127.0.0.1:$fp/_last/$name`;
    return json_of($out) // {};
}

for my $name (sort keys %p) {
    my ($st, $h, $b) = chat($gw, key => 'sk-client-secret', model => "p-$name");
    is($st, 200, "$name: plain answer") or diag($b);
    is(json_of($b)->{choices}[0]{message}{content}, "hello from $name", "$name: its content");
    my $seen = last_seen($name);
    is($seen->{url}, "/$base{$name}/chat/completions", "$name: URL");
    is($seen->{httpVersion}, '2.0', "$name: over HTTP/2");
    is($seen->{headers}{authorization}, "Bearer $expect{$name}{key}", "$name: its own key, not the client's");
    is($seen->{body}{model}, $p{$name}, "$name: its model id");

    ($st, $h, $b) = chat($gw, key => 'sk-client-secret', model => "p-$name", stream => JSON::PP::true);
    is($st, 200, "$name: stream") or diag($b);
    my @ev = sse_events($b);
    is($ev[-1], '[DONE]', "$name: stream ends in [DONE]");
    my $text = join '', map { my $j = json_of($_); $j ? map { $_->{delta}{content} // '' } @{ $j->{choices} } : () } @ev;
    is($text, "hello from $name", "$name: streamed content");
    ok(!(grep { /"usage"/ } @ev), "$name: no usage the client did not ask for, x_groq's included");
    $seen = last_seen($name);
    if ($name ne 'mistral') {
        ok($seen->{body}{stream_options}{include_usage}, "$name: stream_options asked");
    } else {
        ok(!exists $seen->{body}{stream_options}, "$name: no stream_options, it refuses them");
    }
    ok(!exists $seen->{body}{usage}, "$name: no \"usage\" member sent");
}
my $log = $t->access_log($gw);
is(scalar(() = $log =~ /model=p-\w+ backend=127\.0\.0\.1:$fp ustatus=200 ptok=7 ctok=3 /g), 12,
   'usage read from every answer, streamed ones included (usage chunk, last chunk, x_groq)');
is(last_seen('openrouter')->{headers}{'x-openrouter-title'}, 'nginx-llm-gateway', 'OpenRouter: X-OpenRouter-Title');
is(last_seen('openrouter')->{headers}{'x-title'}, 'nginx-llm-gateway', 'OpenRouter: legacy X-Title');
is(last_seen('openrouter')->{headers}{'http-referer'}, 'https://gateway.example/app', 'OpenRouter: HTTP-Referer');
ok(!exists last_seen('openrouter')->{body}{usage}, 'OpenRouter: no deprecated usage.include');

my $all = $t->error_log($gw) . $t->access_log($gw);
ok(!(grep { index($all, $_->{key}) >= 0 } values %expect), 'no provider key in the logs');

# a provider that quotes the key in an error: masked on the way out
{
    my ($st, $h, $b) = http_request($gw, 'POST', '/v1/chat/completions',
        { 'Content-Type' => 'application/json' },
        encode_json({ model => 'p-mistral', messages => [{ role => 'user', content => 'ECHO_KEY' }] }));
    is($st, 400, 'a provider\'s 400 passes on');
    ok(index($b, $expect{mistral}{key}) < 0, 'without the key it quoted');
    like($b, qr/Bearer \*{8,}/, 'masked');

    # the key cut across two reads of the body is masked as a whole
    ($st, $h, $b) = http_request($gw, 'POST', '/v1/chat/completions',
        { 'Content-Type' => 'application/json' },
        encode_json({ model => 'p-mistral', messages => [{ role => 'user', content => 'ECHO_KEY_SPLIT' }] }));
    is($st, 400, 'a 400 in two pieces passes on');
    my $k = $expect{mistral}{key};
    ok(index($b, substr($k, 0, 5)) < 0 && index($b, substr($k, 5)) < 0,
       'neither piece of the key it quoted');
    like($b, qr/Bearer \*{8,}/, 'masked whole');
}

# the client's stream_options survive for providers that take them
my ($st, $h, $b) = chat($gw, key => 'sk-client-secret', model => 'p-together', stream => JSON::PP::true,
    stream_options => { include_usage => JSON::PP::true });
ok((grep { /"usage"/ } sse_events($b)), 'include_usage asked by the client: usage chunk kept');

# certificate verification: without the test CA, no connection
my $gw2 = $t->start_nginx(http => models(), server => 'location /v1/ { llm_gateway; }');
($st, $h, $b) = chat($gw2, key => 'sk-client-secret', model => 'p-together');
is($st, 502, 'an unknown CA: 502');
like($t->error_log($gw2), qr/failed: .*(certificate|SSL)/i, 'the log says why');
my $gw3 = $t->start_nginx(http => "llm_ssl_verify off;\n" . models(),
    server => 'location /v1/ { llm_gateway; }');
($st) = chat($gw3, key => 'sk-client-secret', model => 'p-together');
is($st, 200, 'llm_ssl_verify off: served');

# configuration
for my $case (
    ["llm_model m { backend https://x/v1 provider=acme; }", qr/unknown "backend" provider "acme"/],
    ["llm_model m { backend https://x/v1 api_key_file=$d/nonexistent; }", qr/api_key_file: cannot open/],
    ["llm_ssl_trusted_certificate $d/nonexistent.pem; llm_model m { backend https://x/v1; }",
     qr/"llm_ssl_trusted_certificate": cannot read/],
) {
    my ($failed, $out) = $t->start_nginx(http => $case->[0],
        server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
    ok($failed, 'nginx -t fails');
    like($out, $case->[1], 'message names the directive') or diag($out);
}
my ($failed, $out) = $t->start_nginx(http => "llm_model m { backend provider=together model=x; }",
    server => 'location /v1/ { llm_gateway; }', expect_fail => 1);
ok(!$failed, 'a provider\'s own base URL when none is given') or diag($out);

$t->cleanup;
done_testing;
