# n independent derivations that each sleep, so builds are running (and
# their results arrive) while the PostgreSQL restart test bounces the
# database. No nixpkgs: /bin/sh and the host's coreutils.
{ nonce ? "0", n ? "6", sleep ? "3" }:
builtins.listToAttrs (builtins.genList (i: {
  name = "b${toString i}";
  value = derivation {
    name = "gbc-pg-${toString i}";
    inherit nonce;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-e" "-c" "sleep ${sleep}; echo ${toString i} $nonce > $out" ];
    PATH = "/usr/bin:/bin";
  };
}) (builtins.fromJSON n))
