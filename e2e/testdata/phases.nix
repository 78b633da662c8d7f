# Derivations for the phases and "why is it not running" test: a quick
# one, one that holds its agent's slot until the file `release` exists,
# one queued behind it, one submitted once the agent is gone, and one for
# a system no agent builds. No nixpkgs:
# /bin/sh and the host's coreutils (the sandbox is off).
{ nonce ? "0", release ? "/nonexistent" }:
let
  mk = name: system: script: derivation {
    inherit name nonce system;
    builder = "/bin/sh";
    args = [ "-e" "-c" script ];
    PATH = "/usr/bin:/bin";
  };
in {
  quick = mk "gbc-phases-quick" builtins.currentSystem "echo quick; echo quick $nonce > $out";
  hold = mk "gbc-phases-hold" builtins.currentSystem
    "echo holding; while [ ! -e ${release} ]; do sleep 0.05; done; echo held $nonce > $out";
  behind = mk "gbc-phases-behind" builtins.currentSystem "echo behind $nonce > $out";
  later = mk "gbc-phases-later" builtins.currentSystem "echo later $nonce > $out";
  riscv = mk "gbc-phases-riscv" "riscv64-linux" "echo never > $out";
}
