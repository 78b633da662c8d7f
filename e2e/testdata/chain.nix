# A chain a ← b ← c for the cache tests: b's output refers to a's and c's
# to b's, so substituting c pulls the whole chain. No nixpkgs: /bin/sh and
# the host's coreutils (sandbox off).
{ nonce ? "0" }:
let
  mk = name: script: derivation {
    inherit name nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-e" "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  a = mk "gbc-chain-a" ''
    echo "building a"
    mkdir -p $out
    echo "a ($nonce)" > $out/a.txt
  '';
  b = mk "gbc-chain-b" ''
    echo "building b"
    mkdir -p $out
    cat ${a}/a.txt > $out/b.txt
    echo b >> $out/b.txt
    ln -s ${a} $out/a
  '';
  c = mk "gbc-chain-c" ''
    echo "building c"
    mkdir -p $out
    cat ${b}/b.txt ${b}/a/a.txt > $out/c.txt
    echo ${b} > $out/b-path
  '';
in { inherit a b c; }
