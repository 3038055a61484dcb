# Strict input (issue 11, section 1) and "the gateway forwards exactly what
# it validated and reserved": duplicate names, trailing data and parse
# limits are refused while parsing; n, best_of and the context window
# bound max_tokens; media URLs follow llm_media_urls; the backend gets one
# copy of each member and the reserved limits.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $rp = $t->start_redis;

# a mock of our own: it keeps the raw bodies, duplicates and all
my $up = free_port();
LLMTest::_spawn('input-mock', {}, 'sh', '-c',
    "exec node $LLMTest::ROOT/t/mock/input.js --port $up >" . $t->dir . "/input-mock.log 2>&1");
wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$up") }, 10)
    or BAIL_OUT('input mock did not start');

my $gw = $t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp;
             llm_model mixtral-8x7b { context_window 32768;
                                      backend http://127.0.0.1:$up/v1 price=0.60/0.60; }
             llm_model small { context_window 4096; backend http://127.0.0.1:$up/v1; }
             llm_model big { context_window 16384; backend http://127.0.0.1:$up/v1; }
             llm_model orouter { backend http://127.0.0.1:$up/v1 provider=openrouter
                                 model=mistralai/mixtral-8x7b-instruct; }
             llm_router auto cheap=small strong=big;",
    server => 'location /v1/ { llm_gateway; llm_max_request_body 4m; }
               location /q/v1/ { llm_gateway; llm_auth on; llm_quota on;
                                 llm_default_max_tokens 6000;
                                 llm_max_request_body 4m; }
               location /off/v1/ { llm_gateway; llm_media_urls off; }
               location /any/v1/ { llm_gateway; llm_media_urls http https private; }',
);

my $msgs = '"messages":[{"role":"user","content":"hi"}]';
my $m = '"model":"mixtral-8x7b"';

sub bodies {
    my ($st, $h, $b) = http_request($up, 'GET', '/_bodies');
    return @{ decode_json($b)->{bodies} };
}

sub reset_bodies { http_request($up, 'POST', '/_reset', {}, '') }

# A JSON reader that keeps duplicate names: returns undef and the name
# of the first duplicate, or the decoded value.
sub strict_decode {
    my ($s) = @_;
    my $dup;
    my $value;
    $value = sub {
        $s =~ /\G\s*/gc;
        if ($s =~ /\G\{/gc) {
            my (%o, $first);
            $s =~ /\G\s*/gc;
            return {} if $s =~ /\G\}/gc;
            while (1) {
                $s =~ /\G\s*"((?:[^"\\]|\\.)*)"\s*:/gc or die "bad key";
                my $k = $1;
                $dup //= $k if exists $o{$k};
                $o{$k} = $value->();
                $s =~ /\G\s*/gc;
                last if $s =~ /\G\}/gc;
                $s =~ /\G,/gc or die "bad object";
            }
            return \%o;
        }
        if ($s =~ /\G\[/gc) {
            my @a;
            $s =~ /\G\s*/gc;
            return [] if $s =~ /\G\]/gc;
            while (1) {
                push @a, $value->();
                $s =~ /\G\s*/gc;
                last if $s =~ /\G\]/gc;
                $s =~ /\G,/gc or die "bad array";
            }
            return \@a;
        }
        if ($s =~ /\G("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)/gc) {
            return JSON::PP->new->allow_nonref->decode($1);
        }
        die "bad value at " . pos($s);
    };
    my $v = eval { $value->() };
    return (undef, "unparsable: $@") unless defined $v || !$@;
    return (undef, $dup) if defined $dup;
    return ($v, undef);
}

# what the parser refuses, and what it lets through
cases({ port => $gw, type => 'invalid_request_error' },
    # H1: a duplicate member name anywhere
    { name => 'H1: a duplicate max_tokens is refused',
      body => qq({$m,$msgs,"max_tokens":1,"max_tokens":48}),
      status => 400, code => 'duplicate_parameter', param => 'max_tokens' },
    { name => 'H1: a duplicate stream is refused',
      body => qq({$m,"stream":false,$msgs,"stream":true}),
      status => 400, code => 'duplicate_parameter', param => 'stream' },
    { name => 'H1: a duplicate messages is refused',
      body => qq({$m,$msgs,$msgs}),
      status => 400, code => 'duplicate_parameter', param => 'messages' },
    { name => 'H1: a duplicate name inside a message is refused, by its path',
      body => qq({$m,"messages":[{"role":"user","content":"a","content":"b"}]}),
      status => 400, code => 'duplicate_parameter',
      param => 'messages[0].content' },
    { name => 'H1: a duplicate deep in a tool schema is refused, by its path',
      body => qq({$m,$msgs,"tools":[{"type":"function","function":{"name":"f","parameters":)
          . qq({"type":"object","properties":{"a":{},"b":{},"a":{}}}}}]}),
      status => 400, code => 'duplicate_parameter',
      param => 'tools[0].function.parameters.properties.a' },
    { name => 'H1: "logprobs":false,"logprobs":true is refused',
      body => qq({$m,$msgs,"logprobs":false,"logprobs":true}),
      status => 400, code => 'duplicate_parameter', param => 'logprobs' },
    { name => 'H1: "temperature":0,"temperature":1.5 is refused',
      body => qq({$m,$msgs,"temperature":0,"temperature":1.5}),
      status => 400, code => 'duplicate_parameter', param => 'temperature' },
    { name => 'H1: max_completion_tokens null then a number is refused',
      body => qq({$m,$msgs,"max_completion_tokens":null,"max_completion_tokens":9}),
      status => 400, code => 'duplicate_parameter',
      param => 'max_completion_tokens' },
    { name => 'H1: a name hidden behind \u0000 is refused',
      body => qq({$m,$msgs,"max_tokens":1,"max_tokens\\u0000":48}),
      status => 400, code => 'invalid_json', param => undef },

    # strict: the grammar
    { name => 'strict: data after the top-level value is refused',
      body => qq({$m,$msgs} xyz),
      status => 400, code => 'invalid_json', param => undef,
      message => qr/more after the JSON value/ },
    { name => 'strict: a second object after the first is refused',
      body => qq({$m,$msgs}{"max_tokens":48}),
      status => 400, code => 'invalid_json', param => undef },
    { name => 'strict: trailing white space is fine',
      body => qq({$m,$msgs} \r\n\t ), status => 200 },
    { name => 'strict: a raw control character in a string is refused',
      body => qq({$m,"messages":[{"role":"user","content":"a\x01b"}]}),
      status => 400, code => 'invalid_json' },
    { name => 'strict: invalid UTF-8 is refused',
      body => qq({$m,"messages":[{"role":"user","content":"\xff\xfe"}]}),
      status => 400, code => 'invalid_json' },
    { name => 'strict: an overlong UTF-8 form is refused',
      body => qq({$m,"messages":[{"role":"user","content":"\xc0\xaf"}]}),
      status => 400, code => 'invalid_json' },
    { name => 'strict: a number with a leading zero is refused',
      body => qq({$m,$msgs,"max_tokens":012}),
      status => 400, code => 'invalid_json' },
    { name => 'strict: NaN is refused',
      body => qq({$m,$msgs,"temperature":NaN}),
      status => 400, code => 'invalid_json' },
    { name => 'strict: a trailing comma is refused',
      body => qq({$m,$msgs,}), status => 400, code => 'invalid_json' },
    { name => 'strict: a vertical tab as white space is refused',
      body => qq({$m,\x0b$msgs}), status => 400, code => 'invalid_json' },
    { name => 'strict: a number out of range is refused, by its path',
      body => qq({$m,$msgs,"metadata":{"x":1e400}}),
      status => 400, code => 'invalid_value', param => 'metadata.x' },

    # strict: the limits, enforced while parsing
    { name => 'strict: nesting deeper than 64 levels is refused',
      body => qq({$m,$msgs,"x":) . ('[' x 64) . (']' x 64) . '}',
      status => 400, code => 'invalid_json' },
    { name => 'strict: 64 levels of nesting are fine',
      body => qq({$m,$msgs,"x":) . ('[' x 63) . (']' x 63) . '}',
      status => 200 },
    { name => 'strict: an object of more than 1024 members is refused',
      body => qq({$m,$msgs,"metadata":{)
          . join(',', map { qq("k$_":0) } 1 .. 1025) . '}}',
      status => 400, code => 'object_above_max_properties',
      param => 'metadata' },
    { name => 'strict: an array of more than 8192 elements is refused',
      body => qq({$m,$msgs,"x":[) . join(',', (0) x 8193) . ']}',
      status => 400, code => 'array_above_max_length', param => 'x' },
    { name => 'L10: a 1 MB [0,0,...] is refused while parsing',
      body => qq({$m,$msgs,"x":[) . join(',', (0) x 500_000) . ']}',
      status => 400, code => 'array_above_max_length', param => 'x' },
    { name => 'L10: more than 65536 values in all are refused while parsing',
      body => qq({$m,$msgs,"x":[)
          . join(',', ('[' . join(',', (0) x 8000) . ']') x 9) . ']}',
      status => 400, code => 'too_many_values', param => undef },

    # L12: two bounds that disagree
    { name => 'L12: max_tokens and max_completion_tokens that differ are refused',
      body => qq({$m,$msgs,"max_completion_tokens":2,"max_tokens":40}),
      status => 400, code => 'invalid_value',
      param => 'max_completion_tokens' },
    { name => 'L12: max_tokens and max_completion_tokens that agree are fine',
      body => qq({$m,$msgs,"max_completion_tokens":40,"max_tokens":40}),
      status => 200 },

    # C1: larger than the model's context window, in OpenAI's words
    { name => 'C1: max_tokens over the context window is refused',
      body => qq({$m,$msgs,"max_tokens":100000}),
      status => 400, code => 'invalid_value', param => 'max_tokens',
      message => qr/^max_tokens is too large: 100000\. This model supports at most 32768 completion tokens, whereas you provided 100000\.$/ },
    { name => 'C1: max_completion_tokens of 2e13 is refused',
      body => qq({$m,$msgs,"max_completion_tokens":20000000000000}),
      status => 400, code => 'invalid_value',
      param => 'max_completion_tokens',
      message => qr/^max_completion_tokens is too large: 20000000000000\. This model supports at most 32768/ },
    { name => 'C1: auto, max_tokens over both models is refused',
      body => qq({"model":"auto",$msgs,"max_tokens":20000}),
      status => 400, code => 'invalid_value', param => 'max_tokens',
      message => qr/supports at most 16384 completion tokens/ },
    { name => 'C1: auto, max_tokens that only the strong model holds goes there',
      body => qq({"model":"auto",$msgs,"max_tokens":8000}), status => 200 },
    { name => 'C1: the context window itself is fine',
      body => qq({$m,$msgs,"max_tokens":32768}), status => 200 },

    # H2: best_of is checked like n
    { name => 'H2: best_of over 128 is refused',
      body => qq({$m,$msgs,"best_of":129}),
      status => 400, code => 'invalid_value', param => 'best_of' },
    { name => 'H2: best_of below n is refused',
      body => qq({$m,$msgs,"n":3,"best_of":2}),
      status => 400, code => 'invalid_value', param => 'best_of' },

    # M9: media URLs, default "data https"
    (map {
        my ($url, $why) = @$_;
        +{ name => "M9: $why is refused ($url)",
           body => qq({$m,"messages":[{"role":"user","content":[{"type":"text","text":"look"},)
               . qq({"type":"image_url","image_url":{"url":"$url"}}]}]}),
           status => 400, code => 'invalid_value',
           param => 'messages[0].content[1].image_url.url' }
    } (['https://127.0.0.1/x.png', 'loopback'], ['https://127.1/x.png', 'short loopback'],
       ['https://2130706433/x.png', 'decimal loopback'], ['https://0x7f.0.0.1/x.png', 'hex loopback'],
       ['https://0177.0.0.1/x.png', 'octal loopback'], ['https://10.1.2.3/x.png', '10/8'],
       ['https://172.16.0.1/x.png', '172.16/12'], ['https://192.168.1.1/x.png', '192.168/16'],
       ['https://169.254.169.254/latest/meta-data/', 'link-local metadata'],
       ['https://0.0.0.0/x.png', '0.0.0.0'], ['https://[::1]/x.png', '::1'],
       ['https://[::ffff:127.0.0.1]/x.png', 'IPv4-mapped loopback'],
       ['https://[::ffff:a9fe:a9fe]/x.png', 'IPv4-mapped link-local'],
       ['https://[fe80::1]/x.png', 'fe80::/10'], ['https://[fd00::1]/x.png', 'fc00::/7'],
       ['https://localhost/x.png', 'localhost'], ['https://LocalHost./x.png', 'localhost.'],
       ['https://img.localhost/x.png', 'a .localhost name'],
       ['https://metadata.google.internal/x', 'an .internal name'],
       ['https://redis:6379/x', 'a single-label name'],
       ['https://user@example.com/x.png', 'userinfo'],
       ['https://example.com\\\\@127.0.0.1/x.png', 'a backslash'],
       ['https:127.0.0.1/x.png', 'a missing //'], ['https://127.0.0.1../x.png', 'an empty label'],
       ['https://[::ffff:7f00:1]:8443/x.png', 'IPv4-mapped loopback with a port'],
       ['https://[64:ff9b::a00:1]/x.png', 'NAT64 of 10/8'],
       ['http://example.com/x.png', 'http (not in the default)'],
       ['file:///etc/passwd', 'file:'], ['gopher://example.com/', 'gopher:'],
       ['aGVsbG8=', 'a value that is no URL'])),
    { name => 'M9: a public https URL is fine',
      body => qq({$m,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/x.png"}}]}]}),
      status => 200 },
    { name => 'M9: a data: URL is fine',
      body => qq({$m,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}),
      status => 200 },
    { name => 'M9: base64 audio is fine',
      body => qq({$m,"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"UklGRg==","format":"wav"}}]}]}),
      status => 200 },
    { name => 'M9: a video_url to loopback is refused',
      body => qq({$m,"messages":[{"role":"user","content":[{"type":"video_url","video_url":{"url":"https://127.0.0.1/v.mp4"}}]}]}),
      status => 400, code => 'invalid_value',
      param => 'messages[0].content[0].video_url.url' },
    { name => 'M9: an audio_url given as a string is checked',
      body => qq({$m,"messages":[{"role":"user","content":[{"type":"audio_url","audio_url":"https://10.0.0.1/a.wav"}]}]}),
      status => 400, code => 'invalid_value',
      param => 'messages[0].content[0].audio_url' },
    { name => 'M9: a file given by URL is checked',
      body => qq({$m,"messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"https://192.168.0.1/a.pdf"}}]}]}),
      status => 400, code => 'invalid_value',
      param => 'messages[0].content[0].file.file_data' },
    { name => 'M9: llm_media_urls off refuses data: URLs',
      path => '/off/v1/chat/completions',
      body => qq({$m,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}),
      status => 400, code => 'invalid_value',
      param => 'messages[0].content[0].image_url.url' },
    { name => 'M9: llm_media_urls private lets an internal http host through',
      path => '/any/v1/chat/completions',
      body => qq({$m,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://10.0.0.5/x.png"}}]}]}),
      status => 200 },
);

# The principle: what the backend receives.  A tenant with a cap and a
# tpm, on the quota location.
$t->add_tenant($rp, 'cap', 'sk-cap', max_tokens => 100, created => time);
$t->add_tenant($rp, 'tpm', 'sk-tpm', tpm => 1000, created => time);
$t->add_tenant($rp, 'forced', 'sk-forced', force_model => 'small', created => time);

# the one body the backend got: one copy of each member, and what $want
# says of it
sub sent {
    my ($want) = @_;
    return sub {
        my ($name) = @_;
        my @got = bodies();
        is(scalar @got, 1, "$name: one upstream request");
        my ($v, $dup) = strict_decode($got[0] // '');
        ok(!defined $dup, "$name: one copy of each member") or diag($dup);
        ok($v && $want->($v), "$name: the reserved limits reach the backend")
            or diag($got[0]);
    };
}

cases({ port => $gw, path => '/q/v1/chat/completions',
        before => \&reset_bodies },
    { name => 'H2: n x max_tokens over the tenant cap is refused',
      key => 'sk-cap', body => qq({$m,$msgs,"n":2,"max_tokens":60}),
      status => 400,
      message => qr/2 choices of 60 tokens make 120\. This key allows at most 100 completion tokens per request, over all choices/ },
    { name => 'H2: best_of counts against the tenant cap',
      key => 'sk-cap', body => qq({$m,$msgs,"best_of":3,"max_tokens":40}),
      status => 400 },
    { name => 'H2: n x max_tokens within the cap reaches the backend as given',
      key => 'sk-cap', body => qq({$m,$msgs,"n":2,"max_tokens":50}),
      status => 200,
      check => sent(sub { $_[0]{max_tokens} == 50 && $_[0]{n} == 2 }) },
    { name => 'H2: the default max_tokens is the cap shared by the choices',
      key => 'sk-cap', body => qq({$m,$msgs,"n":4}), status => 200,
      check => sent(sub { $_[0]{max_tokens} == 25 && $_[0]{n} == 4
                          && !exists $_[0]{max_completion_tokens} }) },
    { name => 'H2: the reservation covers n x max_tokens (tpm 1000)',
      key => 'sk-tpm', body => qq({$m,$msgs,"n":8,"max_tokens":200}),
      status => 429 },
    { name => 'H2: one choice of the same size fits the tpm',
      key => 'sk-tpm', body => qq({$m,$msgs,"max_tokens":200}), status => 200 },
    { name => 'M6: an image part is charged in the prompt bound (tpm 1000)',
      key => 'sk-tpm',
      body => qq({$m,"max_tokens":10,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}),
      status => 429 },
    { name => 'M6: response_format json_schema is charged in the prompt bound (tpm 1000)',
      key => 'sk-tpm',
      body => qq({$m,$msgs,"max_tokens":10,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":)
          . '{"type":"object","properties":{'
          . join(',', map { qq("p$_":{"type":"integer","minimum":0}) } 1 .. 60)
          . '}}}}}',
      status => 429 },
    { name => 'C1: auto is checked against the model it chose (forced: small, 4096)',
      key => 'sk-forced', body => qq({"model":"auto",$msgs,"max_tokens":8000}),
      status => 400,
      message => qr/^max_tokens is too large: 8000\. This model supports at most 4096 completion tokens/ },
    { name => 'C1: a default larger than the chosen context is cut to it',
      key => 'sk-forced', body => qq({"model":"auto",$msgs}), status => 200,
      check => sent(sub { $_[0]{max_tokens} == 4096 }) },
    { name => 'strict: max_completion_tokens given reaches the backend under that name',
      key => 'sk-cap',
      body => qq({$m,$msgs,"max_completion_tokens":30,"max_tokens":null}),
      status => 200,
      check => sent(sub { $_[0]{max_completion_tokens} == 30
                          && !exists $_[0]{max_tokens} }) },
    { name => 'strict: a stream gets include_usage true and keeps the client\'s other options',
      key => 'sk-cap',
      body => qq({$m,$msgs,"stream":true,"stream_options":{"include_usage":false,"continuous_usage_stats":true},"max_tokens":9}),
      status => 200,
      check => sent(sub { $_[0]{stream_options}{include_usage}
                          && $_[0]{stream_options}{continuous_usage_stats}
                          && $_[0]{max_tokens} == 9 && $_[0]{stream} }) },
);

# the tenant's max_n
$t->add_tenant($rp, 'maxn', 'sk-maxn', max_n => 2, created => time);
cases({ port => $gw },
    { name => 'H2: n over the tenant max_n is refused',
      path => '/q/v1/chat/completions', key => 'sk-maxn',
      body => qq({$m,$msgs,"n":3}), status => 400, param => 'n' });

# H1 on the wire: no copy survives to the backend
reset_bodies();
post($gw, '/v1/chat/completions', qq({$m,"max_tokens":1,$msgs,"max_tokens":48}));
is(scalar(bodies()), 0, 'H1: a body with a duplicate never reaches the backend');

# M10: OpenRouter always sends usage (its "usage":{"include"} is a
# deprecated no-op, review 2026-12-01 S2): the stream is asked for usage
# as any other, the gateway adds no "usage" of its own
reset_bodies();
my ($st) = post($gw, '/v1/chat/completions',
    qq({"model":"orouter",$msgs,"stream":true,"usage":{"include":false}}));
is($st, 200, 'M10: a client usage opt-out is served');
my ($v, $dup) = strict_decode((bodies())[0] // '');
ok(!defined $dup, 'M10: one copy of each member');
is_deeply($v && $v->{usage}, { include => JSON::PP::false }, 'M10: the client\'s usage member passes as sent')
    or diag(explain($v));
ok($v && $v->{stream_options}{include_usage}, 'M10: stream_options.include_usage asked of OpenRouter')
    or diag(explain($v));

# M9: the directive is validated at nginx -t
for my $bad (['ftp', qr/invalid value "ftp" in "llm_media_urls"/],
             ['off https', qr/"off" cannot be combined/],
             ['private', qr/"private" needs "http" or "https"/]) {
    my ($failed, $out) = $t->start_nginx(expect_fail => 1,
        http => "llm_model m { backend http://127.0.0.1:$up/v1; }",
        server => "location /v1/ { llm_gateway; llm_media_urls $bad->[0]; }");
    ok($failed, "M9: llm_media_urls $bad->[0] fails nginx -t");
    like($out, $bad->[1], "M9: llm_media_urls $bad->[0]: the message names it");
}

# still alive
($st) = post($gw, '/v1/chat/completions', qq({$m,$msgs}));
is($st, 200, 'gateway still serves');

$t->cleanup;
done_testing;
