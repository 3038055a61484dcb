# Every bad input gets OpenAI's error JSON with the right status, and
# nginx keeps running.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
my $gw = $t->start_nginx(
    http => "llm_model mixtral-8x7b { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; llm_max_request_body 64k; }',
);
my %json = ('Content-Type' => 'application/json');

sub check {
    my ($name, $want, $code, $method, $path, $headers, $body) = @_;
    my ($st, $h, $b) = http_request($gw, $method, $path, $headers, $body);
    is($st, $want, "$name: status $want");
    my $j = json_of($b);
    ok($j && ref $j->{error} eq 'HASH', "$name: error object") or diag($b);
    ok(defined $j->{error}{message} && defined $j->{error}{type}
        && exists $j->{error}{param} && exists $j->{error}{code},
        "$name: message, type, param, code");
    like($h->{'content-type'} // '', qr{application/json}, "$name: json");
    is($j->{error}{code}, $code, "$name: code $code") if defined $code;
    return $j;
}

my $msgs = '"messages":[{"role":"user","content":"hi"}]';
my $post = sub { check($_[0], $_[1], $_[2], 'POST', '/v1/chat/completions', \%json, $_[3]) };

$post->('malformed json', 400, 'invalid_json', '{"model":');
$post->('empty body', 400, 'invalid_json', '');
$post->('not an object', 400, 'invalid_type', '[1,2]');
$post->('missing messages', 400, 'missing_required_parameter', '{"model":"mixtral-8x7b"}');
$post->('empty messages', 400, 'empty_array', '{"model":"mixtral-8x7b","messages":[]}');
$post->('messages not array', 400, 'invalid_type', '{"model":"mixtral-8x7b","messages":"hi"}');
$post->('message not object', 400, 'invalid_type', '{"model":"mixtral-8x7b","messages":["hi"]}');
$post->('role missing', 400, undef, '{"model":"mixtral-8x7b","messages":[{"content":"hi"}]}');
$post->('role unknown', 400, 'invalid_value', '{"model":"mixtral-8x7b","messages":[{"role":"wizard","content":"hi"}]}');
$post->('content number', 400, 'invalid_type', '{"model":"mixtral-8x7b","messages":[{"role":"user","content":5}]}');
$post->('content missing', 400, 'missing_required_parameter', '{"model":"mixtral-8x7b","messages":[{"role":"user"}]}');
$post->('parts not objects', 400, 'invalid_type', '{"model":"mixtral-8x7b","messages":[{"role":"user","content":["x"]}]}');
$post->('part without type', 400, 'invalid_type', '{"model":"mixtral-8x7b","messages":[{"role":"user","content":[{"text":"x"}]}]}');
$post->('missing model', 400, 'missing_required_parameter', "{$msgs}");
$post->('unknown model', 404, 'model_not_found', qq({"model":"gpt-17",$msgs}));

for my $f (
    [model => '5'], [stream => '"yes"'], [max_tokens => '"10"'], [max_tokens => '0'],
    [max_tokens => '1.5'], [max_completion_tokens => '-3'], [temperature => '"hot"'],
    [temperature => '3'], [top_p => '1.5'], [stop => '5'], [stop => '[1]'],
    [stop => '["a","b","c","d","e"]'], [n => '0'], [n => '"2"'], [seed => '1.5'],
    [tools => '{}'], [tools => '[5]'], [tool_choice => '5'], [response_format => '"json"'],
    [response_format => '{}'], [user => '5'], [stream_options => '"x"'],
    [stream_options => '{"include_usage":"yes"}'],
) {
    my ($k, $v) = @$f;
    my $body = $k eq 'model' ? qq({"model":$v,$msgs}) : qq({"model":"mixtral-8x7b",$msgs,"$k":$v});
    my $j = $post->("bad $k=$v", 400, undef, $body);
    like($j->{error}{param} // '', qr/^\Q$k\E/, "bad $k: param named");
}

# valid shapes pass (content parts, nulls, tools)
my ($st) = http_request($gw, 'POST', '/v1/chat/completions', \%json,
    '{"model":"mixtral-8x7b","messages":[{"role":"system","content":"s"},'
    . '{"role":"user","content":[{"type":"text","text":"hi"}]},'
    . '{"role":"assistant","content":null,"tool_calls":[]},'
    . '{"role":"tool","content":"r","tool_call_id":"x"}],'
    . '"temperature":0,"top_p":1,"n":1,"seed":42,"stop":["\n"],"user":"u",'
    . '"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto",'
    . '"response_format":{"type":"json_object"},"max_tokens":null,"stream":false}');
is($st, 200, 'all valid fields pass');

# NUL, invalid UTF-8, huge numbers, deep nesting
$post->('NUL byte', 400, undef, qq({"model":"mixtral-8x7b",\0$msgs}));
($st) = http_request($gw, 'POST', '/v1/chat/completions', \%json,
    qq({"model":"mixtral-8x7b","messages":[{"role":"user","content":"\xff\xfe"}]}));
ok($st == 200 || $st == 400, "invalid UTF-8: handled ($st)");
$post->('huge number', 400, undef, qq({"model":"mixtral-8x7b",$msgs,"max_tokens":1e400}));
$post->('deep nesting', 400, 'invalid_json',
    qq({"model":"mixtral-8x7b",$msgs,"x":) . ('[' x 5000) . (']' x 5000) . '}');

# size, method, content type, path
$post->('too large', 413, 'request_too_large',
    qq({"model":"mixtral-8x7b",$msgs,"user":") . ('x' x 70000) . '"}');
my $big = qq({"model":"mixtral-8x7b",$msgs,"user":") . ('x' x 70000) . '"}';
check('too large chunked', 413, 'request_too_large', 'POST', '/v1/chat/completions',
    { %json, 'Transfer-Encoding' => 'chunked' },
    sprintf("%x\r\n%s\r\n0\r\n\r\n", length($big), $big));
my $huge = 'x' x (1 << 20);
check('8 MiB chunked, read and dropped', 413, 'request_too_large', 'POST', '/v1/chat/completions',
    { %json, 'Transfer-Encoding' => 'chunked' },
    join('', map { sprintf("%x\r\n%s\r\n", length $huge, $huge) } 1 .. 8) . "0\r\n\r\n");
($st, my $h, my $b) = http_request($gw, 'POST', '/v1/chat/completions',
    { %json, 'Transfer-Encoding' => 'chunked' },
    sprintf("%x\r\n%s\r\n0\r\n\r\n", length(qq({"model":"mixtral-8x7b",$msgs})), qq({"model":"mixtral-8x7b",$msgs})));
is($st, 200, 'chunked request body accepted');
check('wrong method', 405, 'method_not_allowed', 'GET', '/v1/chat/completions');
check('wrong method models', 405, 'method_not_allowed', 'POST', '/v1/models', \%json, '{}');
check('wrong content type', 415, 'unsupported_media_type', 'POST', '/v1/chat/completions',
    { 'Content-Type' => 'text/plain' }, qq({"model":"mixtral-8x7b",$msgs}));
check('form content type', 415, 'unsupported_media_type', 'POST', '/v1/chat/completions',
    { 'Content-Type' => 'application/x-www-form-urlencoded' }, 'a=b');
check('unknown path', 404, 'not_found', 'GET', '/v1/embeddings');
($st, $h) = http_request($gw, 'GET', '/v1/chat/completions');
like($h->{allow} // '', qr/POST/, '405 names the allowed method');

# still alive
($st) = http_request($gw, 'POST', '/v1/chat/completions', \%json, qq({"model":"mixtral-8x7b",$msgs}));
is($st, 200, 'gateway still serves');

$t->cleanup;
done_testing;
