# ./config.sh as an operator uses it: run starts one working stack, a
# second run replaces it with exactly one, build while it runs does not
# crash its workers, and stop stops everything, every time.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use HTTP::Tiny;
use Test::More;
use LLMTest;

plan skip_all => 'LLAMA_SERVER and the models unset (./config.sh test sets them)'
    unless $ENV{LLAMA_SERVER} && $ENV{LLM_MODEL_SMALL} && $ENV{LLM_MODEL_LARGE};

my $root = "$FindBin::Bin/..";
my $state = tempdir(CLEANUP => 1);
my %env = (
    LLM_STATE_DIR => $state,
    LLM_PORT => LLMTest::free_port(),
    REDIS_PORT => LLMTest::free_port(),
    LLM_SMALL_PORT => LLMTest::free_port(),
    LLM_LARGE_PORT => LLMTest::free_port(),
);
my @names = qw(logs/nginx redis tiny-8x7b tiny-8x22b);

sub config_sh {
    local %ENV = (%ENV, %env);
    my $out = `$root/config.sh @_ 2>&1`;
    return ($? >> 8, $out);
}

sub pids {
    my %p;
    for my $n (@names) {
        open my $fh, '<', "$state/$n.pid" or next;
        chomp(my $pid = <$fh> // '');
        $p{$n} = $pid if $pid =~ /^\d+$/;
    }
    return \%p;
}

sub alive { kill 0, $_[0] }

sub masters {
    # nginx masters of this prefix
    my @m = grep { /master process .*\Q$state\E/ } `ps -eo args`;
    return scalar @m;
}

sub chat_ok {
    open my $fh, '<', "$state/demo.key" or return 0;
    chomp(my $key = <$fh>);
    my $res = HTTP::Tiny->new(timeout => 60)->post(
        "http://127.0.0.1:$env{LLM_PORT}/v1/chat/completions",
        { headers => { 'Content-Type' => 'application/json',
                       Authorization => "Bearer $key" },
          content => '{"model":"mixtral-8x7b","max_tokens":4,'
                     . '"messages":[{"role":"user","content":"Hi"}]}' });
    return $res->{status} == 200 && $res->{content} =~ /"choices"/;
}

END { config_sh('stop') if $state && -d $state }

my ($rc, $out) = config_sh('run');
is($rc, 0, 'run: exits 0') or diag($out);
like($out, qr{is up on http://127\.0\.0\.1:$env{LLM_PORT}}, 'run: says where');
my $first = pids();
is(scalar(grep { alive($first->{$_}) } @names), 4,
    'run: nginx, redis and both workers are running');
ok(chat_ok(), 'run: the demo key gets an answer from a real worker');
like($out, qr{Status page \(loopback only\): http://127\.0\.0\.1:$env{LLM_PORT}/status},
     'run: prints the status page');
my $page = HTTP::Tiny->new(timeout => 10)
    ->get("http://127.0.0.1:$env{LLM_PORT}/status?format=json");
is($page->{status}, 200, 'run: the status page answers');
like($page->{content}, qr/"requests":[1-9]/, '... and counted the chat');

($rc, $out) = config_sh('run');
is($rc, 0, 'run again: exits 0') or diag($out);
my $second = pids();
is(scalar(grep { alive($second->{$_}) } @names), 4,
    'run again: all four are running');
is(scalar(grep { alive($first->{$_}) } @names), 0,
    'run again: none of the first run is left');
is(masters(), 1, 'run again: exactly one nginx master');
ok(chat_ok(), 'run again: the gateway answers');

# a build installs a new file under the running master; the workers it
# respawns load it whole
my $so = "$root/build/modules/ngx_http_llm_module.so";
my $inode = (stat $so)[1];
($rc, $out) = config_sh('build');
is($rc, 0, 'build while running: exits 0') or diag($out);
isnt((stat $so)[1], $inode,
    'build while running: a new file renamed over the module, not rewritten');
my @workers = grep { /^\d+$/ }
    map { (split ' ')[0] } grep { /nginx: worker process/ }
    `ps -o pid=,args= --ppid $second->{'logs/nginx'}`;
ok(@workers, 'the running master has workers');
kill 'KILL', $workers[0] if @workers;
my $respawned = 0;
for (1 .. 50) {
    my @now = grep { /nginx: worker process/ }
        `ps -o args= --ppid $second->{'logs/nginx'}`;
    $respawned = 1, last if @now >= @workers;
    select(undef, undef, undef, 0.1);
}
ok($respawned, 'a killed worker is respawned');
ok(chat_ok(), 'build while running: the gateway still answers');
sleep 1;
my $log = do { local (@ARGV, $/) = "$state/logs/error.log"; <> } // '';
my $crashes = () = $log =~ /exited on signal/g;
is($crashes, 1, 'build while running: no worker crashed but the one killed')
    or diag($log =~ /(.*exited on signal.*)/g);

($rc, $out) = config_sh('stop');
is($rc, 0, 'stop: exits 0') or diag($out);
is(scalar(grep { alive($second->{$_}) } @names), 0,
    'stop: nginx, redis and both workers are gone');
is(masters(), 0, 'stop: no nginx master is left');
ok(!HTTP::Tiny->new(timeout => 2)
    ->get("http://127.0.0.1:$env{LLM_PORT}/metrics")->{success},
    'stop: nothing answers on the port');

($rc, $out) = config_sh('stop');
is($rc, 0, 'stop again: exits 0 with nothing to stop') or diag($out);

done_testing();
