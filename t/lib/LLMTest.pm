package LLMTest;

# The test harness: starts nginx with the module, redis-server, the mock
# upstream and llama-server on free loopback ports under a temporary
# prefix, talks raw HTTP/1.1 to them, and stops every process it started,
# even when a test dies.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(:sys_wait_h setsid);
use Test::More;
use Time::HiRes qw(sleep time);

use Exporter 'import';
our @EXPORT = qw(free_port http_request sse_events json_of wait_until
    decode_json encode_json parallel_requests chat chat_request post
    post_request content_of cases rkey key_prefix key_re);

our ($ROOT, %KEYS);

# the Redis key names, from the list in redis/keys: KEY_<NAME> is the
# family's pattern, which rkey() fills in
BEGIN {
    $ROOT = $ENV{LLM_ROOT} // abs_path(dirname(__FILE__) . '/../..');
    open my $fh, '<', "$ROOT/redis/keys" or die "$ROOT/redis/keys: $!";
    local $_;
    while (<$fh>) {
        next if /^\s*(#|$)/;
        my ($name, $pattern) = /^([A-Z][A-Z0-9_]*)\s+(\S+)/
            or die "redis/keys:$.: not a key family";
        $KEYS{"KEY_$name"} = $pattern;
    }
    require constant;
    constant->import(\%KEYS);
}
push @EXPORT, sort keys %KEYS;

our $MODULE = $ENV{LLM_MODULE}
    // "$ROOT/build/modules/ngx_http_llm_module.so";

my @children;     # [pid, name]
my @instances;

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
        Listen => 1, ReuseAddr => 1) or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub new {
    my ($class, %o) = @_;
    my $self = bless { dir => tempdir('llmtest-XXXXXX', TMPDIR => 1,
        CLEANUP => !$ENV{LLM_KEEP}), %o }, $class;
    push @instances, $self;
    return $self;
}

sub dir { $_[0]{dir} }

sub _spawn {
    my ($name, $env, @cmd) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        setsid();
        %ENV = (%ENV, %$env);
        open STDIN, '<', '/dev/null';
        exec @cmd or do { print STDERR "exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }
    push @children, [$pid, $name];
    return $pid;
}

sub wait_until {
    my ($cb, $timeout) = @_;
    my $end = time + ($timeout // 10);
    while (time < $end) {
        return 1 if $cb->();
        sleep 0.05;
    }
    return 0;
}

sub _port_open {
    my ($port, $host) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => $host // '127.0.0.1',
        PeerPort => $port,
        Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}

# ---------------------------------------------------------------- servers

sub start_mock {
    my ($self, %o) = @_;
    my $port = $o{port} // free_port();
    my $log = "$self->{dir}/mock-$port.log";
    my $pid = _spawn('mock', {}, 'sh', '-c',
        "exec node $ROOT/t/mock/upstream.js --port $port >$log 2>&1");
    wait_until(sub { _port_open($port) }, 10) or die "mock did not start";
    $self->{mock_pids}{$port} = $pid;
    return $port;
}

sub stop_mock {
    my ($self, $port) = @_;
    my $pid = delete $self->{mock_pids}{$port} or return;
    _kill($pid, 'TERM');
}

sub mock_stats {
    my ($self, $port) = @_;
    my ($st, $h, $b) = http_request($port, 'GET', '/_stats');
    return decode_json($b);
}

sub mock_reset {
    my ($self, $port) = @_;
    http_request($port, 'POST', '/_reset', {}, '');
}

sub start_redis {
    my ($self, %o) = @_;
    my $port = $o{port} // free_port();
    my $dir = "$self->{dir}/redis-$port";
    mkdir $dir;
    # bind: another address of 127/8; tls => {cert, key, ca, auth_clients}:
    # TLS only, on $port (the plain port is then 0)
    my $bind = $o{bind} // '127.0.0.1';
    my @listen = ('--port', $port);
    if (my $tls = $o{tls}) {
        @listen = ('--port', 0, '--tls-port', $port,
            '--tls-cert-file', $tls->{cert}, '--tls-key-file', $tls->{key},
            '--tls-ca-cert-file', $tls->{ca},
            '--tls-auth-clients', $tls->{auth_clients} // 'no');
    }
    my $pid = _spawn('redis', {}, 'redis-server', '--bind', $bind,
        @listen, '--save', '', '--appendonly', 'no', '--dir', $dir,
        '--logfile', "$dir/redis.log", ($o{args} ? @{$o{args}} : ()));
    wait_until(sub { _port_open($port, $bind) }, 10)
        or die "redis did not start: " . `tail -5 $dir/redis.log`;
    $self->{redis}{$o{bind} ? "$bind:$port" : $port} = $pid;
    return $port;
}

sub stop_redis {
    my ($self, $port) = @_;
    my $pid = delete $self->{redis}{$port} or return;
    _kill($pid, 'KILL');
}

# $port: a port; [PORT, ARGS...], a port and more redis-cli arguments
# ahead of the command (-c to follow a cluster's redirections); or an
# array of redis-cli's own arguments (--tls ...), e.g. from
# redis_tls_cli()
sub _cli_target {
    my ($t) = @_;
    return ('-p', $t) unless ref $t eq 'ARRAY';
    return ('-p', @$t) if $t->[0] =~ /^\d+\z/;
    return @$t;
}

sub redis_cli {
    my ($self, $port, @args) = @_;
    open my $fh, '-|', 'redis-cli', _cli_target($port), @args
        or die "redis-cli: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    $out =~ s/\s+\z// if defined $out;
    return $out;
}

# ---------------------------------------------------------------- sentinel

# A Sentinel group: a primary, one replica of it and three sentinels
# watching it as "mymaster" (quorum 2, down after 1 s, failover timeout
# 5 s), each sentinel with a conf file of its own in its own dir, since
# sentinels rewrite theirs.  Returns once every sentinel names the
# primary, knows the replica and the two other sentinels, and the replica
# is in sync: {primary, replica, sentinels => [3 ports], name}.
# opts: name (mymaster), timeout (20 s)
sub start_sentinel_group {
    my ($self, %o) = @_;
    my $name = $o{name} // 'mymaster';
    my $primary = $self->start_redis;
    my $replica = $self->start_redis(
        args => ['--replicaof', '127.0.0.1', $primary]);
    my @sentinels;
    for (1 .. 3) {
        my $port = free_port();
        my $dir = "$self->{dir}/sentinel-$port";
        mkdir $dir;
        open my $fh, '>', "$dir/sentinel.conf" or die "$dir: $!";
        print $fh <<"EOC";
bind 127.0.0.1
port $port
dir $dir
logfile $dir/sentinel.log
sentinel monitor $name 127.0.0.1 $primary 2
sentinel down-after-milliseconds $name 1000
sentinel failover-timeout $name 5000
sentinel parallel-syncs $name 1
EOC
        close $fh;
        my $pid = _spawn('sentinel', {}, 'redis-server', "$dir/sentinel.conf",
            '--sentinel');
        wait_until(sub { _port_open($port) }, 10)
            or die "sentinel did not start: " . `tail -5 $dir/sentinel.log`;
        $self->{redis}{$port} = $pid;
        push @sentinels, $port;
    }
    my $g = { primary => $primary, replica => $replica,
              sentinels => \@sentinels, name => $name };
    $self->sentinel_settled($g, $primary, $replica, $o{timeout} // 20)
        or die "the sentinel group did not settle:\n"
            . join '', map { `tail -5 $self->{dir}/sentinel-$_/sentinel.log` }
                @sentinels;
    return $g;
}

# the "ip:port" every sentinel of group g names as the primary; undef
# while they differ or one cannot be asked
sub sentinel_master {
    my ($self, $g) = @_;
    my %seen;
    for my $s (@{ $g->{sentinels} }) {
        my $a = $self->redis_cli($s, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME',
            $g->{name}) // '';
        my ($ip, $port) = split /\n/, $a;
        return undef unless defined $port && $port =~ /^\d+$/;
        $seen{"$ip:$port"} = 1;
    }
    my @a = keys %seen;
    return @a == 1 ? $a[0] : undef;
}

# a sentinel's view of the instances of a kind (REPLICAS, SENTINELS): a
# list of {field => value}
sub sentinel_list {
    my ($self, $s, $g, $kind) = @_;
    my $out = $self->redis_cli($s, '--no-raw', 'SENTINEL', $kind, $g->{name})
        // '';
    # --no-raw: "1) 1) "name"\n   2) "127.0.0.1:P"...", one instance a
    # top-level number
    my (@list, $cur);
    for (split /\n/, $out) {
        $cur = {}, push @list, $cur if /^\d+\) /;
        my @q = /"((?:[^"\\]|\\.)*)"/g or next;
        push @{ $cur->{_kv} }, @q;
    }
    return map { my %h = @{ $_->{_kv} || [] }; \%h } @list;
}

# waits until the group is in a steady state again: every sentinel names
# primary, knows replica as a replica of it that is up, and the two other
# sentinels; the replica's link to the primary is up and in sync
sub sentinel_settled {
    my ($self, $g, $primary, $replica, $timeout) = @_;
    return wait_until(sub {
        ($self->sentinel_master($g) // '') eq "127.0.0.1:$primary" or return 0;
        my $info = $self->redis_cli($replica, 'INFO', 'replication') // '';
        $info =~ /master_port:$primary\b/ && $info =~ /master_link_status:up/
            && $info =~ /master_sync_in_progress:0/ or return 0;
        for my $s (@{ $g->{sentinels} }) {
            my @r = grep { ($_->{port} // '') eq $replica
                           && ($_->{flags} // '') eq 'slave'
                           && ($_->{'master-port'} // '') eq $primary
                           && ($_->{'master-link-status'} // '') eq 'ok' }
                $self->sentinel_list($s, $g, 'REPLICAS');
            return 0 unless @r;
            my @s = $self->sentinel_list($s, $g, 'SENTINELS');
            return 0 unless @s == 2;
        }
        return 1;
    }, $timeout // 20);
}

# ---------------------------------------------------------------- cluster

# A Redis Cluster of 6 nodes, 3 primaries with a replica each (node
# timeout 1 s), made with redis-cli --cluster create; returns once every
# node says cluster_state:ok and every replica is in sync:
# {ports => [6], primaries => [3], replicas => [3],
#  replica_of => {replica port => primary port}}.  opts: timeout (30 s)
sub start_cluster {
    my ($self, %o) = @_;
    my @ports;
    for (1 .. 6) {
        my $port = free_port();
        my $bus = free_port();
        my $dir = "$self->{dir}/redis-$port";
        $self->start_redis(port => $port, args => ['--cluster-enabled', 'yes',
            '--cluster-config-file', "$dir/nodes.conf",
            '--cluster-node-timeout', 1000, '--cluster-port', $bus]);
        push @ports, $port;
    }
    my $out = `redis-cli --cluster create @{[ map { "127.0.0.1:$_" } @ports ]} --cluster-replicas 1 --cluster-yes 2>&1`;
    die "redis-cli --cluster create failed:\n$out" if $?;
    my $c = { ports => \@ports };
    wait_until(sub {
        for my $p (@ports) {
            ($self->redis_cli($p, 'CLUSTER', 'INFO') // '')
                =~ /cluster_state:ok/ or return 0;
        }
        my %nodes = $self->cluster_nodes($ports[0]);
        my @m = grep { $nodes{$_}{role} eq 'master' } keys %nodes;
        my @r = grep { $nodes{$_}{role} eq 'slave' } keys %nodes;
        return 0 unless @m == 3 && @r == 3;
        for my $r (@r) {
            ($self->redis_cli($r, 'INFO', 'replication') // '')
                =~ /master_link_status:up/ or return 0;
        }
        $c->{primaries} = [sort { $a <=> $b } @m];
        $c->{replicas} = [sort { $a <=> $b } @r];
        $c->{replica_of} = { map { $_ => $nodes{$_}{master_port} } @r };
        return 1;
    }, $o{timeout} // 30) or die "the cluster did not form:\n$out";
    return $c;
}

# CLUSTER NODES as one node sees it, by port: {id, role (master|slave),
# master_port (of a replica), flags, slots => [[from, to], ...]}
sub cluster_nodes {
    my ($self, $port) = @_;
    my (%by_id, %nodes);
    for (split /\n/, $self->redis_cli($port, 'CLUSTER', 'NODES') // '') {
        my ($id, $addr, $flags, $master, undef, undef, undef, $link, @slots)
            = split ' ';
        my ($p) = $addr =~ /:(\d+)/ or next;
        my $role = $flags =~ /master/ ? 'master' : 'slave';
        $by_id{$id} = $p;
        $nodes{$p} = { id => $id, role => $role, flags => $flags,
            master => $master, link => $link,
            slots => [map { /^(\d+)(?:-(\d+))?$/ ? [$1, $2 // $1] : () }
                      @slots] };
    }
    for my $n (values %nodes) {
        $n->{master_port} = $by_id{ $n->{master} } if $n->{master} ne '-';
    }
    return %nodes;
}

# the slot of a key, and the port of the primary serving a slot, as the
# node at port sees them
sub cluster_keyslot {
    my ($self, $port, $key) = @_;
    return $self->redis_cli($port, 'CLUSTER', 'KEYSLOT', $key);
}

sub cluster_slot_owner {
    my ($self, $port, $slot) = @_;
    my %nodes = $self->cluster_nodes($port);
    for my $p (keys %nodes) {
        next unless $nodes{$p}{role} eq 'master'
            && $nodes{$p}{flags} !~ /fail/;
        for (@{ $nodes{$p}{slots} }) {
            return $p if $slot >= $_->[0] && $slot <= $_->[1];
        }
    }
    return undef;
}

# ---------------------------------------------------------------- children

# runs code in a child process of its own (stopped at the end like every
# other), which exits when the code returns, without running any END block
# of the parent's; returns the pid
sub background {
    my ($self, $name, $code) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        setsid();
        @instances = ();
        @children = ();
        eval { $code->() };
        print STDERR "$name: $@" if $@;
        POSIX::_exit($@ ? 1 : 0);
    }
    push @children, [$pid, $name];
    return $pid;
}

# a key of a family (KEY_<NAME>), each <word> of it the next value
sub rkey {
    my ($pattern, @v) = @_;
    my $n = () = $pattern =~ /<[a-z0-9_]+>/g;
    die "rkey($pattern): $n values, not " . @v unless $n == @v;
    $pattern =~ s/<[a-z0-9_]+>/shift @v/ge;
    return $pattern;
}

# the literal start of a family's keys, up to its first <word>
sub key_prefix {
    my ($pattern) = @_;
    $pattern =~ s/<.*//s;
    return $pattern;
}

# a regex of a family's keys: its literal text as it is, each <word> the
# next regex given
sub key_re {
    my ($pattern, @re) = @_;
    my @lit = split /<[a-z0-9_]+>/, $pattern, -1;
    die "key_re($pattern): " . (@lit - 1) . " regexes, not " . @re
        unless @lit - 1 == @re;
    my $re = quotemeta shift @lit;
    $re .= "(?:$_)" . quotemeta shift @lit for @re;
    return qr/$re/;
}

# a tenant and one key for it, straight into Redis (the admin tool is
# tested on its own); PORT as redis_cli() takes it: [PORT, '-c'] on a
# cluster
sub add_tenant {
    my ($self, $port, $tenant, $key, %policy) = @_;
    require Digest::SHA;
    $self->redis_cli($port, 'DEL', rkey(KEY_TENANT, $tenant));
    # "created", as llm-admin writes it: a hash without it is no tenant
    $self->redis_cli($port, 'HSET', rkey(KEY_TENANT, $tenant), 'created',
        time, %policy);
    if (defined $key) {
        $self->redis_cli($port, 'HSET',
            rkey(KEY_API_KEY, Digest::SHA::sha256_hex($key)),
            tenant => $tenant, revoked => 0);
    }
}

# redis-cli's arguments for a Redis over TLS, for redis_cli/add_tenant;
# %o: host, cert, key (a client certificate)
sub redis_tls_cli {
    my ($self, $port, $ca, %o) = @_;
    return ['-h', $o{host} // '127.0.0.1', '-p', $port, '--tls',
        '--cacert', $ca,
        ($o{cert} ? ('--cert', $o{cert}, '--key', $o{key}) : ())];
}

# ---------------------------------------------------------------- TLS

sub _openssl {
    my ($self, @args) = @_;
    my $out = `cd $self->{dir} && openssl @args 2>&1`;
    die "openssl @args: $out" if $?;
}

# a CA of its own in dir: returns (cert, key)
sub make_ca {
    my ($self, $name) = @_;
    my $d = $self->{dir};
    $self->_openssl("req -x509 -newkey rsa:2048 -nodes -days 2"
        . " -keyout $d/$name.key -out $d/$name.pem -subj /CN=$name"
        . " -addext basicConstraints=critical,CA:TRUE"
        . " -addext keyUsage=critical,keyCertSign,cRLSign");
    return ("$d/$name.pem", "$d/$name.key");
}

# a certificate signed by a CA; san: 'DNS:localhost,IP:127.0.0.1';
# client: for clientAuth; returns (cert, key)
sub make_cert {
    my ($self, $name, $ca, %o) = @_;
    my $d = $self->{dir};
    my $eku = $o{client} ? 'clientAuth' : 'serverAuth';
    open my $fh, '>', "$d/$name.ext" or die $!;
    print $fh "basicConstraints=CA:FALSE\nextendedKeyUsage=$eku\n";
    print $fh "subjectAltName=$o{san}\n" if $o{san};
    close $fh;
    $self->_openssl("req -newkey rsa:2048 -nodes -keyout $d/$name.key"
        . " -out $d/$name.csr -subj /CN=$name");
    $self->_openssl("x509 -req -in $d/$name.csr -CA $ca->[0] -CAkey $ca->[1]"
        . " -CAcreateserial -days 2 -out $d/$name.pem -extfile $d/$name.ext");
    return ("$d/$name.pem", "$d/$name.key");
}

# ----------------------------------------------------- fake providers

# each fake provider's path under the port of t/mock/provider.js
our %PROVIDER_BASE = (together => 'together/v1',
    fireworks => 'fireworks/inference/v1', deepinfra => 'deepinfra/v1/openai',
    openrouter => 'openrouter/api/v1', mistral => 'mistral/v1',
    groq => 'groq/openai/v1');

# what the fake providers expect (provider.js's --expect) of the gateway,
# a provider to model id in %$ids: a random key each (in the environment
# as LLMT_KEY_<NAME>, so that a test can look for it, masked, anywhere),
# the id, and the attribution of llm_app_url https://gateway.example/app
# with the default llm_app_title, or the title given
sub provider_expect {
    my ($ids, %o) = @_;
    my %expect;
    for my $name (keys %$ids) {
        my $key = "sk-$name-" . join('', map { ('a' .. 'z', 'A' .. 'Z', 0 .. 9)[rand 62] } 1 .. 16);
        $expect{$name} = { key => $key, model => $ids->{$name},
            referer => 'https://gateway.example/app', title => $o{title} // 'nginx-llm-gateway' };
        $ENV{'LLMT_KEY_' . uc $name} = $key;
    }
    return %expect;
}

# the fake providers over TLS, expecting what $expect says (provider.js's
# --expect); the first call makes their CA, which provider_ca() names for
# llm_ssl_trusted_certificate; returns the port
sub start_providers {
    my ($self, $expect, $tag) = @_;
    my $d = $self->{dir};
    unless ($self->{provider_ca}) {
        my @ca = $self->make_ca('provider-ca');
        $self->{provider_cert} = [ $self->make_cert('provider', \@ca, san => 'IP:127.0.0.1') ];
        $self->{provider_ca} = $ca[0];
    }
    my ($cert, $key) = @{ $self->{provider_cert} };
    my $log = "$d/provider" . (defined $tag ? "-$tag" : '') . '.log';
    my $port = free_port();
    _spawn('provider', {}, 'sh', '-c', "exec node $ROOT/t/mock/provider.js --port $port "
        . "--cert $cert --key $key --expect '" . encode_json($expect) . "' >$log 2>&1");
    wait_until(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") }, 10)
        or die "fake provider did not start: " . `cat $log`;
    return $port;
}

sub provider_ca { $_[0]{provider_ca} }

# ---------------------------------------------------------------- DNS

# a DNS responder (t/lib/DNSMock.pm) on a UDP port of 127.0.0.1; it reads
# its answers (name address per line) from a file at each query, so that
# set_dns() can move a name; returns the port
sub start_dns {
    my ($self, %names) = @_;
    my $port = free_port();
    $self->{dns_file} = "$self->{dir}/dns-$port.hosts";
    $self->set_dns(%names);
    my $log = "$self->{dir}/dns-$port.log";
    _spawn('dns', {}, 'sh', '-c', "exec $^X $ROOT/t/lib/DNSMock.pm"
        . " $port $self->{dns_file} >$log 2>&1");
    require IO::Socket::INET;
    wait_until(sub { defined dns_query($port, 'probe.invalid') }, 10)
        or die "dns did not start: " . `cat $log`;
    return $port;
}

sub set_dns {
    my ($self, %names) = @_;
    my $tmp = "$self->{dns_file}.tmp";
    open my $fh, '>', $tmp or die $!;
    print $fh "$_ $names{$_}\n" for sort keys %names;
    close $fh;
    rename $tmp, $self->{dns_file} or die $!;
}

# an A query: returns the address, '' for NXDOMAIN, undef for no answer
sub dns_query {
    my ($port, $name) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'udp') or return;
    my $q = pack('n6', 0x1234, 0x0100, 1, 0, 0, 0)
        . join('', map { chr(length) . $_ } split /\./, $name) . "\0"
        . pack('n2', 1, 1);
    $s->send($q);
    my $r = '';
    my $rin = '';
    vec($rin, fileno($s), 1) = 1;
    return unless select($rin, undef, undef, 0.5);
    $s->recv($r, 512) // return;
    my ($id, $flags, $qd, $an) = unpack('n4', $r);
    return unless $id == 0x1234;
    return '' if ($flags & 0xf) == 3 || !$an;
    # the answer is the last 4 bytes (one A record after the question)
    return join '.', unpack('C4', substr($r, -4));
}

# a C tool of the repository built into the test's directory: its path;
# sources are relative to the root, ngx_module/ is on the include path
sub build_tool {
    my ($self, $name, @src) = @_;
    my $bin = "$self->{dir}/$name";
    system('gcc', '-O2', '-Wall', '-Werror', '-Wextra',
           "-I$ROOT/ngx_module", '-o', $bin,
           (map { "$ROOT/$_" } @src), '-lcjson', '-lm') == 0
        or return;
    return $bin;
}

sub start_llama {
    my ($self, $model, $alias, $ctx) = @_;
    my $bin = $ENV{LLAMA_SERVER} or return;
    my $port = free_port();
    my $log = "$self->{dir}/llama-$port.log";
    # ctx: one request's tokens, four slots sharing one KV buffer of it
    # (and both cores for a long prompt's batches, as ./config.sh run)
    my $c = $ctx ? "-c $ctx -np 4 -kvu -fa on -tb 2" : '-c 4096 -np 4 -tb 1';
    _spawn('llama-server', {}, 'sh', '-c', "exec $bin --host 127.0.0.1 "
        . "--port $port -m $model --alias $alias -t 1 $c "
        . "--no-webui >$log 2>&1");
    wait_until(sub {
        my ($st) = eval { http_request($port, 'GET', '/health') };
        return $st && $st == 200;
    }, 120) or die "llama-server did not start: " . `tail -5 $log`;
    return $port;
}

# http: the http{} body (models, llm_redis ...); server: the server{} body
sub start_nginx {
    my ($self, %o) = @_;
    my $port = $o{port} // free_port();
    # an nginx -t binds nothing, so its port may be handed out again: its
    # prefix, and the emerg it logs there, must not be the next one's
    my $prefix = "$self->{dir}/nginx-$port"
        . ($o{expect_fail} ? '-t' . ++$self->{conf_tests} : '');
    mkdir $prefix;
    mkdir "$prefix/$_" for qw(logs tmp);
    my $user = $> == 0 ? 'user root;' : '';
    my $workers = $o{workers} // 1;
    my $conf = <<"EOF";
load_module $MODULE;
$user
worker_processes $workers;
daemon off;
master_process on;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log @{[ $ENV{LLM_LOG_LEVEL} // "info" ]};
env ASAN_OPTIONS;
env UBSAN_OPTIONS;
events { worker_connections 8192; }
http {
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy;
    fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi;
    scgi_temp_path $prefix/tmp/scgi;
    log_format llm '\$request \$status model=\$llm_model backend=\$llm_backend '
                   'ustatus=\$llm_upstream_status ptok=\$llm_prompt_tokens '
                   'ctok=\$llm_completion_tokens ttfb=\$llm_ttfb '
                   'cache=\$llm_cache_status route=\$llm_route '
                   'score=\$llm_route_score pid=\$pid';
    access_log $prefix/logs/access.log llm;
    $o{http}
    server {
        listen 127.0.0.1:$port;
        $o{server}
    }
}
EOF
    open my $fh, '>', "$prefix/nginx.conf" or die;
    print $fh $conf;
    close $fh;

    my %env;
    if ($ENV{LLM_PRELOAD}) {
        $env{LD_PRELOAD} = $ENV{LLM_PRELOAD};
    }
    # NGINX_BIN: the nginx a module built with NGINX_SRC= belongs to
    my @cmd = ($ENV{NGINX_BIN} // '/usr/sbin/nginx', '-p', $prefix,
        '-c', "$prefix/nginx.conf", '-e', "$prefix/logs/error.log");

    if ($o{expect_fail}) {
        my $out = `LD_PRELOAD='@{[$env{LD_PRELOAD} // '']}' @cmd -t 2>&1`;
        return ($? != 0, $out);
    }

    my $pid = _spawn('nginx', \%env, @cmd);
    unless (wait_until(sub { _port_open($port) }, 15)) {
        my $err = `cat $prefix/logs/error.log 2>/dev/null`;
        die "nginx did not start:\n$err";
    }
    # log_ok: a pattern of [crit] lines that case expects
    $self->{nginx}{$port} = { pid => $pid, prefix => $prefix,
        log_ok => $o{log_ok} };
    return $port;
}

# nginx -t of a whole configuration under a prefix of its own, where
# modules/ngx_http_llm_module.so is the module tested and logs/ and tmp/
# exist; returns (failed, output)
sub check_conf {
    my ($self, $conf) = @_;
    my $prefix = tempdir('conf-XXXXXX', DIR => $self->{dir});
    mkdir "$prefix/$_" for qw(logs tmp modules vocab);
    symlink $MODULE, "$prefix/modules/ngx_http_llm_module.so"
        or die "symlink $MODULE: $!";
    # what the example configuration names, as ./config.sh run links it
    symlink "$ROOT/bench/routing/router.model", "$prefix/router.model";
    my $cache = $ENV{LLM_CACHE_DIR} // "$ENV{HOME}/.cache/nginx-llm-gateway";
    my $vocab = "$cache/llama-src/models/ggml-vocab-llama-spm.gguf";
    symlink $ENV{LLM_MODEL_SMALL} // $vocab, "$prefix/vocab/mixtral-8x7b.gguf";
    symlink $ENV{LLM_MODEL_LARGE} // $vocab, "$prefix/vocab/mixtral-8x22b.gguf";
    open my $fh, '>', "$prefix/nginx.conf" or die;
    print $fh $conf;
    close $fh;
    my @cmd = ($ENV{NGINX_BIN} // '/usr/sbin/nginx', '-t', '-p', $prefix,
        '-c', "$prefix/nginx.conf", '-e', "$prefix/logs/error.log");
    # nginx -t speaks on stderr: both into the pipe
    my $pid = open(my $out, '-|') // die "fork: $!";
    if ($pid == 0) {
        $ENV{LD_PRELOAD} = $ENV{LLM_PRELOAD} if $ENV{LLM_PRELOAD};
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    my $text = do { local $/; <$out> } // '';
    close $out;
    return ($? != 0, $text);
}

sub nginx_prefix { $_[0]{nginx}{$_[1]}{prefix} }

sub error_log {
    my ($self, $port) = @_;
    my $f = $self->nginx_prefix($port) . '/logs/error.log';
    open my $fh, '<', $f or return '';
    local $/;
    return <$fh>;
}

sub access_log {
    my ($self, $port) = @_;
    my $f = $self->nginx_prefix($port) . '/logs/access.log';
    open my $fh, '<', $f or return '';
    local $/;
    return <$fh>;
}

sub worker_pids {
    my ($self, $port) = @_;
    my $master = $self->{nginx}{$port}{pid};
    my @w = split /\s+/, `pgrep -P $master 2>/dev/null`;
    return grep { /\d/ } @w;
}

sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/ }
    return 0;
}

sub stop_nginx {
    my ($self, $port) = @_;
    my $n = delete $self->{nginx}{$port} or return;
    kill 'QUIT', $n->{pid};
    unless (wait_until(sub { waitpid($n->{pid}, WNOHANG) != 0 }, 10)) {
        _kill($n->{pid}, 'KILL');
    }
    _check_log($n->{prefix}, $n->{log_ok});
}

sub _check_log {
    my ($prefix, $ok) = @_;
    open my $fh, '<', "$prefix/logs/error.log" or return;
    my @bad = grep { !($ok && /$ok/) } grep { /\[(alert|emerg|crit)\]|exited on signal|exited with code [1-9]|segfault|runtime error|AddressSanitizer|LeakSanitizer/ } <$fh>;
    ok(!@bad, "no alerts or crashes in $prefix/logs/error.log")
        or diag(join '', @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
}

sub _kill {
    my ($pid, $sig) = @_;
    kill $sig, -$pid;
    kill $sig, $pid;
    waitpid($pid, 0);
}

sub cleanup {
    my ($self) = @_;
    $self->stop_nginx($_) for keys %{ $self->{nginx} || {} };
}

END {
    my $rc = $?;
    for my $i (@instances) {
        eval { $i->cleanup };
    }
    for my $c (reverse @children) {
        next unless kill 0, $c->[0];
        kill 'TERM', -$c->[0];
        kill 'TERM', $c->[0];
    }
    for my $c (@children) {
        wait_until(sub { waitpid($c->[0], WNOHANG) != 0 }, 3)
            or do { kill 'KILL', -$c->[0]; kill 'KILL', $c->[0];
                    waitpid($c->[0], 0) };
    }
    if (my $san = $ENV{LLM_SAN_DIR}) {
        my @r = glob("$san/san*");
        if (@r) {
            print STDERR "sanitizer reports:\n", `cat @r`;
            $rc ||= 1;
        }
    }
    $? = $rc;
}

$SIG{INT} = $SIG{TERM} = sub { exit 1 };

# ---------------------------------------------------------------- clients

# returns (status, {lc header => value}, body); opts: timeout, raw
sub http_request {
    my ($port, $method, $path, $headers, $body, %o) = @_;
    $headers //= {};
    my $req = "$method $path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
    if (defined $body && !exists $headers->{'Transfer-Encoding'}) {
        $req .= "Content-Length: " . length($body) . "\r\n";
    }
    $req .= "$_: $headers->{$_}\r\n" for sort keys %$headers;
    $req .= "\r\n";
    $req .= $body if defined $body;
    return raw_request($port, $req, %o);
}

# sends bytes as they are; returns what http_request() returns
sub raw_request {
    my ($port, $req, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Timeout => 5) or die "connect $port: $!";
    print $s $req;
    my $raw = '';
    my $sel = IO::Select->new($s);
    my $end = time + ($o{timeout} // 30);
    while (time < $end) {
        last unless $sel->can_read($end - time);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
    }
    close $s;
    return parse_response($raw);
}

sub parse_response {
    my ($raw) = @_;
    my $i = index($raw, "\r\n\r\n");
    return (0, {}, '') if $i < 0;
    my $head = substr($raw, 0, $i);
    my $body = substr($raw, $i + 4);
    my @lines = split /\r\n/, $head;
    my ($status) = $lines[0] =~ m{^HTTP/1\.\d (\d{3})};
    my %h;
    for (@lines[1 .. $#lines]) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
    }
    if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($body, 0, $n);
            substr($body, 0, $n + 2) = '';
        }
        $body = $out;
    }
    return ($status // 0, \%h, $body);
}

# many requests at once from one process: [[port, method, path, headers,
# body], ...] -> list of [status, headers, body, seconds]
sub parallel_requests {
    my ($reqs, %o) = @_;
    my (%buf, %start, %idx, @res);
    my $sel = IO::Select->new;
    my $i = 0;
    for my $r (@$reqs) {
        my ($port, $method, $path, $headers, $body) = @$r;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port)
            or die "connect: $!";
        my $req = "$method $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
        $req .= "Content-Length: " . length($body) . "\r\n" if defined $body;
        $req .= "$_: $headers->{$_}\r\n" for sort keys %{ $headers || {} };
        $req .= "\r\n" . ($body // '');
        print $s $req;
        $sel->add($s);
        $buf{$s} = '';
        $start{$s} = time;
        $idx{$s} = $i++;
    }
    my $end = time + ($o{timeout} // 30);
    while ($sel->count && time < $end) {
        for my $fh ($sel->can_read(0.5)) {
            my $n = sysread($fh, my $chunk, 65536);
            if ($n) { $buf{$fh} .= $chunk; next }
            $sel->remove($fh);
            $res[$idx{$fh}] = [parse_response($buf{$fh}), time - $start{$fh}];
            close $fh;
        }
    }
    for my $fh ($sel->handles) {
        $res[$idx{$fh}] = [0, {}, '', time - $start{$fh}];
        close $fh;
    }
    return @res;
}

sub sse_events {
    my ($body) = @_;
    my @ev;
    for my $block (split /\n\n/, $body) {
        my @data = map { /^data: ?(.*)$/ ? $1 : () } split /\n/, $block;
        push @ev, join("\n", @data) if @data;
    }
    return @ev;
}

sub json_of {
    my ($s) = @_;
    my $j = eval { decode_json($s) };
    return $j;
}

# the body of a chat completion request: model (mixtral-8x7b), content
# ('hello'), messages (instead of content), knobs (content "MOCK:<json>",
# what the mock upstream obeys); every other option is a field of the body
sub chat_body {
    my (%o) = @_;
    my $model = delete $o{model} // 'mixtral-8x7b';
    my $content = delete $o{content} // 'hello';
    $content = 'MOCK:' . encode_json(delete $o{knobs} // {})
        if exists $o{knobs};
    my $messages = delete $o{messages}
        // [{ role => 'user', content => $content }];
    return encode_json({ model => $model, messages => $messages, %o });
}

# a JSON POST as a parallel_requests() row; a ref body is sent encoded.
# opts: key (sent as "Authorization: Bearer KEY"), auth (the Authorization
# header as it is), headers (more headers, over those)
sub post_request {
    my ($port, $path, $body, %o) = @_;
    my %h = ('Content-Type' => 'application/json', _headers(%o));
    $body = encode_json($body) if ref $body;
    return [$port, 'POST', $path, \%h, $body];
}

# the request headers of the opts key, auth and headers
sub _headers {
    my (%o) = @_;
    my %h;
    $h{Authorization} = "Bearer $o{key}" if defined $o{key};
    $h{Authorization} = $o{auth} if defined $o{auth};
    return (%h, %{ $o{headers} // {} });
}

# the same POST sent; opts as post_request() and http_request() (timeout,
# raw); returns (status, headers, body)
sub post {
    my ($port, $path, $body, %o) = @_;
    my %req = map { exists $o{$_} ? ($_ => delete $o{$_}) : () }
        qw(key auth headers);
    return http_request(@{ post_request($port, $path, $body, %req) }, %o);
}

my @CHAT_OPTS = qw(path key auth headers timeout);

# a chat completion request as a parallel_requests() row: path
# (/v1/chat/completions) and the opts of post_request(); the rest builds
# the body as chat_body() does, the content 'hi' unless given
sub chat_request {
    my ($port, %o) = @_;
    my %req = map { exists $o{$_} ? ($_ => delete $o{$_}) : () } @CHAT_OPTS;
    my $path = delete $req{path} // '/v1/chat/completions';
    delete $req{timeout};
    return post_request($port, $path, chat_body(content => 'hi', %o), %req);
}

# the same request sent, with an optional timeout; returns (status,
# headers, body)
sub chat {
    my ($port, %o) = @_;
    my $timeout = delete $o{timeout};
    return http_request(@{ chat_request($port, %o) },
        defined $timeout ? (timeout => $timeout) : ());
}

my %CASE_KEYS = map { $_ => 1 } qw(name port before chat body method path
    key auth headers raw timeout status error type code param message
    match no_match header content check);

# Runs a table of requests, one named row (a hash) each, in order, and
# checks their answers; defaults: a hash of keys every row has unless it
# gives its own (port, above all; a row's body, raw or method replaces
# the default's request, and its chat opts go over the default's).
# Returns [status, headers, body] a row.
#
# The request, one of
#   chat => {opts}          chat_request(): the body from the opts
#   body => $json           a JSON POST (a ref is encoded), to path
#                           (/v1/chat/completions), method POST unless given
#   method => 'GET'         a request without a body, to path
#   raw => $bytes           sent as they are
# with key, auth, headers as post_request() takes them, timeout, and
# before => sub, called first.
#
# What is checked, each its own assertion named "NAME: ...":
#   status                  the status
#   header => {name => v}   response headers: a string, a qr//, or undef
#                           for none
#   match, no_match         qr// the body matches, or does not
#   content                 content_of() the answer: a string or a qr//
#   and in error answers (status 400 and up), of the error object:
#   error => 1              that it is OpenAI's: message, type, param
#   type, code, param, message   a string (undef: null) or a qr//
#   check => sub            called with (name, status, headers, body)
sub cases {
    my ($defaults, @rows) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my @res;
    for my $row (@rows) {
        # a row's own request replaces the default one; chat opts add up
        my %c = %$defaults;
        delete @c{qw(chat body raw method)}
            if grep { exists $row->{$_} } qw(chat body raw method);
        %c = (%c, %$row);
        $c{chat} = { %{ $defaults->{chat} }, %{ $row->{chat} } }
            if $row->{chat} && $defaults->{chat};
        my @bad = grep { !$CASE_KEYS{$_} } keys %c;
        die "cases: unknown key(s) @bad" if @bad;
        die "cases: $c{name}: more than one of chat, body, raw"
            if (grep { exists $c{$_} } qw(chat body raw)) > 1;
        my $name = $c{name} // die 'cases: a row without a name';
        my $port = $c{port} // die "cases: $name: no port";
        my %auth = map { exists $c{$_} ? ($_ => $c{$_}) : () }
            qw(key auth headers);
        my $path = $c{path} // '/v1/chat/completions';
        my @t = defined $c{timeout} ? (timeout => $c{timeout}) : ();

        $c{before}->() if $c{before};

        my ($st, $h, $b);
        if (defined $c{raw}) {
            ($st, $h, $b) = raw_request($port, $c{raw}, @t);
        } elsif ($c{chat}) {
            ($st, $h, $b) = chat($port, %auth,
                exists $c{path} ? (path => $path) : (), @t, %{ $c{chat} });
        } elsif (exists $c{body}) {
            my $req = post_request($port, $path, $c{body}, %auth);
            $req->[1] = $c{method} if $c{method};
            ($st, $h, $b) = http_request(@$req, @t);
        } else {
            ($st, $h, $b) = http_request($port, $c{method} // 'GET', $path,
                { _headers(%auth) }, undef, @t);
        }
        push @res, [$st, $h, $b];

        if (exists $c{status}) {
            is($st, $c{status}, "$name: status $c{status}")
                or diag(substr($b // '', 0, 300));
        }
        for my $k (sort keys %{ $c{header} // {} }) {
            _case_is($h->{lc $k}, $c{header}{$k}, "$name: $k");
        }
        like($b, $c{match}, "$name: the body has $c{match}") if $c{match};
        unlike($b, $c{no_match}, "$name: the body has no $c{no_match}")
            if $c{no_match};
        _case_is(content_of($b, $h), $c{content}, "$name: content")
            if exists $c{content};

        if (($c{status} // 0) >= 400) {
            my $j = json_of($b);
            my $e = ref $j eq 'HASH' && ref $j->{error} eq 'HASH'
                ? $j->{error} : undef;
            if ($c{error}) {
                ok($e && defined $e->{message} && defined $e->{type}
                   && exists $e->{param}, "$name: OpenAI's error format")
                    or diag($b);
            }
            $e //= {};
            for my $k (qw(type code param message)) {
                next unless exists $c{$k};
                _case_is($e->{$k}, $c{$k}, "$name: $k "
                    . (ref $c{$k} ? $c{$k} : $c{$k} // 'null'));
            }
        }
        $c{check}->($name, $st, $h, $b) if $c{check};
    }
    return @res;
}

sub _case_is {
    my ($got, $want, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    return ref $want eq 'Regexp' ? like($got // '', $want, $name)
                                 : is($got, $want, $name);
}

# the assistant text of an answer: the joined content deltas of every
# choice when it is an event stream (by the headers, if given, else by its
# look) or one chunk of one; the message's content when it is a whole
# answer; undef when it is neither
sub content_of {
    my ($body, $headers) = @_;
    $body //= '';
    my $sse = $headers
        ? ($headers->{'content-type'} // '') =~ /event-stream/
        : $body =~ /\A(?:data|event|id|retry)?:/;
    my @chunks = $sse ? sse_events($body) : ($body);
    my ($text, $whole);
    for my $e (@chunks) {
        my $j = json_of($e);
        next unless ref $j eq 'HASH';
        my $choices = ref $j->{choices} eq 'ARRAY' ? $j->{choices} : [];
        if (!$sse && $choices->[0] && exists $choices->[0]{message}) {
            return $choices->[0]{message}{content};
        }
        $text .= $_->{delta}{content} // '' for @$choices;
        $text //= '';
    }
    return $sse ? $text // '' : $text;
}

1;
