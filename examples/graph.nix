# A small derivation graph for the demo and the end-to-end tests: a diamond
# (base ← left, right ← top), one derivation that fails on purpose, one
# that depends on it, and a slow one that prints, sleeps and prints (for
# `log --follow`).
# There is no nixpkgs here, so builders are the host's /bin/sh with the
# host's coreutils on PATH (the sandbox is off). `nonce` makes every demo run
# produce new derivations, so the agents really build them.
{ nonce ? "0", sleep ? "0", slowSleep ? "3" }:
let
  mk = name: script: extra: derivation ({
    inherit name nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-e" "-c" script ];
    PATH = "/usr/bin:/bin";
  } // extra);
  base = mk "gbc-demo-base" ''
    echo "building base"
    sleep ${sleep}
    mkdir -p $out/share
    echo "base ($nonce)" > $out/share/base.txt
    printf '#!/bin/sh\necho hello from gbc\n' > $out/share/hello.sh
    chmod +x $out/share/hello.sh
    ln -s hello.sh $out/share/hi
  '' {};
  left = mk "gbc-demo-left" ''
    echo "building left from ${base}"
    cat ${base}/share/base.txt > $out
    echo left >> $out
  '' {};
  right = mk "gbc-demo-right" ''
    echo "building right from ${base}"
    mkdir -p $out $dev
    tr a-z A-Z < ${base}/share/base.txt > $out/right.txt
    echo "headers" > $dev/right.h
  '' { outputs = [ "out" "dev" ]; };
  top = mk "gbc-demo-top" ''
    echo "building top"
    mkdir -p $out
    cat ${left} ${right}/right.txt ${right.dev}/right.h > $out/top.txt
  '' {};
  broken = mk "gbc-demo-broken" ''
    echo "this builder fails on purpose" >&2
    exit 1
  '' {};
  # Depends on broken, so it ends failed-dependency (scheduling tests).
  after-broken = mk "gbc-demo-after-broken" ''
    cat ${broken} > $out
  '' {};
  # Prints, sleeps, prints: for watching `log --follow` stream a build.
  slow = mk "gbc-demo-slow" ''
    echo "slow build: first line"
    sleep ${slowSleep}
    echo "slow build: last line"
    echo slow > $out
  '' {};
in { inherit base left right top broken after-broken slow; }
