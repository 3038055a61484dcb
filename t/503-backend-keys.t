# Each attempt carries its own backend's key and nothing else: not the
# client's, not the key of a backend tried before it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $up = $t->start_mock;
local $ENV{LLMT_K1} = 'sk-first-backend-key';
local $ENV{LLMT_K2} = 'sk-second-backend-key';
my $gw = $t->start_nginx(
    http => "llm_model keyed { backend http://127.0.0.1:$up/s503/v1 api_key_env=LLMT_K1;
                               backend http://127.0.0.1:$up/v1 api_key_env=LLMT_K2; }
             llm_model open { backend http://127.0.0.1:$up/v1; }",
    server => 'location /v1/ { llm_gateway; }',
);

sub auth_headers {
    my @raw = @{ $t->mock_stats($up)->{last_raw_headers} || [] };
    my @auth;
    for (my $i = 0; $i < @raw; $i += 2) {
        push @auth, $raw[$i + 1] if lc $raw[$i] eq 'authorization';
    }
    return @auth;
}

my ($st) = chat($gw, key => 'sk-client-own', model => 'keyed');
is($st, 200, 'the second backend answered after the first one\'s 503');
is_deeply([auth_headers()], ['Bearer sk-second-backend-key'],
    'the second backend saw its own key only');

($st) = chat($gw, key => 'sk-client-own', model => 'open');
is($st, 200, 'a backend without a key');
is_deeply([auth_headers()], [], 'gets no Authorization at all, not the client\'s');

$t->cleanup;
done_testing;
