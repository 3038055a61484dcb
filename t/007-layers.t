# .ci/layers keeps the module's calls downward: it passes on the tree and
# fails on each kind of breach, shown on a copy of ngx_module/.
use strict;
use warnings;
use FindBin;
use File::Temp qw(tempdir);
use File::Copy qw(copy);
use Test::More;

my $root = "$FindBin::Bin/..";
my $layers = "$root/.ci/layers";

sub layers {
    my ($dir) = @_;
    my $out = `perl $layers $dir 2>&1`;
    return ($? >> 8, $out);
}

my ($rc, $out) = layers("$root/ngx_module");
is($rc, 0, 'the module keeps its layers') or diag($out);
like($out, qr/^layers: ok/, 'and says so');

sub breach {
    my ($file, $code) = @_;
    my $dir = tempdir(CLEANUP => 1);
    opendir my $dh, "$root/ngx_module" or die $!;
    copy("$root/ngx_module/$_", "$dir/$_") or die $!
        for grep { /\.[ch]$/ } readdir $dh;
    open my $fh, '>>', "$dir/$file" or die $!;
    print $fh $code;
    close $fh;
    return layers($dir);
}

for my $case (
    ['a utility that calls a service',
     'ngx_http_llm_util.c',
     "\nvoid\nngx_http_llm_util_up(ngx_http_llm_ctx_t *ctx)\n{\n"
     . "    (void) ngx_http_llm_quota_admit(ctx, NULL);\n}\n",
     qr/ngx_http_llm_util\.c \(utility\) calls ngx_http_llm_quota_admit\(\)/],
    ['a transport that resumes a request',
     'ngx_http_llm_curl.c',
     "\nvoid\nngx_http_llm_curl_up(ngx_http_llm_ctx_t *ctx)\n{\n"
     . "    ngx_http_llm_run(ctx);\n}\n",
     qr/ngx_http_llm_curl\.c \(transport\) calls ngx_http_llm_run\(\)/],
    ['a service that includes the request layer',
     'ngx_http_llm_router.c',
     "\n#include \"ngx_http_llm_proxy.h\"\n",
     qr/ngx_http_llm_router\.c \(service\) includes ngx_http_llm_proxy\.h/],
    ['a service that ends a request itself',
     'ngx_http_llm_quota.c',
     "\nvoid\nngx_http_llm_quota_end(ngx_http_llm_ctx_t *ctx)\n{\n"
     . "    ngx_http_llm_finalize(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR);\n}\n",
     qr/ngx_http_llm_quota\.c \(service\) calls ngx_http_llm_finalize\(\): only the request layer ends a request/],
    ['a file with no layer',
     'ngx_http_llm_newfile.c',
     "\nvoid\nngx_http_llm_newfile(void)\n{\n}\n",
     qr/ngx_http_llm_newfile\.c: has no layer/],
    ['two services that call each other',
     'ngx_http_llm_router.c',
     "\nvoid\nngx_http_llm_router_loop(ngx_http_llm_ctx_t *ctx)\n{\n"
     . "    ngx_http_llm_auth_loop(ctx);\n}\n",
     qr/call cycle: .*auth.*router|call cycle: .*router.*auth/],
) {
    my ($name, $file, $code, $re) = @$case;
    if ($name =~ /each other/) {
        # the other half of the cycle
        my $dir = tempdir(CLEANUP => 1);
        opendir my $dh, "$root/ngx_module" or die $!;
        copy("$root/ngx_module/$_", "$dir/$_") or die $!
            for grep { /\.[ch]$/ } readdir $dh;
        open my $fh, '>>', "$dir/ngx_http_llm_auth.c" or die $!;
        print $fh "\nvoid\nngx_http_llm_auth_loop(ngx_http_llm_ctx_t *ctx)\n"
            . "{\n    ngx_http_llm_router_loop(ctx);\n}\n";
        close $fh;
        open $fh, '>>', "$dir/$file" or die $!;
        print $fh $code;
        close $fh;
        ($rc, $out) = layers($dir);
    } else {
        ($rc, $out) = breach($file, $code);
    }
    isnt($rc, 0, "$name fails the check");
    like($out, $re, "$name is named");
}

done_testing();
