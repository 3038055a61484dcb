# The SPM token counter (ngx_module/ngx_http_llm_tokenizer.c) against the
# real thing: llama-server's /tokenize on the small model, whose vocabulary
# is llama.cpp's ggml-vocab-llama-spm.gguf, for some 300 texts (prose in
# five languages, code, JSON, logs, digit and whitespace runs, emoji, CJK,
# 200 KB of text); token ids must be the same, one for one.  llama-server
# cannot receive invalid UTF-8 (its JSON parser refuses it), so those texts
# are held to what llama.cpp's code does with them, worked out by hand.
# Then the same on a copy of the model with some tokens made user-defined,
# which llama.cpp splits out of the text first.  The harness,
# t/tokenizer/tok_count.c, checks each count against its own encode and
# bounds.
use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IPC::Open2;
use Time::HiRes qw(time);
use Encode qw(encode_utf8);
use LLMTest;

plan skip_all => 'LLAMA_SERVER and LLM_MODEL_SMALL unset (./config.sh test sets them)'
    unless $ENV{LLAMA_SERVER} && $ENV{LLM_MODEL_SMALL};

my $t = LLMTest->new;
my $bin = $t->build_tool('tok_count', 't/tokenizer/tok_count.c',
                         'ngx_module/ngx_http_llm_tokenizer.c')
    or BAIL_OUT('tok_count does not build');

# a llama-server of its own on a model, with the harness on the same file
# (the loader reads its metadata only)
my ($port, $pid, $from, $to);
sub start {
    my ($model) = @_;
    $port = free_port();
    my $log = $t->dir . "/llama-$port.log";
    LLMTest::_spawn('llama-server', {}, 'sh', '-c', "exec $ENV{LLAMA_SERVER}"
        . " -m $model --host 127.0.0.1 --port $port -c 512"
        . " -np 1 -t 1 --no-webui --log-disable >$log 2>&1");
    wait_until(sub {
        my ($st) = eval { http_request($port, 'GET', '/health') };
        return $st && $st == 200;
    }, 120) or BAIL_OUT('llama-server did not start: ' . `tail -5 $log`);
    $pid = open2($from, $to, $bin, $model)
        or BAIL_OUT('tok_count does not start');
    $to->autoflush(1);
}
start($ENV{LLM_MODEL_SMALL});

sub mine {
    my ($bytes) = @_;
    print $to unpack('H*', $bytes), "\n";
    my $line = <$from> // return;
    my ($n, $lo, $hi, @ids) = split ' ', $line;
    return { n => $n, lo => $lo, hi => $hi, ids => \@ids };
}

sub theirs {
    my ($text) = @_;
    my ($st, undef, $b) = post($port, '/tokenize', { content => $text,
        add_special => JSON::PP::false, parse_special => JSON::PP::false },
        timeout => 60);
    return unless $st && $st == 200;
    return json_of($b)->{tokens};
}

# ---------------------------------------------------------------- texts

my @texts = (
    '', ' ', '  ', '   ', "\t", "\n", "\n\n", " \n ", 'a', 'I', 'Hello',
    'Hello world', 'Hello  world', ' Hello world', 'Hello world ',
    "Hello\tworld", "Hello\nworld", "Hello\r\nworld",
    'The quick brown fox jumps over the lazy dog.',
    "What's the weather like today? I'd like to know!",
    'Le renard brun rapide saute par-dessus le chien paresseux.',
    "C'est l'été : où êtes-vous allés ? À bientôt, François !",
    'Œuvre, cœur, naïveté, garçon, façade, déjà vu.',
    'Der schnelle braune Fuchs springt über den faulen Hund.',
    'Straße, Größe, Übermäßig, Fußgängerüberweg, Donaudampfschifffahrt.',
    'Schöne Grüße aus München und Köln; äöü ÄÖÜ ß.',
    'La volpe marrone veloce salta sopra il cane pigro.',
    "Perché è così difficile? Città, università, caffè, più.",
    'El rápido zorro marrón salta sobre el perro perezoso.',
    '¿Dónde está la biblioteca? ¡Mañana será otro día! Niño, pingüino.',
    'int main(void) { return 0; }',
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}\n",
    "#include <stdio.h>\n\nint\nmain(int argc, char **argv)\n{\n"
        . "    printf(\"%s\\n\", argv[0]);\n    return 0;\n}\n",
    'SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL 1 DAY;',
    "const x = (a, b) => a ?? b; // nullish\nlet y = `template \${x}`;",
    'fn main() { let v: Vec<u8> = vec![1, 2, 3]; println!("{:?}", v); }',
    '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"hi"}]}',
    '{"a": 1, "b": [true, false, null], "c": {"d": "e\\u00e9"}, "f": -1.5e10}',
    "{\n  \"key\": \"value\",\n  \"list\": [\n    1,\n    2\n  ]\n}",
    '2024-03-15T12:34:56.789Z INFO  [worker-3] request id=0x7f3a9c21 done in 12ms',
    '[2024-01-01 00:00:00] ERROR: connection refused (errno=111) at 10.0.0.1:6379',
    'Mar 15 12:34:56 host kernel: [12345.678901] usb 1-1: new high-speed USB device',
    'sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    'deadbeef DEADBEEF 0xCAFEBABE 0x00ff00ff 0b101010 0o777',
    '0', '1', '42', '123', '1234567890', '3.14159265358979323846',
    '1,000,000.00', '-273.15', '1e-9', '2^64 = 18446744073709551616',
    ('9' x 100), ('0' x 1000), ('12' x 300),
    'a' x 100, 'ab' x 200, 'aaaa bbbb' x 50, ('the ' x 300),
    ' ' x 7, ' ' x 16, ' ' x 33, ' ' x 200, "\t" x 9, "\n" x 17,
    " \t \n \r\n  \t\t  ", "x \t y \n z", "    indented\n        more\n",
    '🦙', '🦙 llama', '😀😃😄😁', '👍🏽', '👨‍👩‍👧‍👦', '🇫🇷🇩🇪🇮🇹🇪🇸',
    'I ❤️ NY', '☕ and 🍕 at 🕛', '∑ ∫ √ ∞ ≠ ≤ ≥ ± × ÷ → ⇒ ∀ ∃',
    '日本語のテキスト', '東京は日本の首都です。', 'こんにちは、世界！',
    '中文文本测试，你好世界。', '繁體中文：臺灣', '한국어 텍스트입니다',
    'Привет, мир! Как дела?', 'Ελληνικά γράμματα', 'مرحبا بالعالم',
    'שלום עולם', 'नमस्ते दुनिया', 'สวัสดีชาวโลก', 'Tiếng Việt có dấu',
    'mixed English and 日本語 and 한국어 and Русский',
    "\x{2581}", "\x{2581}\x{2581}", "a\x{2581}b", "<s>", "</s>", "<unk>",
    '<0x41>', '<s>Hello</s>', '[INST] hello [/INST]', '<|im_start|>user',
    "\x{0}", "\x{1}\x{2}\x{7f}", "a\x{0}b", "\x{feff}BOM", "\x{200b}zero",
    "\x{00ad}soft", "e\x{301}", "\x{1F600}" x 30, "\x{10FFFF}",
    "\x{E000}private", "\x{FFFD}", 'ŉ ſ ǅ ﬁ ﬀ', '½ ¼ ² ³ ™ © ®',
    'https://example.com/path?query=1&x=%20y#frag',
    'user@example.com, root@localhost, "Name" <a.b+c@d.io>',
    'C:\\Windows\\System32\\drivers\\etc\\hosts',
    '/usr/local/lib/x86_64-linux-gnu/libfoo.so.1.2.3',
    'MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA+/=',
    '```python\nprint("hi")\n```', '| a | b |\n|---|---|\n| 1 | 2 |',
    '- item one\n- item two\n  - nested', '# Title\n\n## Sub\n\nText.',
    '$$\\frac{a}{b} = \\sqrt{x^2 + y^2}$$',
    'Mr. Smith (aged 42) paid $1,234.56 — that’s “a lot”… isn’t it?',
    "It's don't won't can't I'm you're they've we'll",
    'UPPERCASE TEXT SHOUTING LOUDLY', 'camelCaseIdentifier snake_case_name',
    'kebab-case-name SCREAMING_SNAKE PascalCase', 'x' x 49, 'ab cd ef gh',
);

# prose of each language, in lengths and mixes
my @prose = (
    'The gateway counts the tokens of each prompt before it forwards it.',
    'Les jetons du prompt sont comptés avant que la requête ne parte.',
    'Die Anzahl der Token wird gezählt, bevor die Anfrage weitergeht.',
    'I token del prompt vengono contati prima di inoltrare la richiesta.',
    'Los tokens del prompt se cuentan antes de reenviar la solicitud.',
    'def count(text): return len(tokenize(text))  # exact, not estimated',
    '{"id": 17, "tokens": [1, 2, 3], "ok": true}',
    '2025-06-01 08:00:00.123 WARN quota tenant=acme used=98% key=0x1f2e',
    '日本語と English を混ぜた文。', '🦙🦙 emoji 🎉 party 🎉',
);
my $seed = 7;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2**31; $seed % $_[0] }
for my $i (0 .. 119) {
    my $s = '';
    my $n = 1 + rnd(6);
    for (1 .. $n) {
        $s .= $prose[rnd(scalar @prose)];
        $s .= ('', ' ', '  ', "\n", "\t", "\n\n", ' - ', ', ')[rnd(8)];
    }
    # and a cut at a character, so that a text may start or end mid-word
    my $cut = rnd(length $s);
    push @texts, $i % 3 ? $s : substr($s, $cut);
}

# random strings of the characters that are hard: spaces, digits, symbols
my @alphabet = (' ', ' ', "\t", "\n", 'a', 'e', 'z', 'Q', '0', '7', '.',
    ',', '-', '_', '(', ')', '"', "'", 'é', 'ß', 'ñ', '中', '日', '한',
    '🦙', '😀', "\x{2581}", '<', '>', '/', '\\', '{', '}', '#', '$');
for my $i (0 .. 59) {
    my $len = 1 + rnd(80);
    push @texts, join '', map { $alphabet[rnd(scalar @alphabet)] } 1 .. $len;
}

# 200 KB: the prose, code and logs over and over, with odd bits between
my $big = '';
my $k = 0;
while (length(encode_utf8($big)) < 200 * 1024) {
    $big .= $prose[$k % @prose] . ('', ' ', "\n", '  ', "\t")[$k % 5]
        . ($k % 13 ? '' : "\x{1F600} 12345 ");
    $k++;
}
push @texts, $big;

cmp_ok(scalar @texts, '>=', 200, scalar(@texts) . ' texts');

# ---------------------------------------------------------------- compare

sub compare {
    my ($what, @texts) = @_;
    my ($same, @diff) = (0);
    for my $text (@texts) {
        my $want = theirs($text);
        my $got = mine(encode_utf8($text));
        if ($want && $got && "@$want" eq "@{ $got->{ids} }") {
            $same++;
        } else {
            push @diff, [$text, $want, $got && $got->{ids}];
        }
    }
    is($same, scalar @texts, "$what: $same of " . @texts
       . ' texts tokenized as llama-server does');
    for my $d (@diff[0 .. ($#diff < 9 ? $#diff : 9)]) {
        my ($text, $want, $got) = @$d;
        $text = substr($text, 0, 80) . '...' if length $text > 80;
        diag(sprintf("%s\n  llama-server: %s\n  tok_count:    %s",
            encode_utf8(JSON::PP->new->ascii->allow_nonref->encode($text)),
            $want ? "@$want" : 'no answer', $got ? "@$got" : 'no answer'));
    }
}
compare('llama-spm', @texts);

# the bounds hold (tok_count exits otherwise) and are worth something
my $b = mine(encode_utf8($big));
ok($b && $b->{lo} <= $b->{n} && $b->{n} <= $b->{hi},
   "200 KB: $b->{n} tokens within [$b->{lo}, $b->{hi}]");
ok($b->{lo} * 3 >= $b->{n} && $b->{hi} <= 2 * $b->{n},
   '200 KB: the bounds within a third and twice the count');

# ---------------------------------------------------------------- invalid UTF-8

# llama.cpp cuts characters by the lead byte alone (unicode_len_utf8), so
# that a bad lead byte swallows what follows it, an escaped space included,
# and every byte of a character that is no token goes out as <0xXX>
my %id = map { $_ => mine($_)->{ids} } qw(a hi abc cd x);
my $space = 29871;                  # "▁"
sub byte { map { $_ + 3 } @_ }      # <0x00> is token 3
my $y = `$bin -i $ENV{LLM_MODEL_SMALL} y b 2>/dev/null`;
my ($yid, $bid) = split ' ', $y;
my @bad = (
    ["\xff", [$space, byte(0xff)]],
    ["abc\xe4", [@{ $id{abc} }, byte(0xe4)]],
    ["\xe4ab cd", [$space, byte(0xe4, 0x61, 0x62), @{ $id{cd} }]],
    ["x\xc3 y", [@{ $id{x} }, byte(0xc3, 0xe2, 0x96, 0x81), $yid]],
    ["a\x80\x80b", [@{ $id{a} }, byte(0x80, 0x80), $bid]],
    ["hi\xf0\x9f", [@{ $id{hi} }, byte(0xf0, 0x9f)]],
    ["\xed\xa0\x80", [$space, byte(0xed, 0xa0, 0x80)]],
    ["\xc0\xaf", [$space, byte(0xc0, 0xaf)]],
);
for my $c (@bad) {
    my ($bytes, $want) = @$c;
    my $got = mine($bytes);
    is("@{ $got->{ids} }", "@$want", 'invalid UTF-8 ' . unpack('H*', $bytes)
       . ' as llama.cpp cuts it');
}

# hostile texts of 1 MB: counted, and in time (no quadratic case)
for my $h (['a run', 'a' x 2**20], ['digits', '7' x 2**20],
           ['spaces', ' ' x 2**20], ['emoji', "\xf0\x9f\xa6\x99" x 2**18],
           ['bad bytes', "\xe4\xff\x80" x 349525])
{
    my ($name, $bytes) = @$h;
    my $t0 = time;
    my $got = mine($bytes);
    my $dt = time - $t0;
    ok($got && $got->{n} > 0 && $dt < 20, "1 MB of $name: $got->{n} tokens"
       . sprintf(' in %.2f s', $dt));
}

sub done {
    close $to;
    waitpid $pid, 0;
    is($?, 0, 'tok_count found no count, encode and bounds that disagree');
}
done();

# ---------------------------------------------------------------- user-defined

# the same model with some tokens made user-defined (type 4), which split
# the text before anything else, parse_special off or not: a copy of the
# file with their types changed, and the same comparison
sub user_defined {
    my ($in, $out, @names) = @_;
    open my $fh, '<:raw', $in or die "$in: $!";
    my $d = do { local $/; <$fh> };
    close $fh;
    my %size = (0, 1, 1, 1, 2, 2, 3, 2, 4, 4, 5, 4, 6, 4, 7, 1, 10, 8, 11, 8,
                12, 8);
    my $p = 24;
    my $str = sub {
        my $l = unpack('Q<', substr($d, $p, 8));
        $p += 8 + $l;
        return substr($d, $p - $l, $l);
    };
    my ($types, @tokens);
    for (1 .. unpack('Q<', substr($d, 16, 8))) {
        my $key = $str->();
        my $type = unpack('V', substr($d, $p, 4));
        $p += 4;
        if ($type == 8) { $str->(); next }
        if ($type != 9) { $p += $size{$type}; next }
        my ($et, $n) = unpack('VQ<', substr($d, $p, 12));
        $p += 12;
        $types = $p if $key eq 'tokenizer.ggml.token_type';
        if ($et == 8) {
            my @s = map { $str->() } 1 .. $n;
            @tokens = @s if $key eq 'tokenizer.ggml.tokens';
            next;
        }
        $p += $n * $size{$et};
    }
    my %id;
    @id{@tokens} = 0 .. $#tokens;
    for (@names) {
        my $i = $id{encode_utf8($_)} // die "no token $_";
        substr($d, $types + 4 * $i, 4) = pack('V', 4);
    }
    open $fh, '>:raw', $out or die "$out: $!";
    print $fh $d;
    close $fh;
}

my $model = $t->dir . '/model-user.gguf';
user_defined($ENV{LLM_MODEL_SMALL}, $model, 'ing', 'the', 'ab', 'll', 'é',
    '日', "\x{2581}the", "\x{2581}\x{2581}");
start($model);
compare('user-defined tokens', grep { length } @texts,
    'ing', 'thing', 'the theme', 'ababab', 'llama allele', 'ab ll ing',
    " the\x{2581}the \x{2581}\x{2581}the", "\x{2581}\x{2581}\x{2581}x",
    '日本日 日', 'éé é', 'the ', ' the', "the\nthe", 'singing in the rain');
done();

done_testing;
