# Derivations for the reproducibility check tests (e2e/checks_test.go):
# one deterministic tree, and one that writes $RANDOM into one file among
# several (with bash: dash has no $RANDOM). `n` makes that many copies of
# the deterministic one (bench/check.sh). Builders run without PATH.
{ nonce ? "0", n ? "0" }:
let
  mk = builder: name: script: derivation {
    inherit builder name nonce;
    system = builtins.currentSystem;
    args = [ "-e" "-c" script ];
  };
  same = i: mk "/bin/sh" "check-same-${i}" ''
    /bin/mkdir -p $out/bin $out/share/empty
    echo "stable $nonce ${i}" > $out/share/a.txt
    printf '#!/bin/sh\necho hi\n' > $out/bin/hi
    /bin/chmod +x $out/bin/hi
    /bin/ln -s ../share/a.txt $out/bin/link
  '';
  random = i: mk "/bin/bash" "check-random-${i}" ''
    /bin/mkdir -p $out/share
    echo "stable $nonce" > $out/share/a.txt
    printf 'line one\nrandom %s\nline three\n' "$RANDOM$RANDOM$RANDOM" > $out/share/b.txt
    echo "stable too" > $out/share/c.txt
  '';
in {
  same = same "0";
  same2 = same "2";
  same3 = same "3";
  random = random "0";
  random2 = random "2";
  many = builtins.genList (i: same "many-${toString i}") (builtins.fromJSON n);
}
