# Outputs with references, for checking what the coordinator accepts: base
# refers to an input source and to itself, mid to base, and top to base
# and the source, which are not its inputs but in its input closure
# (reached through mid's output).
{ nonce ? "0" }:
let
  mk = name: script: derivation {
    inherit name nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-e" "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  src = builtins.toFile "gbc-refs-src" "source ${nonce}\n";
  base = mk "gbc-refs-base" ''
    mkdir -p $out
    ln -s ${src} $out/src
    echo $out > $out/self
  '';
  mid = mk "gbc-refs-mid" ''
    echo ${base} > $out
  '';
  top = mk "gbc-refs-top" ''
    mkdir -p $out
    read b < ${mid}
    echo "$b" > $out/base-path
    ln -s "$b/src" $out/src
  '';
in { inherit base mid top; }
